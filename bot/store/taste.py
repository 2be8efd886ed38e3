"""Where taste lives in the database: each user's taste items, and the dishes recommended to them (for variety across
days). Every method is one transaction on the database thread, like the history's. `/forget` deletes both
(Store.forget_user calls `delete_taste_rows` in its transaction); `/reset` touches neither. The dishes an answer names
are logged with the answer itself (Store.finish_answer with `recommended`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from bot.store.database import Database
from bot.store.schema import RECOMMENDED, TASTE_ITEMS, TASTE_QUESTIONS, TURNS, USERS, utcnow
from bot.taste.profile import TasteItem, TasteProfile

_SELECT_ITEMS = select(TASTE_ITEMS.c.id, TASTE_ITEMS.c.kind, TASTE_ITEMS.c.target,
                       TASTE_ITEMS.c.value).order_by(TASTE_ITEMS.c.id)


def delete_taste_rows(db: Any, user_id: int) -> int:
    """Delete the user's taste items and recommendation log inside the caller's transaction; rows deleted."""
    items = db.execute(delete(TASTE_ITEMS).where(TASTE_ITEMS.c.user_id == user_id))
    recent = db.execute(delete(RECOMMENDED).where(RECOMMENDED.c.user_id == user_id))
    asked = db.execute(delete(TASTE_QUESTIONS).where(TASTE_QUESTIONS.c.user_id == user_id))
    return (items.rowcount or 0) + (recent.rowcount or 0) + (asked.rowcount or 0)


def read_context(db: Connection, user_id: int, since: datetime | None) -> tuple[TasteProfile, frozenset[str]]:
    """Inside the caller's transaction: the user's profile and the dishes recommended to them since `since` (None:
    no variety window). The service reads it in the transaction that starts an answer (Store.begin_answer)."""
    items = _read_items(db, user_id)
    recent: frozenset[str] = frozenset()
    if since is not None:
        recent = frozenset(db.execute(
            select(RECOMMENDED.c.dish).where(RECOMMENDED.c.user_id == user_id, RECOMMENDED.c.created_at >= since)
        ).scalars())
    return TasteProfile(tuple(item for _, item in items)), recent


def _read_items(db: Connection, user_id: int) -> list[tuple[int, TasteItem]]:
    found = []
    for row in db.execute(_SELECT_ITEMS.where(TASTE_ITEMS.c.user_id == user_id)).all():
        try:
            found.append((row.id, TasteItem(row.kind, row.target, row.value)))
        except ValueError:  # a row written by a newer version: skip it rather than fail the answer
            continue
    return found


def _ensure_user(db: Connection, user_id: int, user_name: str | None) -> None:
    if db.execute(select(USERS.c.id).where(USERS.c.id == user_id)).first() is None:
        now = utcnow()
        db.execute(insert(USERS), {"id": user_id, "name": user_name, "created_at": now, "last_seen_at": now})


def _same(user_id: int, item: TasteItem) -> Any:
    return and_(TASTE_ITEMS.c.user_id == user_id, TASTE_ITEMS.c.kind == item.kind,
                TASTE_ITEMS.c.target == item.target, TASTE_ITEMS.c.value == item.value)


def _insert(db: Connection, user_id: int, item: TasteItem) -> None:
    db.execute(insert(TASTE_ITEMS), {"user_id": user_id, "kind": item.kind, "target": item.target,
                                     "value": item.value, "created_at": utcnow()})


class TasteStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def items(self, user_id: int) -> list[tuple[int, TasteItem]]:
        """The user's items with their row ids (what /taste's remove buttons carry), oldest first."""
        return await self.db.run(self._items, user_id)

    async def profile(self, user_id: int) -> TasteProfile:
        return TasteProfile(tuple(item for _, item in await self.items(user_id)))

    async def context(self, user_id: int, since: datetime | None) -> tuple[TasteProfile, frozenset[str]]:
        """The profile and the dishes recommended since `since` (None: no variety window), in one transaction."""
        return await self.db.run(self._context, user_id, since)

    async def add(self, user_id: int, items: Iterable[TasteItem], user_name: str | None = None) -> TasteProfile:
        """Remember `items` (a like replaces a dislike of the same thing and the other way round); returns the
        profile after."""
        return await self.db.run(self._add, user_id, tuple(items), user_name)

    async def remove(self, user_id: int, item_id: int) -> TasteItem | None:
        """Forget one item by its row id, only if it is this user's. Returns it, or None."""
        return await self.db.run(self._remove, user_id, item_id)

    async def toggle(self, user_id: int, item: TasteItem) -> bool:
        """Add the item, or remove it when it is there. Returns whether it is remembered now."""
        return await self.db.run(self._toggle, user_id, item)

    async def turned_down(self, user_id: int) -> tuple[list[tuple[str, ...]], set[tuple[str, str]]]:
        """The catalog dishes of each answer the user turned down ("다른 거" or 👎), and what they were asked about."""
        return await self.db.run(self._turned_down, user_id)

    async def ask_once(self, user_id: int, target: str, value: str) -> int | None:
        """Record that the user is asked about (target, value); its id, or None when they were asked before."""
        return await self.db.run(self._ask_once, user_id, target, value)

    async def answer_question(self, user_id: int, question_id: int, yes: bool) -> tuple[str, str] | None:
        """Keep the user's answer to an unanswered question of theirs: its (target, value), or None (not theirs,
        not there, or answered already)."""
        return await self.db.run(self._answer_question, user_id, question_id, yes)

    # --- jobs on the database thread ----------------------------------------------------------------------------

    def _turned_down(self, user_id: int) -> tuple[list[tuple[str, ...]], set[tuple[str, str]]]:
        with self.db.engine.connect() as db:
            rows = db.execute(
                select(RECOMMENDED.c.turn_id, RECOMMENDED.c.dish).join(TURNS, TURNS.c.id == RECOMMENDED.c.turn_id)
                .where(RECOMMENDED.c.user_id == user_id, or_(TURNS.c.status == "rejected", TURNS.c.vote == "down"))
                .order_by(RECOMMENDED.c.turn_id)).all()
            asked = db.execute(select(TASTE_QUESTIONS.c.target, TASTE_QUESTIONS.c.value)
                               .where(TASTE_QUESTIONS.c.user_id == user_id)).all()
        by_turn: dict[int, list[str]] = {}
        for row in rows:
            by_turn.setdefault(row.turn_id, []).append(row.dish)
        return [tuple(dishes) for dishes in by_turn.values()], {(a.target, a.value) for a in asked}

    def _ask_once(self, user_id: int, target: str, value: str) -> int | None:
        with self.db.engine.begin() as db:
            same = (TASTE_QUESTIONS.c.user_id == user_id, TASTE_QUESTIONS.c.target == target,
                    TASTE_QUESTIONS.c.value == value)
            if db.execute(select(TASTE_QUESTIONS.c.id).where(*same)).first() is not None:
                return None
            _ensure_user(db, user_id, None)
            return db.execute(insert(TASTE_QUESTIONS).returning(TASTE_QUESTIONS.c.id),
                              {"user_id": user_id, "target": target, "value": value,
                               "created_at": utcnow()}).scalar_one()

    def _answer_question(self, user_id: int, question_id: int, yes: bool) -> tuple[str, str] | None:
        with self.db.engine.begin() as db:
            row = db.execute(select(TASTE_QUESTIONS.c.target, TASTE_QUESTIONS.c.value).where(
                TASTE_QUESTIONS.c.id == question_id, TASTE_QUESTIONS.c.user_id == user_id,
                TASTE_QUESTIONS.c.answer.is_(None))).first()
            if row is None:
                return None
            db.execute(update(TASTE_QUESTIONS).where(TASTE_QUESTIONS.c.id == question_id)
                       .values(answer="yes" if yes else "no", answered_at=utcnow()))
            return row.target, row.value

    def _items(self, user_id: int) -> list[tuple[int, TasteItem]]:
        with self.db.engine.connect() as db:
            return _read_items(db, user_id)

    def _context(self, user_id: int, since: datetime | None) -> tuple[TasteProfile, frozenset[str]]:
        with self.db.engine.connect() as db:
            return read_context(db, user_id, since)

    def _add(self, user_id: int, items: tuple[TasteItem, ...], user_name: str | None) -> TasteProfile:
        with self.db.engine.begin() as db:
            _ensure_user(db, user_id, user_name)
            current = TasteProfile(tuple(item for _, item in _read_items(db, user_id)))
            for item in current.new(items):
                if item.kind in ("like", "dislike"):
                    db.execute(delete(TASTE_ITEMS).where(
                        TASTE_ITEMS.c.user_id == user_id, TASTE_ITEMS.c.kind.in_(("like", "dislike")),
                        TASTE_ITEMS.c.target == item.target, TASTE_ITEMS.c.value == item.value))
                _insert(db, user_id, item)
            return TasteProfile(tuple(item for _, item in _read_items(db, user_id)))

    def _remove(self, user_id: int, item_id: int) -> TasteItem | None:
        with self.db.engine.begin() as db:
            row = db.execute(_SELECT_ITEMS.where(TASTE_ITEMS.c.id == item_id,
                                                 TASTE_ITEMS.c.user_id == user_id)).first()
            if row is None:
                return None
            db.execute(delete(TASTE_ITEMS).where(TASTE_ITEMS.c.id == item_id))
            return TasteItem(row.kind, row.target, row.value)

    def _toggle(self, user_id: int, item: TasteItem) -> bool:
        with self.db.engine.begin() as db:
            if db.execute(delete(TASTE_ITEMS).where(_same(user_id, item))).rowcount:
                return False
            _ensure_user(db, user_id, None)
            _insert(db, user_id, item)
            return True
