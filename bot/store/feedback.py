"""Feedback in the database: a 👍/👎 on an answer (`turns.vote`, `turns.voted_at`, migration 0003), and the
read-only reading of every answer for the preference export (bot/feedback/export.py).

A vote lives on the turn and nowhere else, so `/forget` (Store.forget_user deletes the user's turns) takes the votes
with it, and `/reset` keeps them. The export opens its own plain sync engine, read-only: SQLite with `query_only`,
PostgreSQL in read-only transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, event, func, inspect, or_, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.store.database import Database, database_problem, mask_url, sync_url
from bot.store.schema import CONVERSATIONS, TURNS

VOTES = ("up", "down")
VOTABLE_STATUSES = ("ok", "rejected")  # what the model wrote and the user saw; a failed turn has nothing to learn
FEEDBACK_COLUMNS = ("prompt", "completion", "vote")  # added by migration 0003
Refusal = Literal["unknown", "not_votable"]


@dataclass(frozen=True)
class VoteResult:
    vote: str  # "up" | "down": what is stored now
    changed: bool  # False: that vote was already stored (a double tap); the row, voted_at too, was left as it was
    previous: str | None  # the vote before this press, as read in the same transaction
    can_retry: bool  # still the latest ok answer of an open conversation: "다른 거" stays on the keyboard


class FeedbackUnreadable(Exception):
    """The database cannot be read for the export; the message names the cause and the fix (never a password)."""


class Votes:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def vote(self, chat_id: int, user_id: int, turn_id: int, vote: str, at: datetime) -> VoteResult | Refusal:
        """Store the user's vote on their answer `turn_id`. "unknown": no such answer of this user in this chat
        (a foreign turn reads the same as a missing one); "not_votable": theirs, but not the model's own words."""
        if vote not in VOTES:
            raise ValueError(f"a vote is 'up' or 'down', not {vote!r}")
        return await self.db.run(self._vote, chat_id, user_id, turn_id, vote, at)

    def _vote(self, chat_id: int, user_id: int, turn_id: int, vote: str, at: datetime) -> VoteResult | Refusal:
        with self.db.engine.begin() as db:
            row = db.execute(
                select(TURNS.c.role, TURNS.c.status, TURNS.c.completion, TURNS.c.vote, TURNS.c.conversation_id,
                       CONVERSATIONS.c.closed_at)
                .join(CONVERSATIONS, CONVERSATIONS.c.id == TURNS.c.conversation_id)
                .where(TURNS.c.id == turn_id, CONVERSATIONS.c.chat_id == chat_id, CONVERSATIONS.c.user_id == user_id)
            ).first()
            if row is None or row.role != "assistant":
                return "unknown"
            if row.status not in VOTABLE_STATUSES or not row.completion:
                return "not_votable"
            # Compare-and-set: a second tap of the same button (or a racing twin of this one, which waits for our
            # row lock and then sees our vote) matches nothing and leaves the row, voted_at included, as it is.
            changed = db.execute(
                update(TURNS).where(TURNS.c.id == turn_id, TURNS.c.status.in_(VOTABLE_STATUSES),
                                    or_(TURNS.c.vote.is_(None), TURNS.c.vote != vote))
                .values(vote=vote, voted_at=at)
            ).rowcount == 1
            if not changed and db.execute(select(TURNS.c.vote).where(TURNS.c.id == turn_id)).scalar() != vote:
                return "unknown"  # deleted meanwhile (/forget from another chat, on a database with parallel writers)
            latest = db.execute(select(func.max(TURNS.c.id)).where(
                TURNS.c.conversation_id == row.conversation_id, TURNS.c.role == "assistant")).scalar()
        can_retry = row.status == "ok" and row.closed_at is None and latest == turn_id
        return VoteResult(vote, changed, row.vote, can_retry)


# --- the export's read-only view ----------------------------------------------------------------------------------

_TURNS = (
    select(TURNS.c.conversation_id, TURNS.c.id, TURNS.c.role, TURNS.c.status, TURNS.c.reply_to, TURNS.c.prompt,
           TURNS.c.completion, TURNS.c.vote, TURNS.c.adapter_version, TURNS.c.created_at, CONVERSATIONS.c.closed_at)
    .join(CONVERSATIONS, CONVERSATIONS.c.id == TURNS.c.conversation_id)
    .order_by(TURNS.c.conversation_id, TURNS.c.id)
)


def open_readonly(database_url: str) -> Engine:
    url = sync_url(database_url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        # A missing SQLite file would be created by connecting: that is a wrong URL, not an empty history.
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
            raise FeedbackUnreadable(f"no database at {mask_url(database_url)}: check --database-url or "
                                     f"MECHURI_DATABASE_URL")
        engine = create_engine(url)
        event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA query_only = ON"))
        return engine
    engine = create_engine(url)
    return engine.execution_options(postgresql_readonly=True) if url.startswith("postgres") else engine


def _check_schema(db: Connection, database_url: str) -> None:
    inspector = inspect(db)
    columns = {c["name"] for c in inspector.get_columns("turns")} if inspector.has_table("turns") else set()
    missing = [c for c in FEEDBACK_COLUMNS if c not in columns]
    if missing:
        raise FeedbackUnreadable(
            f"the database {mask_url(database_url)} has no feedback columns (turns.{', turns.'.join(missing)}; "
            f"added by migration 0003). Fix: run `mechuri db upgrade` with the same --database-url "
            f"(or MECHURI_DATABASE_URL), then export again"
        )


def read_feedback_turns(database_url: str) -> Sequence[Any]:
    """Every turn with what the export labels (role, status, reply_to, prompt, completion, vote, adapter version,
    created_at, the conversation's closed_at), by conversation and id. Read-only."""
    engine = open_readonly(database_url)
    try:
        with engine.connect() as db:
            _check_schema(db, database_url)
            return db.execute(_TURNS).all()
    except SQLAlchemyError as exc:
        raise FeedbackUnreadable(database_problem(database_url, exc)) from exc
    finally:
        engine.dispose()
