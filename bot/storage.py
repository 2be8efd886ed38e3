"""The history store: users, conversations and turns in SQLite (or any SQLAlchemy async URL), through SQLAlchemy 2.

The schema changes only through Alembic (migrations/); `await store.upgrade()` runs it. All SQL of the bot lives here:
the conversation service and the front ends call `Store` methods and never build queries themselves. The methods are
async; each runs as one transaction on a dedicated database thread (see `Store`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
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
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

ROLES = ("user", "assistant")
STATUSES = ("ok", "rejected", "failed", "pending")
SQLITE_BUSY_TIMEOUT_MS = 10_000


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
        Index("ix_turns_conversation_id", "conversation_id", "id"),
        Index("ix_turns_status", "status"),  # recover() looks for leftover pending turns at startup
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


def migrations_dir() -> Path:
    import migrations

    # An editable install made before migrations/ had its __init__.py maps it as a namespace (no __file__).
    if migrations.__file__:
        return Path(migrations.__file__).resolve().parent
    return Path(next(iter(migrations.__path__))).resolve()


def alembic_config(database_url: str) -> Any:
    """An Alembic Config that works without alembic.ini, e.g. from an installed wheel."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def run_upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking. Alembic's async env.py calls asyncio.run, so inside a running loop call this via asyncio.to_thread."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def run_downgrade(database_url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; the busy timeout makes concurrent writers wait instead of failing
    # with "database is locked"; SQLite leaves foreign keys off unless asked. synchronous=NORMAL in WAL mode keeps
    # every commit through a process crash (kill -9); only a power cut can lose the last commits.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# The async URL names the driver Alembic's async env uses; the store runs the same database through the sync driver.
_SYNC_DRIVERS = {"+aiosqlite": "+pysqlite", "+asyncpg": "+psycopg", "+aiomysql": "+pymysql", "+asyncmy": "+pymysql"}


def sync_url(database_url: str) -> str:
    for async_driver, sync_driver in _SYNC_DRIVERS.items():
        database_url = database_url.replace(async_driver, sync_driver, 1)
    return database_url


def make_engine(database_url: str, *, echo: bool = False) -> Engine:
    is_sqlite = database_url.startswith("sqlite")
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000} if is_sqlite else {}
    # Every Store job ends its own transaction, so the pool's extra rollback on each return is wasted work.
    engine = create_engine(sync_url(database_url), echo=echo, connect_args=connect_args, pool_reset_on_return=None)
    if is_sqlite:
        event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


# The prompt keeps only what fits the model's context (2,048 tokens for Polyglot, with 256 kept for the answer): more
# turns than this never make it in, so reading them would be wasted work.
HISTORY_LIMIT = 40

# The statements of every message, built once: building and coercing a statement costs more than SQLite running it.
_T, _U, _C = Turn.__table__, User.__table__, Conversation.__table__
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
    (docs/benchmarks.md). Jobs run in order on one thread, which is also what SQLite's single writer wants.
    """

    def __init__(self, database_url: str, *, echo: bool = False) -> None:
        self.database_url = database_url
        self.engine = make_engine(database_url, echo=echo)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mechuri-db")
        self._closed = False

    async def _run(self, job: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # A cancelled caller does not cancel the job: a transaction on the DB thread always runs to its end.
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(job, *args, **kwargs))

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
        """Mark turns left `pending` by a process that died mid-generation as failed. Run once at startup."""
        count = await self._run(self._execute_count, update(Turn).where(Turn.status == "pending").values(
            status="failed", error="interrupted: the process stopped during generation", finished_at=utcnow()))
        if count:
            log.warning("recovered %d turn(s) left pending by an interrupted run; marked failed", count)
        return count

    def _execute_count(self, statement: Any) -> int:
        with self.sessions.begin() as session:
            return session.execute(statement).rowcount or 0

    # --- writes -------------------------------------------------------------------------------------------------

    async def add_question(self, chat_id: int, user_id: int, text: str, user_name: str | None = None) -> Turn:
        """Store a user turn in the user's open conversation (opened here if needed); committed on return."""
        return await self._run(self._add_question, chat_id, user_id, text, user_name)

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
                              "attempts": 1, "created_at": now}
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
        _, turn = await self._run(self._begin_answer, question, seed, params, adapter_name, adapter_version, 0)
        return turn

    async def begin_answer(
        self, question: Turn, *, seed: int, params: dict[str, Any], adapter_name: str | None,
        adapter_version: str | None, history_limit: int = HISTORY_LIMIT,
    ) -> tuple[Sequence[Any], Turn]:
        """The conversation's recent turns (id, role, text, status and reply_to, oldest first) and a new `pending`
        answer row, in one transaction."""
        return await self._run(self._begin_answer, question, seed, params, adapter_name, adapter_version,
                               history_limit)

    def _begin_answer(self, question: Turn, seed: int, params: dict[str, Any], adapter_name: str | None,
                      adapter_version: str | None, history_limit: int) -> tuple[Sequence[Any], Turn]:
        values = {"conversation_id": question.conversation_id, "role": "assistant", "text": "", "status": "pending",
                  "reply_to": question.id, "seed": seed, "params": params, "adapter_name": adapter_name,
                  "adapter_version": adapter_version, "attempts": 1, "created_at": utcnow()}
        with self.engine.begin() as db:
            history: Sequence[Any] = []
            if history_limit:
                rows = db.execute(_RECENT_HISTORY, {"conversation_id": question.conversation_id, "limit": history_limit})
                history = list(reversed(rows.all()))
            turn_id = db.execute(_INSERT_TURN, values).scalar_one()
        return history, Turn(id=turn_id, **values)

    async def update_turn(self, turn_id: int, **values: Any) -> None:
        await self._run(self._update_turn, turn_id, values)

    def _update_turn(self, turn_id: int, values: dict[str, Any]) -> None:
        with self.engine.begin() as db:
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
            turns = session.execute(delete(Turn).where(Turn.conversation_id.in_(conversation_ids)))
            conversations = session.execute(delete(Conversation).where(Conversation.user_id == user_id))
            users = session.execute(delete(User).where(User.id == user_id))
        return sum((r.rowcount or 0) for r in (turns, conversations, users))

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
