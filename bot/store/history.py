"""The history: users, conversations and turns. Every query the conversation service runs on them lives here.

Each method is one job on the database thread (bot/store/database.py `Database`), run as a whole transaction that
commits before it returns. The schema is bot/store/schema.py; it changes only through Alembic (migrations/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bot.store.database import Database
from bot.store.schema import (
    CONVERSATIONS,
    RECOMMENDED,
    REPLICAS,
    STATUSES,
    TURNS,
    USERS,
    Conversation,
    Turn,
    User,
    utcnow,
)
from bot.store.taste import delete_taste_rows

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERRUPTED = "interrupted: the process stopped during generation"
DEFAULT_LEASE_S = 30.0  # a replica not seen for this long is gone (bot/store/replicas.py)
# The prompt keeps only what fits the model's context (2,048 tokens for Polyglot, with 256 kept for the answer): more
# turns than this never make it in, so reading them would be wasted work.
HISTORY_LIMIT = 40


class QuestionGone(Exception):
    """The question was deleted (/forget) before its answer could be stored."""


@dataclass(frozen=True)
class RecoveredTurn:
    """A pending answer whose process stopped, now marked failed: the chat to tell, and the question it answered."""

    turn_id: int
    chat_id: int
    user_id: int
    question: str | None
    created_at: datetime


@dataclass(frozen=True)
class Recommended:
    """The catalog dishes an answer named, logged for variety across days (bot/service/taste.py)."""

    user_id: int
    dishes: tuple[str, ...]
    at: datetime


# The statements of every message, built once: building and coercing a statement costs more than SQLite running it.
_TOUCH_USER = update(USERS).where(USERS.c.id == bindparam("uid")).values(last_seen_at=bindparam("now"))
_TOUCH_USER_NAMED = _TOUCH_USER.values(name=bindparam("uname"))
_OPEN_CONVERSATION = select(CONVERSATIONS.c.id).where(
    CONVERSATIONS.c.user_id == bindparam("uid"), CONVERSATIONS.c.chat_id == bindparam("cid"),
    CONVERSATIONS.c.closed_at.is_(None),
)
_INSERT_TURN = insert(TURNS).returning(TURNS.c.id, TURNS.c.created_at)
# What a prompt needs of the history, as plain rows (attribute access like a Turn, without building ORM objects).
_RECENT_HISTORY = (
    select(TURNS.c.id, TURNS.c.role, TURNS.c.text, TURNS.c.status, TURNS.c.reply_to)
    .where(TURNS.c.conversation_id == bindparam("conversation_id"))
    .order_by(TURNS.c.id.desc())
    .limit(bindparam("limit"))
)
_UPDATE_TURN = update(TURNS).where(TURNS.c.id == bindparam("turn_id"))


def recover_orphans(database: Database, replica_id: int | None, lease_s: float, *,
                    include_unowned: bool) -> list[RecoveredTurn]:
    """On any thread: mark `pending` turns whose process is gone as failed; return them. A pending turn of a replica
    still alive, or of `replica_id` (this process), is left alone. `include_unowned`: also turns no replica wrote
    (older versions, `mechuri chat`), which only a start-up can be sure are orphans."""
    now = utcnow()
    alive = select(REPLICAS.c.id).where(or_(
        REPLICAS.c.id == (replica_id or 0),
        (REPLICAS.c.stopped_at.is_(None)) & (REPLICAS.c.seen_at > now - timedelta(seconds=lease_s)),
    ))
    owner_gone = TURNS.c.replica_id.not_in(alive)
    orphan = or_(TURNS.c.replica_id.is_(None), owner_gone) if include_unowned else owner_gone
    question = TURNS.alias("question")
    with database.engine.begin() as db:
        ids = db.execute(
            update(TURNS).where(TURNS.c.status == "pending", orphan)
            .values(status="failed", error=INTERRUPTED, finished_at=now).returning(TURNS.c.id)
        ).scalars().all()
        if not ids:
            return []
        found = db.execute(
            select(TURNS.c.id, CONVERSATIONS.c.chat_id, CONVERSATIONS.c.user_id, question.c.text, TURNS.c.created_at)
            .join(CONVERSATIONS, CONVERSATIONS.c.id == TURNS.c.conversation_id)
            .outerjoin(question, question.c.id == TURNS.c.reply_to)
            .where(TURNS.c.id.in_(ids)).order_by(TURNS.c.id)
        ).all()
    return [RecoveredTurn(*row) for row in found]


class Store:
    """The history queries. `database` is a URL (the store opens and closes its own executor) or a shared
    `Database`. `replica_id`: the replica this process registered as (bot/store/replicas.py), written on every
    turn so that a pending answer is recovered only once its process is gone."""

    def __init__(self, database: Database | str, *, replica_id: int | None = None,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        self._owns_db = isinstance(database, str)
        self.db = Database(database) if isinstance(database, str) else database
        self.replica_id = replica_id
        self.lease_s = lease_s

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_db:
            await self.db.close()

    async def upgrade(self, revision: str = "head") -> None:
        await self.db.upgrade(revision)

    async def recover(self) -> int:
        """Mark turns left `pending` by a process that is gone as failed (run at start-up); how many."""
        return len(await self.recover_turns())

    async def recover_turns(self) -> list[RecoveredTurn]:
        """As `recover`, returning what was recovered."""
        recovered = await self.db.run(recover_orphans, self.db, self.replica_id, self.lease_s, include_unowned=True)
        if recovered:
            log.warning("recovered %d turn(s) left pending by a process that stopped; marked failed", len(recovered))
        return recovered

    # --- writes -------------------------------------------------------------------------------------------------

    async def add_question(self, chat_id: int, user_id: int, text: str, user_name: str | None = None) -> Turn:
        """Store a user turn in the user's open conversation (opened here if needed); committed on return."""
        return await self.db.run(self._add_question, chat_id, user_id, text, user_name)

    def _add_question(self, chat_id: int, user_id: int, text: str, user_name: str | None) -> Turn:
        for attempt in range(3):
            try:
                now = utcnow()
                with self.db.engine.begin() as db:
                    # One UPDATE for a known user (the usual case) instead of a SELECT and an UPDATE.
                    touch = _TOUCH_USER_NAMED if user_name else _TOUCH_USER
                    if not db.execute(touch, {"uid": user_id, "now": now, "uname": user_name}).rowcount:
                        db.execute(insert(USERS), {"id": user_id, "name": user_name, "created_at": now,
                                                   "last_seen_at": now})
                    conversation_id = db.execute(_OPEN_CONVERSATION, {"uid": user_id, "cid": chat_id}).scalar()
                    if conversation_id is None:
                        conversation_id = db.execute(
                            insert(CONVERSATIONS).returning(CONVERSATIONS.c.id),
                            {"user_id": user_id, "chat_id": chat_id, "opened_at": now},
                        ).scalar_one()
                    values = {"conversation_id": conversation_id, "role": "user", "text": text, "status": "ok",
                              "attempts": 1, "created_at": now, "replica_id": self.replica_id}
                    turn_id = db.execute(_INSERT_TURN, values).scalar_one()
                return Turn(id=turn_id, **values)
            except IntegrityError:
                # Another process opened the conversation (or created the user) between our read and our write.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def begin_answer(
        self, question: Turn, *, seed: int, params: dict[str, Any], adapter_name: str | None,
        adapter_version: str | None, history_limit: int = HISTORY_LIMIT, also: Callable[[Any], T] | None = None,
    ) -> tuple[Sequence[Any], Turn, T | None]:
        """In one transaction: the conversation's recent turns (id, role, text, status and reply_to, oldest first;
        none with history_limit=0), a new `pending` answer row (so a crash leaves a trace of it), and
        `also(connection)` (the user's taste is read there, bot/store/taste.py). QuestionGone when /forget deleted
        the question meanwhile."""
        return await self.db.run(self._begin_answer, question, seed, params, adapter_name, adapter_version,
                                 history_limit, also)

    def _begin_answer(self, question: Turn, seed: int, params: dict[str, Any], adapter_name: str | None,
                      adapter_version: str | None, history_limit: int,
                      also: Callable[[Any], Any] | None) -> tuple[Sequence[Any], Turn, Any]:
        values = {"conversation_id": question.conversation_id, "role": "assistant", "text": "", "status": "pending",
                  "reply_to": question.id, "seed": seed, "params": params, "adapter_name": adapter_name,
                  "adapter_version": adapter_version, "attempts": 1, "created_at": utcnow(),
                  "replica_id": self.replica_id}
        try:
            with self.db.engine.begin() as db:
                history: Sequence[Any] = []
                if history_limit:
                    rows = db.execute(_RECENT_HISTORY,
                                      {"conversation_id": question.conversation_id, "limit": history_limit})
                    history = list(reversed(rows.all()))
                turn_id = db.execute(_INSERT_TURN, values).scalar_one()
                extra = also(db) if also is not None else None
        except IntegrityError:
            # The question (or its whole conversation) was deleted meanwhile, by /forget in another chat or process.
            with self.db.engine.connect() as db:
                if db.execute(select(exists().where(TURNS.c.id == question.id))).scalar():
                    raise
            raise QuestionGone(f"question {question.id} was deleted before its answer was stored") from None
        return history, Turn(id=turn_id, **values), extra

    async def update_turn(self, turn_id: int, **values: Any) -> None:
        await self.db.run(self._update_turn, turn_id, values)

    def _update_turn(self, turn_id: int, values: dict[str, Any]) -> None:
        with self.db.autocommit.begin() as db:
            # No .values(): Core takes the SET clause from the parameters, so one statement serves every update.
            db.execute(_UPDATE_TURN, {"turn_id": turn_id, **values})

    async def finish_answer(self, turn_id: int, *, status: str, text: str = "", recommended: Recommended | None = None,
                            **values: Any) -> None:
        """Store the answer's outcome; with `recommended`, log the dishes it named in the same transaction."""
        if status not in STATUSES or status == "pending":
            raise ValueError(f"cannot finish a turn as {status!r}")
        values = {"status": status, "text": text, "finished_at": utcnow(), **values}
        if recommended is None or not recommended.dishes:
            await self.update_turn(turn_id, **values)
        else:
            await self.db.run(self._finish_recommended, turn_id, values, recommended)

    def _finish_recommended(self, turn_id: int, values: dict[str, Any], recommended: Recommended) -> None:
        with self.db.engine.begin() as db:
            if db.execute(_UPDATE_TURN, {"turn_id": turn_id, **values}).rowcount:  # deleted meanwhile: log nothing
                db.execute(insert(RECOMMENDED), [
                    {"user_id": recommended.user_id, "turn_id": turn_id, "dish": dish, "created_at": recommended.at}
                    for dish in recommended.dishes])

    async def delete_turn(self, turn_id: int) -> None:
        await self.db.run(self.db.execute_count, delete(Turn).where(Turn.id == turn_id))

    async def change_status(self, turn_id: int, old: str, new: str) -> bool:
        """Compare-and-set, so two retries of one answer cannot both win."""
        statement = update(Turn).where(Turn.id == turn_id, Turn.status == old).values(status=new)
        return await self.db.run(self.db.execute_count, statement) == 1

    async def close_conversation(self, chat_id: int, user_id: int) -> bool:
        statement = (
            update(Conversation)
            .where(Conversation.user_id == user_id, Conversation.chat_id == chat_id, Conversation.closed_at.is_(None))
            .values(closed_at=utcnow())
        )
        return await self.db.run(self.db.execute_count, statement) > 0

    async def forget_user(self, user_id: int) -> int:
        """Delete every row stored for this user, in every chat, taste included. Returns the number of rows deleted."""
        return await self.db.run(self._forget_user, user_id)

    def _forget_user(self, user_id: int) -> int:
        with self.db.sessions.begin() as session:
            conversation_ids = select(Conversation.id).where(Conversation.user_id == user_id)
            taste = delete_taste_rows(session, user_id)  # taste profile and variety log
            turns = session.execute(delete(Turn).where(Turn.conversation_id.in_(conversation_ids)))
            conversations = session.execute(delete(Conversation).where(Conversation.user_id == user_id))
            users = session.execute(delete(User).where(User.id == user_id))
        return taste + sum((r.rowcount or 0) for r in (turns, conversations, users))

    # --- reads --------------------------------------------------------------------------------------------------

    async def get_turn(self, turn_id: int) -> tuple[Turn, Conversation] | None:
        return await self.db.run(self._get_turn, turn_id)

    def _get_turn(self, turn_id: int) -> tuple[Turn, Conversation] | None:
        with self.db.sessions() as session:
            row = session.execute(
                select(Turn, Conversation).join(Conversation, Conversation.id == Turn.conversation_id)
                .where(Turn.id == turn_id)
            ).first()
        return (row[0], row[1]) if row else None

    async def open_turns(self, chat_id: int, user_id: int) -> Sequence[Turn]:
        """The turns of the user's open conversation in this chat, oldest first (none when there is none)."""
        return await self.db.run(self._open_turns, chat_id, user_id)

    def _open_turns(self, chat_id: int, user_id: int) -> Sequence[Turn]:
        with self.db.sessions() as session:
            query = (select(Turn).join(Conversation, Conversation.id == Turn.conversation_id)
                     .where(Conversation.user_id == user_id, Conversation.chat_id == chat_id,
                            Conversation.closed_at.is_(None))
                     .order_by(Turn.id))
            return list(session.scalars(query).all())

    async def conversation_turns(self, conversation_id: int) -> Sequence[Turn]:
        """The conversation's turns, oldest first."""
        return await self.db.run(self._conversation_turns, conversation_id)

    def _conversation_turns(self, conversation_id: int) -> Sequence[Turn]:
        with self.db.sessions() as session:
            query = select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.id)
            return list(session.scalars(query).all())
