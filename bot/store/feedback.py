"""Where a 👍/👎 lives in the database: `turns.vote` and `turns.voted_at` (migration 0003), on the answer itself.

A vote is one transaction on the store's database thread, like the `Store` methods. It lives on the turn and nowhere
else, so `/forget` (Store.forget_user deletes the user's turns) takes the votes with it, and `/reset` keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, or_, select, update

from bot.store.history import Conversation, Store, Turn

VOTES = ("up", "down")
VOTABLE_STATUSES = ("ok", "rejected")  # what the model wrote and the user saw; a failed turn has nothing to learn
Refusal = Literal["unknown", "not_votable"]

_T, _C = Turn.__table__, Conversation.__table__


@dataclass(frozen=True)
class VoteResult:
    vote: str  # "up" | "down": what is stored now
    changed: bool  # False: that vote was already stored (a double tap); the row, voted_at too, was left as it was
    previous: str | None  # the vote before this press, as read in the same transaction
    can_retry: bool  # still the latest ok answer of an open conversation: "다른 거" stays on the keyboard


class FeedbackStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def vote(self, chat_id: int, user_id: int, turn_id: int, vote: str, at: datetime) -> VoteResult | Refusal:
        """Store the user's vote on their answer `turn_id`. "unknown": no such answer of this user in this chat
        (a foreign turn reads the same as a missing one); "not_votable": theirs, but not the model's own words."""
        if vote not in VOTES:
            raise ValueError(f"a vote is 'up' or 'down', not {vote!r}")
        return await self.store._run(self._vote, chat_id, user_id, turn_id, vote, at)

    # --- the job on the database thread -------------------------------------------------------------------------

    def _vote(self, chat_id: int, user_id: int, turn_id: int, vote: str, at: datetime) -> VoteResult | Refusal:
        with self.store.engine.begin() as db:
            row = db.execute(
                select(_T.c.role, _T.c.status, _T.c.completion, _T.c.vote, _T.c.conversation_id, _C.c.closed_at)
                .join(_C, _C.c.id == _T.c.conversation_id)
                .where(_T.c.id == turn_id, _C.c.chat_id == chat_id, _C.c.user_id == user_id)
            ).first()
            if row is None or row.role != "assistant":
                return "unknown"
            if row.status not in VOTABLE_STATUSES or not row.completion:
                return "not_votable"
            # Compare-and-set: a second tap of the same button (or a racing twin of this one, which waits for our
            # row lock and then sees our vote) matches nothing and leaves the row, voted_at included, as it is.
            changed = db.execute(
                update(_T).where(_T.c.id == turn_id, _T.c.status.in_(VOTABLE_STATUSES),
                                 or_(_T.c.vote.is_(None), _T.c.vote != vote))
                .values(vote=vote, voted_at=at)
            ).rowcount == 1
            if not changed and db.execute(select(_T.c.vote).where(_T.c.id == turn_id)).scalar() != vote:
                return "unknown"  # deleted meanwhile (/forget from another chat, on a database with parallel writers)
            latest = db.execute(select(func.max(_T.c.id)).where(
                _T.c.conversation_id == row.conversation_id, _T.c.role == "assistant")).scalar()
        can_retry = row.status == "ok" and row.closed_at is None and latest == turn_id
        return VoteResult(vote, changed, row.vote, can_retry)
