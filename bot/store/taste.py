"""Where taste lives in the database: each user's taste items, and the dishes recommended to them (for variety
across days). Tables beside the history store's, created by migration 0002; every method is one transaction on the
store's database thread, like the `Store` methods. `/forget` deletes both (Store.forget_user calls
`delete_taste_rows` in its transaction); `/reset` touches neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    and_,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.history import Base, Store, Turn, User, utcnow
from bot.taste.profile import TasteItem, TasteProfile


class TasteItemRow(Base):
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


_ITEMS, _RECENT, _USERS = TasteItemRow.__table__, RecommendedDish.__table__, User.__table__
_SELECT_ITEMS = select(_ITEMS.c.id, _ITEMS.c.kind, _ITEMS.c.target, _ITEMS.c.value).order_by(_ITEMS.c.id)


def delete_taste_rows(db: Any, user_id: int) -> int:
    """Delete the user's taste items and recommendation log inside the caller's transaction; rows deleted."""
    items = db.execute(delete(_ITEMS).where(_ITEMS.c.user_id == user_id))
    recent = db.execute(delete(_RECENT).where(_RECENT.c.user_id == user_id))
    return (items.rowcount or 0) + (recent.rowcount or 0)


class TasteStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def items(self, user_id: int) -> list[tuple[int, TasteItem]]:
        """The user's items with their row ids (what /taste's remove buttons carry), oldest first."""
        return await self.store._run(self._items, user_id)

    async def profile(self, user_id: int) -> TasteProfile:
        return TasteProfile(tuple(item for _, item in await self.items(user_id)))

    async def context(self, user_id: int, since: datetime | None) -> tuple[TasteProfile, frozenset[str]]:
        """The profile and the dishes recommended since `since` (None: no variety window), in one transaction."""
        return await self.store._run(self._context, user_id, since)

    async def add(self, user_id: int, items: Iterable[TasteItem], user_name: str | None = None) -> TasteProfile:
        """Remember `items` (a like replaces a dislike of the same thing and the other way round); returns the
        profile after."""
        return await self.store._run(self._add, user_id, tuple(items), user_name)

    async def remove(self, user_id: int, item_id: int) -> TasteItem | None:
        """Forget one item by its row id, only if it is this user's. Returns it, or None."""
        return await self.store._run(self._remove, user_id, item_id)

    async def toggle(self, user_id: int, item: TasteItem) -> bool:
        """Add the item, or remove it when it is there. Returns whether it is remembered now."""
        return await self.store._run(self._toggle, user_id, item)

    async def finish_answer(self, turn_id: int, user_id: int, dishes: Sequence[str], at: datetime,
                            **values: Any) -> None:
        """Store a finished ok answer and log the dishes it named, in one transaction."""
        await self.store._run(self._finish_answer, turn_id, user_id, tuple(dishes), at, values)

    # --- jobs on the database thread ----------------------------------------------------------------------------

    def _items(self, user_id: int) -> list[tuple[int, TasteItem]]:
        with self.store.engine.connect() as db:
            return self._read_items(db, user_id)

    @staticmethod
    def _read_items(db: Connection, user_id: int) -> list[tuple[int, TasteItem]]:
        rows = db.execute(_SELECT_ITEMS.where(_ITEMS.c.user_id == user_id)).all()
        found = []
        for row in rows:
            try:
                found.append((row.id, TasteItem(row.kind, row.target, row.value)))
            except ValueError:  # a row written by a newer version: skip it rather than fail the answer
                continue
        return found

    def _context(self, user_id: int, since: datetime | None) -> tuple[TasteProfile, frozenset[str]]:
        with self.store.engine.connect() as db:
            return self.read_context(db, user_id, since)

    @classmethod
    def read_context(cls, db: Connection, user_id: int, since: datetime | None) -> tuple[TasteProfile, frozenset[str]]:
        """`context` inside the caller's transaction (Store.begin_answer_with)."""
        items = cls._read_items(db, user_id)
        recent: frozenset[str] = frozenset()
        if since is not None:
            recent = frozenset(db.execute(
                select(_RECENT.c.dish).where(_RECENT.c.user_id == user_id, _RECENT.c.created_at >= since)
            ).scalars())
        return TasteProfile(tuple(item for _, item in items)), recent

    @staticmethod
    def _ensure_user(db: Connection, user_id: int, user_name: str | None) -> None:
        if db.execute(select(_USERS.c.id).where(_USERS.c.id == user_id)).first() is None:
            now = utcnow()
            db.execute(insert(_USERS), {"id": user_id, "name": user_name, "created_at": now, "last_seen_at": now})

    def _add(self, user_id: int, items: tuple[TasteItem, ...], user_name: str | None) -> TasteProfile:
        with self.store.engine.begin() as db:
            self._ensure_user(db, user_id, user_name)
            current = [item for _, item in self._read_items(db, user_id)]
            for item in TasteProfile(tuple(current)).new(items):
                if item.kind in ("like", "dislike"):
                    db.execute(delete(_ITEMS).where(
                        _ITEMS.c.user_id == user_id, _ITEMS.c.kind.in_(("like", "dislike")),
                        _ITEMS.c.target == item.target, _ITEMS.c.value == item.value))
                db.execute(insert(_ITEMS), {"user_id": user_id, "kind": item.kind, "target": item.target,
                                            "value": item.value, "created_at": utcnow()})
            return TasteProfile(tuple(item for _, item in self._read_items(db, user_id)))

    def _remove(self, user_id: int, item_id: int) -> TasteItem | None:
        with self.store.engine.begin() as db:
            row = db.execute(_SELECT_ITEMS.where(_ITEMS.c.id == item_id, _ITEMS.c.user_id == user_id)).first()
            if row is None:
                return None
            db.execute(delete(_ITEMS).where(_ITEMS.c.id == item_id))
            return TasteItem(row.kind, row.target, row.value)

    def _toggle(self, user_id: int, item: TasteItem) -> bool:
        with self.store.engine.begin() as db:
            same = and_(_ITEMS.c.user_id == user_id, _ITEMS.c.kind == item.kind, _ITEMS.c.target == item.target,
                        _ITEMS.c.value == item.value)
            if db.execute(delete(_ITEMS).where(same)).rowcount:
                return False
            self._ensure_user(db, user_id, None)
            db.execute(insert(_ITEMS), {"user_id": user_id, "kind": item.kind, "target": item.target,
                                        "value": item.value, "created_at": utcnow()})
            return True

    def _finish_answer(self, turn_id: int, user_id: int, dishes: tuple[str, ...], at: datetime,
                       values: dict[str, Any]) -> None:
        with self.store.engine.begin() as db:
            done = db.execute(update(Turn.__table__).where(Turn.__table__.c.id == turn_id),
                              {"status": "ok", "finished_at": utcnow(), **values}).rowcount
            if dishes and done:  # a turn deleted meanwhile (/forget from another chat) logs nothing
                db.execute(insert(_RECENT), [{"user_id": user_id, "turn_id": turn_id, "dish": dish, "created_at": at}
                                             for dish in dishes])

