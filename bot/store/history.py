"""The history store: users, conversations and turns in SQLite (or any SQLAlchemy async URL), through SQLAlchemy 2.

The schema changes only through Alembic (migrations/); `await store.upgrade()` runs it. All SQL of the bot lives here,
and for the coordination of several replicas (heartbeats, user locks) in bot/replicas.py: the conversation service
and the front ends call `Store` methods and never build queries themselves. The methods are async; each runs as one
transaction on a database thread (see `Store`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from bot.service.ordering import current_scope

# Re-exported: the engine and Alembic helpers moved to bot.database, and callers import them from here.
from bot.store.database import (  # noqa: F401
    SQLITE_BUSY_TIMEOUT_MS,
    alembic_config,
    is_postgres,
    make_engine,
    migrations_dir,
    run_downgrade,
    run_upgrade,
    sync_url,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ROLES = ("user", "assistant")
STATUSES = ("ok", "rejected", "failed", "pending")
INTERRUPTED = "interrupted: the process stopped during generation"
POSTGRES_DB_THREADS = 4
DEFAULT_LEASE_S = 30.0  # a replica not seen for this long is gone (bot/replicas.py)


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


def utcnow() -> datetime:
    # Stored as UTC. SQLite has no time zones: DateTime(timezone=True) values come back naive, but they are UTC.
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # the Telegram user id
    name: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # "The open conversation of this user in this chat" is the hot query; at most one may be open per chat+user.
        Index("ix_conversations_user_chat_open", "user_id", "chat_id", "closed_at"),
        Index(
            "uq_conversations_one_open", "user_id", "chat_id", unique=True,
            sqlite_where="closed_at IS NULL", postgresql_where="closed_at IS NULL",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant')", name="ck_turns_role"),
        CheckConstraint("status IN ('ok', 'rejected', 'failed', 'pending')", name="ck_turns_status"),
        CheckConstraint("vote IN ('up', 'down')", name="ck_turns_vote"),
        Index("ix_turns_conversation_id", "conversation_id", "id"),
        Index("ix_turns_status", "status"),  # recover() looks for leftover pending turns at startup
        Index("ix_turns_reply_to", "reply_to"),  # "is this question answered yet?" (replicas keep a user's order)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(Integer, ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="ok")
    reply_to: Mapped[int | None] = mapped_column(Integer, ForeignKey("turns.id", ondelete="SET NULL"))  # answer → question
    seed: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # sampling parameters, to reproduce the answer
    adapter_name: Mapped[str | None] = mapped_column(String(256))
    adapter_version: Mapped[str | None] = mapped_column(String(128))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    new_tokens: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=1)  # samples drawn (more than 1 after dish resampling)
    error: Mapped[str | None] = mapped_column(Text)  # why a turn failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The bot process that wrote the turn: a pending answer is recovered only once that process is gone.
    replica_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("replicas.id", ondelete="SET NULL"))
    # Feedback for preference training (migration 0003): the exact prompt the model saw, its own words (`text` may
    # add safety cautions after them), and the user's 👍/👎. A "다른 거" press is status 'rejected'.
    prompt: Mapped[str | None] = mapped_column(Text)
    completion: Mapped[str | None] = mapped_column(Text)
    vote: Mapped[str | None] = mapped_column(String(8))  # "up" | "down"
    voted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Replica(Base):
    """One bot process sharing the database (bot/replicas.py). Alive while `seen_at` is recent and not stopped."""

    __tablename__ = "replicas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UserLock(Base):
    """A user's turn lock shared by the replicas (PostgreSQL): held by one turn, renewed by its replica's heartbeat."""

    __tablename__ = "user_locks"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    token: Mapped[str] = mapped_column(String(64))
    replica_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("replicas.id", ondelete="CASCADE"))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# The prompt keeps only what fits the model's context (2,048 tokens for Polyglot, with 256 kept for the answer): more
# turns than this never make it in, so reading them would be wasted work.
HISTORY_LIMIT = 40

# The statements of every message, built once: building and coercing a statement costs more than SQLite running it.
_T, _U, _C, _R = Turn.__table__, User.__table__, Conversation.__table__, Replica.__table__
_TOUCH_USER = update(_U).where(_U.c.id == bindparam("uid")).values(last_seen_at=bindparam("now"))
_TOUCH_USER_NAMED = _TOUCH_USER.values(name=bindparam("uname"))
_OPEN_CONVERSATION = select(_C.c.id).where(
    _C.c.user_id == bindparam("uid"), _C.c.chat_id == bindparam("cid"), _C.c.closed_at.is_(None)
)
_INSERT_TURN = insert(_T).returning(_T.c.id, _T.c.created_at)
# What a prompt needs of the history, as plain rows (attribute access like a Turn, without building ORM objects).
_RECENT_HISTORY = (
    select(_T.c.id, _T.c.role, _T.c.text, _T.c.status, _T.c.reply_to)
    .where(_T.c.conversation_id == bindparam("conversation_id"))
    .order_by(_T.c.id.desc())
    .limit(bindparam("limit"))
)
_UPDATE_TURN = update(_T).where(_T.c.id == bindparam("turn_id"))


class Store:
    """Every query the bot runs. Methods commit before they return, and return detached ORM rows.

    Each method is one job on a dedicated database thread, run as a whole transaction. An async driver (aiosqlite)
    instead hops to its thread and back for every cursor call: about 20 hops a message, most of the bot's overhead
    (docs/benchmarks.md). On SQLite jobs run in order on one thread, which is also what its single writer wants; on
    PostgreSQL a few threads overlap the round trips.
    """

    def __init__(self, database_url: str, *, echo: bool = False) -> None:
        self.database_url = database_url
        self.is_postgres = is_postgres(database_url)
        self.engine = make_engine(database_url, echo=echo)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # One-statement jobs need no BEGIN/COMMIT round trips: on PostgreSQL they run in autocommit mode.
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.is_postgres \
            else self.engine
        # SQLite has one writer: one DB thread, jobs in order. A PostgreSQL server runs transactions side by side and
        # each job mostly waits on its round trips, so there a few threads overlap them (users' turns are ordered by
        # the per-user lines and locks, not by the job queue).
        self._thread = ThreadPoolExecutor(max_workers=POSTGRES_DB_THREADS if self.is_postgres else 1,
                                          thread_name_prefix="mechuri-db")
        self._closed = False
        # Set by bot.replicas.Membership when this process joins the replicas sharing the database: every turn
        # written carries the replica's id, and (on PostgreSQL) a user's turns take the shared lock in `user_locks`.
        self.replica_id: int | None = None
        self.lease_s = DEFAULT_LEASE_S
        self.user_locks: Any = None

    async def _run(self, job: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # A cancelled caller does not cancel the job: a transaction on the DB thread always runs to its end.
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(job, *args, **kwargs))

    def submit(self, job: Callable[..., T], *args: Any) -> Future[T]:
        """Queue a job without waiting for it (from sync code, e.g. a lock release in a `finally`)."""
        return self._thread.submit(job, *args)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:  # front ends close on every exit path; a second close is a no-op
            return
        self._closed = True
        await self._run(self.engine.dispose)
        self._thread.shutdown(wait=True)

    async def upgrade(self, revision: str = "head") -> None:
        await asyncio.to_thread(run_upgrade, self.database_url, revision)

    async def recover(self) -> int:
        """Mark turns left `pending` by a process that is gone as failed. Run at startup; a pending turn of a replica
        that is still alive (bot/replicas.py) is left alone."""
        return len(await self.recover_turns())

    async def recover_turns(self, *, include_unowned: bool = True) -> list[RecoveredTurn]:
        """As `recover`, returning what was recovered. `include_unowned`: also turns no replica wrote (older
        versions, `mechuri chat`), which only a start-up can be sure are orphans."""
        recovered = await self._run(self._recover, include_unowned)
        if recovered:
            log.warning("recovered %d turn(s) left pending by a process that stopped; marked failed", len(recovered))
        return recovered

    def _recover(self, include_unowned: bool) -> list[RecoveredTurn]:
        now = utcnow()
        alive = select(_R.c.id).where(or_(
            _R.c.id == (self.replica_id or 0),
            (_R.c.stopped_at.is_(None)) & (_R.c.seen_at > now - timedelta(seconds=self.lease_s)),
        ))
        owner_gone = _T.c.replica_id.not_in(alive)
        orphan = or_(_T.c.replica_id.is_(None), owner_gone) if include_unowned else owner_gone
        question = _T.alias("question")
        with self.engine.begin() as db:
            ids = db.execute(
                update(_T).where(_T.c.status == "pending", orphan)
                .values(status="failed", error=INTERRUPTED, finished_at=now).returning(_T.c.id)
            ).scalars().all()
            if not ids:
                return []
            found = db.execute(
                select(_T.c.id, _C.c.chat_id, _C.c.user_id, question.c.text, _T.c.created_at)
                .join(_C, _C.c.id == _T.c.conversation_id).outerjoin(question, question.c.id == _T.c.reply_to)
                .where(_T.c.id.in_(ids)).order_by(_T.c.id)
            ).all()
        return [RecoveredTurn(*row) for row in found]

    def _execute_count(self, statement: Any) -> int:
        with self.autocommit.begin() as db:
            return db.execute(statement).rowcount or 0

    # --- writes -------------------------------------------------------------------------------------------------

    async def add_question(self, chat_id: int, user_id: int, text: str, user_name: str | None = None) -> Turn:
        """Store a user turn in the user's open conversation (opened here if needed); committed on return."""
        question = await self._run(self._add_question, chat_id, user_id, text, user_name)
        if (scope := current_scope()) is not None:
            scope.stored()  # a webhook may now tell Telegram the message is safe with us
        return question

    def _add_question(self, chat_id: int, user_id: int, text: str, user_name: str | None) -> Turn:
        for attempt in range(3):
            try:
                now = utcnow()
                with self.engine.begin() as db:
                    # One UPDATE for a known user (the usual case) instead of a SELECT and an UPDATE.
                    touch = _TOUCH_USER_NAMED if user_name else _TOUCH_USER
                    if not db.execute(touch, {"uid": user_id, "now": now, "uname": user_name}).rowcount:
                        db.execute(insert(_U), {"id": user_id, "name": user_name, "created_at": now,
                                                "last_seen_at": now})
                    conversation_id = db.execute(_OPEN_CONVERSATION, {"uid": user_id, "cid": chat_id}).scalar()
                    if conversation_id is None:
                        conversation_id = db.execute(
                            insert(_C).returning(_C.c.id), {"user_id": user_id, "chat_id": chat_id, "opened_at": now}
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

    async def start_answer(
        self, question: Turn, *, seed: int, params: dict[str, Any], adapter_name: str | None,
        adapter_version: str | None,
    ) -> Turn:
        """Create the `pending` assistant turn before generation starts, so a crash leaves a trace of it."""
        _, turn, _ = await self._run(self._begin_answer, question, seed, params, adapter_name, adapter_version, 0)
        return turn

    async def begin_answer(
        self, question: Turn, *, seed: int, params: dict[str, Any], adapter_name: str | None,
        adapter_version: str | None, history_limit: int = HISTORY_LIMIT,
    ) -> tuple[Sequence[Any], Turn]:
        """The conversation's recent turns (id, role, text, status and reply_to, oldest first) and a new `pending`
        answer row, in one transaction."""
        history, turn, _ = await self._run(self._begin_answer, question, seed, params, adapter_name,
                                           adapter_version, history_limit)
        return history, turn

    async def begin_answer_with(
        self, question: Turn, also: Callable[[Any], T], *, seed: int, params: dict[str, Any],
        adapter_name: str | None, adapter_version: str | None, history_limit: int = HISTORY_LIMIT,
    ) -> tuple[Sequence[Any], Turn, T]:
        """begin_answer, plus `also(connection)` in the same transaction (the user's taste is read there, see
        bot/taste_store.py): one job instead of two. history_limit=0 reads no history (a retry brings its own)."""
        return await self._run(self._begin_answer, question, seed, params, adapter_name, adapter_version,
                               history_limit, also)

    def _begin_answer(self, question: Turn, seed: int, params: dict[str, Any], adapter_name: str | None,
                      adapter_version: str | None, history_limit: int,
                      also: Callable[[Any], Any] | None = None) -> tuple[Sequence[Any], Turn, Any]:
        values = {"conversation_id": question.conversation_id, "role": "assistant", "text": "", "status": "pending",
                  "reply_to": question.id, "seed": seed, "params": params, "adapter_name": adapter_name,
                  "adapter_version": adapter_version, "attempts": 1, "created_at": utcnow(),
                  "replica_id": self.replica_id}
        try:
            with self.engine.begin() as db:
                history: Sequence[Any] = []
                if history_limit:
                    rows = db.execute(_RECENT_HISTORY,
                                      {"conversation_id": question.conversation_id, "limit": history_limit})
                    history = list(reversed(rows.all()))
                turn_id = db.execute(_INSERT_TURN, values).scalar_one()
                extra = also(db) if also is not None else None
        except IntegrityError:
            # The question (or its whole conversation) was deleted meanwhile, by /forget in another chat or process.
            with self.engine.connect() as db:
                if db.execute(select(exists().where(_T.c.id == question.id))).scalar():
                    raise
            raise QuestionGone(f"question {question.id} was deleted before its answer was stored") from None
        return history, Turn(id=turn_id, **values), extra

    async def update_turn(self, turn_id: int, **values: Any) -> None:
        await self._run(self._update_turn, turn_id, values)

    def _update_turn(self, turn_id: int, values: dict[str, Any]) -> None:
        with self.autocommit.begin() as db:
            # No .values(): Core takes the SET clause from the parameters, so one statement serves every update.
            db.execute(_UPDATE_TURN, {"turn_id": turn_id, **values})

    async def finish_answer(self, turn_id: int, *, status: str, text: str = "", **values: Any) -> None:
        if status not in STATUSES or status == "pending":
            raise ValueError(f"cannot finish a turn as {status!r}")
        await self.update_turn(turn_id, status=status, text=text, finished_at=utcnow(), **values)

    async def delete_turn(self, turn_id: int) -> None:
        await self._run(self._execute_count, delete(Turn).where(Turn.id == turn_id))

    async def change_status(self, turn_id: int, old: str, new: str) -> bool:
        """Compare-and-set, so two retries of one answer cannot both win."""
        statement = update(Turn).where(Turn.id == turn_id, Turn.status == old).values(status=new)
        return await self._run(self._execute_count, statement) == 1

    async def close_conversation(self, chat_id: int, user_id: int) -> bool:
        statement = (
            update(Conversation)
            .where(Conversation.user_id == user_id, Conversation.chat_id == chat_id, Conversation.closed_at.is_(None))
            .values(closed_at=utcnow())
        )
        return await self._run(self._execute_count, statement) > 0

    async def forget_user(self, user_id: int) -> int:
        """Delete every row stored for this user, in every chat. Returns the number of rows deleted."""
        return await self._run(self._forget_user, user_id)

    def _forget_user(self, user_id: int) -> int:
        with self.sessions.begin() as session:
            conversation_ids = select(Conversation.id).where(Conversation.user_id == user_id)
            taste = _taste_store.delete_taste_rows(session, user_id)  # taste profile and variety log
            turns = session.execute(delete(Turn).where(Turn.conversation_id.in_(conversation_ids)))
            conversations = session.execute(delete(Conversation).where(Conversation.user_id == user_id))
            users = session.execute(delete(User).where(User.id == user_id))
        return taste + sum((r.rowcount or 0) for r in (turns, conversations, users))

    # --- reads --------------------------------------------------------------------------------------------------

    async def get_turn(self, turn_id: int) -> tuple[Turn, Conversation] | None:
        return await self._run(self._get_turn, turn_id)

    def _get_turn(self, turn_id: int) -> tuple[Turn, Conversation] | None:
        with self.sessions() as session:
            row = session.execute(
                select(Turn, Conversation).join(Conversation, Conversation.id == Turn.conversation_id)
                .where(Turn.id == turn_id)
            ).first()
        return (row[0], row[1]) if row else None

    async def conversation_turns(self, conversation_id: int, limit: int | None = None) -> Sequence[Turn]:
        """The conversation's turns, oldest first; with `limit`, only the newest ones."""
        return await self._run(self._conversation_turns, conversation_id, limit)

    def _conversation_turns(self, conversation_id: int, limit: int | None) -> Sequence[Turn]:
        with self.sessions() as session:
            return self._recent_turns(session, conversation_id, limit)

    @staticmethod
    def _recent_turns(session: Session, conversation_id: int, limit: int | None) -> Sequence[Turn]:
        query = select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return list(reversed(session.scalars(query).all()))

    async def open_conversation(self, chat_id: int, user_id: int) -> Conversation | None:
        return await self._run(self._scalar, select(Conversation).where(
            Conversation.user_id == user_id, Conversation.chat_id == chat_id, Conversation.closed_at.is_(None)))

    async def count_turns(self, status: str | None = None) -> int:
        query = select(func.count(Turn.id))
        if status is not None:
            query = query.where(Turn.status == status)
        return int(await self._run(self._scalar, query) or 0)

    def _scalar(self, query: Any) -> Any:
        with self.sessions() as session:
            return session.scalar(query)


# The taste tables (bot/taste_store.py) are part of this schema: loading them here keeps Base.metadata whole for
# Alembic and for forget_user. At the bottom, since that module builds on the names above.
from bot.store import taste as _taste_store  # noqa: E402
