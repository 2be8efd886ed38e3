"""The history store: users, conversations and turns in SQLite (or any SQLAlchemy async URL), through SQLAlchemy 2.

The schema changes only through Alembic (migrations/); `await store.upgrade()` runs it. All SQL of the bot lives here:
the conversation service and the front ends call `Store` methods and never build queries themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

log = logging.getLogger(__name__)

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
    # every commit through a process crash (kill -9); only a power cut can lose the last commits. It halves the cost
    # of the three commits each message makes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(database_url: str, *, echo: bool = False) -> AsyncEngine:
    is_sqlite = database_url.startswith("sqlite")
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000} if is_sqlite else {}
    # Every Store method ends its transaction itself (commit, or rollback on error), so the pool's extra rollback on
    # each return is a wasted round trip to aiosqlite's thread.
    engine = create_async_engine(database_url, echo=echo, connect_args=connect_args, pool_reset_on_return=None)
    if is_sqlite:
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


# The prompt keeps only what fits the model's context; reading more turns than this would be wasted work.
HISTORY_LIMIT = 64


class Store:
    """Every query the bot runs. Methods commit before they return, and return detached ORM rows."""

    def __init__(self, database_url: str, *, echo: bool = False) -> None:
        self.database_url = database_url
        self.engine = make_engine(database_url, echo=echo)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.engine.dispose()

    async def upgrade(self, revision: str = "head") -> None:
        await asyncio.to_thread(run_upgrade, self.database_url, revision)

    async def recover(self) -> int:
        """Mark turns left `pending` by a process that died mid-generation as failed. Run once at startup."""
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Turn)
                .where(Turn.status == "pending")
                .values(status="failed", error="interrupted: the process stopped during generation",
                        finished_at=utcnow())
            )
        count = result.rowcount or 0
        if count:
            log.warning("recovered %d turn(s) left pending by an interrupted run; marked failed", count)
        return count

    # --- writes -------------------------------------------------------------------------------------------------

    async def add_question(self, chat_id: int, user_id: int, text: str, user_name: str | None = None) -> Turn:
        """Store a user turn in the user's open conversation (opened here if needed); committed on return."""
        for attempt in range(3):
            try:
                async with self.sessions.begin() as session:
                    # One UPDATE for a known user (the usual case) instead of a SELECT and an UPDATE.
                    seen = {"last_seen_at": utcnow(), **({"name": user_name} if user_name else {})}
                    updated = await session.execute(update(User).where(User.id == user_id).values(**seen))
                    if not updated.rowcount:
                        session.add(User(id=user_id, name=user_name))
                    conversation_id = await self._open_conversation_id(session, chat_id, user_id)
                    turn = Turn(conversation_id=conversation_id, role="user", text=text, status="ok")
                    session.add(turn)
                return turn
            except IntegrityError:
                # Another process opened the conversation (or created the user) between our read and our write.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _open_conversation_id(self, session: Any, chat_id: int, user_id: int) -> int:
        found = await session.scalar(
            select(Conversation.id).where(
                Conversation.user_id == user_id, Conversation.chat_id == chat_id, Conversation.closed_at.is_(None)
            )
        )
        if found is not None:
            return int(found)
        conversation = Conversation(user_id=user_id, chat_id=chat_id)
        session.add(conversation)
        await session.flush()
        return conversation.id

    async def start_answer(
        self, question: Turn, *, seed: int, params: dict[str, Any], adapter_name: str | None,
        adapter_version: str | None,
    ) -> Turn:
        """Create the `pending` assistant turn before generation starts, so a crash leaves a trace of it."""
        async with self.sessions.begin() as session:
            turn = Turn(
                conversation_id=question.conversation_id, role="assistant", text="", status="pending",
                reply_to=question.id, seed=seed, params=params, adapter_name=adapter_name,
                adapter_version=adapter_version,
            )
            session.add(turn)
        return turn

    async def begin_answer(
        self, question: Turn, *, seed: int, params: dict[str, Any], adapter_name: str | None,
        adapter_version: str | None, history_limit: int = HISTORY_LIMIT,
    ) -> tuple[Sequence[Turn], Turn]:
        """The conversation's recent turns and a new `pending` answer row, in one transaction (one round trip less
        per message than reading and inserting apart)."""
        async with self.sessions.begin() as session:
            history = await self._recent_turns(session, question.conversation_id, history_limit)
            turn = Turn(
                conversation_id=question.conversation_id, role="assistant", text="", status="pending",
                reply_to=question.id, seed=seed, params=params, adapter_name=adapter_name,
                adapter_version=adapter_version,
            )
            session.add(turn)
        return history, turn

    async def update_turn(self, turn_id: int, **values: Any) -> None:
        async with self.sessions.begin() as session:
            await session.execute(update(Turn).where(Turn.id == turn_id).values(**values))

    async def finish_answer(self, turn_id: int, *, status: str, text: str = "", **values: Any) -> None:
        if status not in STATUSES or status == "pending":
            raise ValueError(f"cannot finish a turn as {status!r}")
        await self.update_turn(turn_id, status=status, text=text, finished_at=utcnow(), **values)

    async def delete_turn(self, turn_id: int) -> None:
        async with self.sessions.begin() as session:
            await session.execute(delete(Turn).where(Turn.id == turn_id))

    async def change_status(self, turn_id: int, old: str, new: str) -> bool:
        """Compare-and-set, so two retries of one answer cannot both win."""
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Turn).where(Turn.id == turn_id, Turn.status == old).values(status=new)
            )
        return (result.rowcount or 0) == 1

    async def close_conversation(self, chat_id: int, user_id: int) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Conversation)
                .where(Conversation.user_id == user_id, Conversation.chat_id == chat_id,
                       Conversation.closed_at.is_(None))
                .values(closed_at=utcnow())
            )
        return (result.rowcount or 0) > 0

    async def forget_user(self, user_id: int) -> int:
        """Delete every row stored for this user, in every chat. Returns the number of rows deleted."""
        async with self.sessions.begin() as session:
            conversation_ids = select(Conversation.id).where(Conversation.user_id == user_id)
            turns = await session.execute(delete(Turn).where(Turn.conversation_id.in_(conversation_ids)))
            conversations = await session.execute(delete(Conversation).where(Conversation.user_id == user_id))
            users = await session.execute(delete(User).where(User.id == user_id))
        return sum((r.rowcount or 0) for r in (turns, conversations, users))

    # --- reads --------------------------------------------------------------------------------------------------

    async def get_turn(self, turn_id: int) -> tuple[Turn, Conversation] | None:
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(Turn, Conversation)
                    .join(Conversation, Conversation.id == Turn.conversation_id)
                    .where(Turn.id == turn_id)
                )
            ).first()
        return (row[0], row[1]) if row else None

    async def conversation_turns(self, conversation_id: int, limit: int | None = None) -> Sequence[Turn]:
        """The conversation's turns, oldest first; with `limit`, only the newest ones."""
        async with self.sessions() as session:
            return await self._recent_turns(session, conversation_id, limit)

    @staticmethod
    async def _recent_turns(session: Any, conversation_id: int, limit: int | None) -> Sequence[Turn]:
        query = select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return list(reversed((await session.scalars(query)).all()))

    async def open_conversation(self, chat_id: int, user_id: int) -> Conversation | None:
        async with self.sessions() as session:
            return await session.scalar(
                select(Conversation).where(
                    Conversation.user_id == user_id, Conversation.chat_id == chat_id,
                    Conversation.closed_at.is_(None),
                )
            )

    async def count_turns(self, status: str | None = None) -> int:
        async with self.sessions() as session:
            query = select(func.count(Turn.id))
            if status is not None:
                query = query.where(Turn.status == status)
            return int(await session.scalar(query) or 0)
