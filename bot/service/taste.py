"""Taste for the conversation service and the front ends: reading statements, the stored profile, what a profile
and the recent days ban, and the /taste edits. Front ends call `service.taste` (this desk) for /taste; answering goes
through the service, which asks the desk what to avoid.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from bot.service.drawing import AvoidList
from bot.store.database import Database
from bot.store.schema import utcnow
from bot.store.taste import TasteStore, read_context
from bot.taste.learning import LEARN_AFTER, NO_TEXT, Learned, TurnDownLearner
from bot.taste.parse import Statement, TasteReader
from bot.taste.profile import ALLERGEN_ORDER, DIETS, TasteItem, TasteProfile, TasteRules, allergy, diet
from model import DishCatalog

log = logging.getLogger(__name__)

MAX_STATEMENT_CHARS = 4096  # Telegram's longest message; the terminal may send more


class TasteDesk:
    def __init__(self, database: Database, catalog: DishCatalog, *, variety_days: float = 7.0,
                 clock: Callable[[], datetime] = utcnow, learn_after: int = LEARN_AFTER) -> None:
        self.store = TasteStore(database)
        self.catalog = catalog
        self.variety_days = variety_days
        self.clock = clock  # the benchmark's simulated week replaces it
        self.learn_after = learn_after  # 0: never ask about what the user turns down
        self._learner: TurnDownLearner | None = None
        self._rules = TasteRules(catalog)  # without the ingredient index until the reader is loaded
        self._reader: TasteReader | None = None
        self._loading: asyncio.Future[TasteReader] | None = None
        self._kiwi_lock = threading.Lock()
        self._bans: dict[TasteProfile, AvoidList] = {}  # what each profile rules out, built once per profile

    # --- reading statements ---------------------------------------------------------------------------------------

    async def reader(self) -> TasteReader:
        """The statement reader, started once (Kiwi takes seconds) on a worker thread, never on the event loop."""
        if self._reader is not None:
            return self._reader
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(TasteReader.load, self.catalog))
        try:
            self._reader = await asyncio.shield(self._loading)
        except Exception:
            self._loading = None  # let a later message try again
            raise
        return self._reader

    def preload(self) -> asyncio.Future[TasteReader]:
        """Start loading the reader in the background (front ends call this at start-up)."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(TasteReader.load, self.catalog))
            # A failure is logged (and retried) when a message needs the reader; nobody may be waiting now.
            self._loading.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self._loading

    async def read(self, text: str) -> Statement | None:
        """The statement in a message (its first MAX_STATEMENT_CHARS characters, a Telegram message's most), read
        on a worker thread: about 22 ms per 1,000 characters, too long to hold the event loop."""
        text = text[:MAX_STATEMENT_CHARS]
        if not TasteReader.might_state(text):
            return None
        try:
            reader = await self.reader()
            return await asyncio.to_thread(self._read_locked, reader, text)
        except Exception:  # never lose a message over it: it is answered as a question
            log.exception("reading a taste statement failed; the message is answered as a question")
            return None

    def _read_locked(self, reader: TasteReader, text: str) -> Statement | None:
        with self._kiwi_lock:  # one analysis at a time: Kiwi is shared by the process
            return reader.read(text)

    @staticmethod
    def cut(text: str) -> bool:
        """Was part of a statement left unread ("say plainly that nothing was saved")?"""
        return len(text) > MAX_STATEMENT_CHARS and TasteReader.might_state(text[MAX_STATEMENT_CHARS:])

    # --- what a profile bans -----------------------------------------------------------------------------------

    def since(self) -> datetime | None:
        """The start of the variety window (None: variety is off)."""
        return self.clock() - timedelta(days=self.variety_days) if self.variety_days > 0 else None

    async def context(self, user_id: int) -> tuple[TasteProfile, frozenset[str]]:
        """The user's profile and the dishes recommended to them within the variety window."""
        return await self.store.context(user_id, self.since())

    def context_reader(self, user_id: int) -> Callable[[Any], tuple[TasteProfile, frozenset[str]]]:
        """`context` as a read to run inside the transaction that starts an answer."""
        since = self.since()
        return lambda db: read_context(db, user_id, since)

    async def feed(self, avoid: AvoidList, profile: TasteProfile, recent: Iterable[str]) -> None:
        """Add what the profile and the recent days rule out: allergies as guarantees; diet, dislikes and recent
        dishes softly, lifted when the question asks for the dish by name."""
        bans = self._bans.get(profile)
        if bans is None:
            rules = self._rules
            if any(item.target == "ingredient" for item in profile.items):
                try:
                    rules = (await self.reader()).rules
                except Exception:
                    log.exception("no ingredient index: ingredient dislikes steer by the prompt only")
            bans = AvoidList()
            for conflict in rules.conflicts(profile):
                bans.add((conflict.dish,), conflict.reason, guarantee=conflict.guarantee,
                         unless_asked=not conflict.guarantee)
            if rules is not self._rules or not any(i.target == "ingredient" for i in profile.items):
                if len(self._bans) >= 256:  # a profile's bans are the same in every answer: keep the recent ones
                    self._bans.pop(next(iter(self._bans)))
                self._bans[profile] = bans
        avoid.extend(bans)
        avoid.add(recent, "recent", unless_asked=True)

    # --- learning from turn-downs ------------------------------------------------------------------------------

    async def learn(self, user_id: int) -> tuple[int, Learned] | None:
        """A dislike to ask the user about, once, learned from the answers they turned down; (question id, it)."""
        if self.learn_after <= 0:
            return None
        turned_down, asked = await self.store.turned_down(user_id)
        if len(turned_down) < self.learn_after:
            return None
        if self._learner is None:
            ingredients = (await self.reader()).rules.ingredients
            self._learner = TurnDownLearner(self.catalog, ingredients, after=self.learn_after)
        learned = self._learner.propose(turned_down, await self.store.profile(user_id), asked)
        if learned is None:
            return None
        question_id = await self.store.ask_once(user_id, learned.item.target, learned.item.value)
        return (question_id, learned) if question_id is not None else None

    async def settle_learned(self, user_id: int, question_id: int, accept: bool) -> str | None:
        """The user's 예/아니요 to a learned question: a yes remembers the dislike. None: not theirs or answered."""
        about = await self.store.answer_question(user_id, question_id, accept)
        if about is None:
            return None
        if not accept:
            return NO_TEXT
        item = TasteItem("dislike", *about)
        await self.remember(user_id, [item])
        return Learned(item, 0).yes_text

    # --- /taste edits ------------------------------------------------------------------------------------------

    async def toggle_allergy(self, user_id: int, index: int) -> bool | None:
        """Switch one allergen (by its place in ALLERGEN_ORDER); None for an index that names none."""
        if not 0 <= index < len(ALLERGEN_ORDER):
            return None
        return await self.store.toggle(user_id, allergy(ALLERGEN_ORDER[index]))

    async def toggle_diet(self, user_id: int, code: str) -> bool | None:
        if code not in DIETS:
            return None
        return await self.store.toggle(user_id, diet(code))

    async def remove(self, user_id: int, item_id: int) -> TasteItem | None:
        return await self.store.remove(user_id, item_id)

    async def remember(self, user_id: int, items: Iterable[TasteItem], user_name: str | None = None) -> TasteProfile:
        return await self.store.add(user_id, items, user_name)
