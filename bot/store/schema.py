"""Every table of the bot's database, in one place: users, conversations, turns, taste items, recommended dishes,
replicas and user locks.

The schema changes only through Alembic (migrations/, whose env.py reads `Base.metadata` from here): an autogenerate
run against a migrated SQLite or PostgreSQL database finds nothing to change (tests/test_storage.py checks it).
"""

from __future__ import annotations

from datetime import UTC, datetime
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
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("user", "assistant")
STATUSES = ("ok", "rejected", "failed", "pending")


def utcnow() -> datetime:
    # Stored as UTC. SQLite has no time zones: DateTime(timezone=True) values come back naive, but they are UTC.
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    # Whose: a Telegram user id (always positive), 0 for the terminal's local user, or a web browser's id (negative,
    # bot/store/users.py `web_user_id`): the ranges never meet, so one table keys every front end's users.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
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
        Index("ix_turns_status", "status"),  # recovery looks for leftover pending turns at startup
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


class TasteItemRow(Base):
    """One remembered taste fact of a user (bot/taste/profile.py `TasteItem`), created by migration 0002."""

    __tablename__ = "taste_items"
    __table_args__ = (
        CheckConstraint("kind IN ('allergy', 'diet', 'dislike', 'like')", name="ck_taste_items_kind"),
        UniqueConstraint("user_id", "kind", "target", "value", name="uq_taste_items_item"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RecommendedDish(Base):
    """A catalog dish named in an answer to this user (kept or later turned down): what variety avoids."""

    __tablename__ = "recommended_dishes"
    __table_args__ = (Index("ix_recommended_dishes_user_time", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    turn_id: Mapped[int] = mapped_column(Integer, ForeignKey("turns.id", ondelete="CASCADE"))
    dish: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TasteQuestionRow(Base):
    """A taste the bot asked a user about once, learned from what they turned down ("국물 요리는 별로세요?"), and
    their answer: 'yes' (a dislike was remembered), 'no', or NULL (not answered). Never asked twice. Migration 0005."""

    __tablename__ = "taste_questions"
    __table_args__ = (
        CheckConstraint("answer IN ('yes', 'no')", name="ck_taste_questions_answer"),
        UniqueConstraint("user_id", "target", "value", name="uq_taste_questions_item"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(64))
    answer: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Replica(Base):
    """One bot process sharing the database (bot/store/replicas.py). Alive while `seen_at` is recent and not
    stopped."""

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


TURNS, USERS, CONVERSATIONS = Turn.__table__, User.__table__, Conversation.__table__
TASTE_ITEMS, RECOMMENDED = TasteItemRow.__table__, RecommendedDish.__table__
TASTE_QUESTIONS = TasteQuestionRow.__table__
REPLICAS, USER_LOCKS = Replica.__table__, UserLock.__table__
