"""Drawing one answer that names nothing it must not: sample, check, resample with a new seed, a bounded number of
times; and the list of what to avoid, with why.

`AvoidList`: every reason to avoid a dish feeds one list: dishes the user turned down ("다른 거"), allergies, diet,
dislikes, dishes recommended in the last days (variety), safety notes. A ban is either a guarantee (allergies: the
user never sees an answer naming the dish, whatever it costs) or soft (steering: the last sample is kept even if it
names one). Soft bans from taste and variety are lifted when the question asks for the dish by name. The list gives
the generator every catalog spelling to ban while sampling (GenerationRequest.avoid).

`IngredientGuard`: an allergy reaches past catalog dishes to the ingredient words that carry it (두부 for 대두, 치즈 for
우유; data/allergen_ingredients.csv, found by morphology in model/food/ingredients.py). A word the answer names is a
guaranteed ban like an allergen dish: watched while streaming, resampled, refused past the bound. Words of two
syllables or more are also banned while sampling; one-syllable words (게, 굴, 빵) are not, since a byte-level ban of 게
would also forbid 맛있게: they are caught by the check instead.

`AnswerDrawer`: a sample is watched while it streams: once its text names a banned catalog dish it is stopped, before
that text reaches the user, and the next sample starts (the front end's preview starts over). A complete sample is
checked again as a whole. After `max_resamples` extra samples the last one is watched for guarantees only: it may
name a soft-banned dish (steering has its limits), but if it names a guaranteed one (an allergy), `Drawn.blocked`
says so and the caller shows a polite fallback instead, never that text. At most `max_concurrent` samples run at
once across all users (MECHURI_MAX_CONCURRENT); the others wait their turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache

from bot.service.contract import DeltaCallback, DishNames, TextGenerator
from model import GenerationRequest, GenerationResult
from model.food.ingredients import AllergenIngredients

log = logging.getLogger(__name__)

Resampled = Callable[[GenerationRequest, int], Awaitable[None]]
Check = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Ban:
    dish: str  # the catalog name
    reasons: tuple[str, ...]  # "turned down", "allergy:새우", "diet:veg", "dislike:ingredient:오이", "recent"
    guarantee: bool = False
    unless_asked: bool = False  # lifted when the question names the dish


@dataclass(frozen=True)
class IngredientGuard:
    """The ingredient words a user's allergies rule out, and how to find them in a text."""

    table: AllergenIngredients
    allergens: tuple[str, ...]

    @cached_property
    def _words(self) -> tuple[str, ...]:
        return tuple(self.table.words_for(self.allergens))

    def bans(self, text: str) -> list[Ban]:
        """A guaranteed ban for each ingredient word `text` names that carries one of the allergens."""
        # Every word found is written out in the text, so a plain look first spares Kiwi most streamed deltas
        # (4 ms a window on the loaded dev box, 26 windows an answer).
        if not self.allergens or not text or not any(word in text for word in self._words):
            return []
        return [Ban(hit.word, tuple(f"allergy:{a}" for a in hit.allergens), guarantee=True)
                for hit in self.table.find(text, self.allergens)]

    def spellings(self) -> tuple[str, ...]:
        return tuple(w for w in self.table.words_for(self.allergens) if len(w) > 1)


class AvoidList:
    def __init__(self, bans: Iterable[Ban] = (), words: IngredientGuard | None = None) -> None:
        self._bans: dict[str, Ban] = {}
        self.words = words  # ingredient words guaranteed out of the answer (allergies), besides the dishes
        for ban in bans:
            self._merge(ban)

    def guard_words(self, guard: IngredientGuard) -> None:
        self.words = guard

    def add(self, dishes: Iterable[str], reason: str, *, guarantee: bool = False, unless_asked: bool = False) -> None:
        for dish in dishes:
            self._merge(Ban(dish, (reason,), guarantee, unless_asked))

    def _merge(self, ban: Ban) -> None:
        old = self._bans.get(ban.dish)
        if old is not None:  # the strongest wins: a guarantee stays one, and one reason not lifted keeps the ban
            ban = Ban(ban.dish, tuple(dict.fromkeys((*old.reasons, *ban.reasons))), old.guarantee or ban.guarantee,
                      old.unless_asked and ban.unless_asked)
        self._bans[ban.dish] = ban

    def extend(self, other: AvoidList) -> None:
        """Merge another list in (a prebuilt one, e.g. a profile's bans: copied whole when this one is empty)."""
        if not self._bans:
            self._bans = dict(other._bans)
            return
        for ban in other:
            self._merge(ban)

    def asked(self, named: Iterable[str]) -> AvoidList:
        """This list for a question that names `named`: their soft, liftable bans go; guarantees never do."""
        lifted = {d for d in named if (b := self._bans.get(d)) is not None and b.unless_asked and not b.guarantee}
        if not lifted:
            return self
        return AvoidList((b for b in self if b.dish not in lifted), self.words)

    def __iter__(self) -> Iterator[Ban]:
        return iter(self._bans.values())

    def __len__(self) -> int:
        return len(self._bans)

    def __contains__(self, dish: object) -> bool:
        return dish in self._bans

    def get(self, dish: str) -> Ban | None:
        return self._bans.get(dish)

    @property
    def dishes(self) -> frozenset[str]:
        return frozenset(self._bans)

    @property
    def guaranteed(self) -> frozenset[str]:
        return frozenset(d for d, b in self._bans.items() if b.guarantee)

    def violations(self, dishes: Sequence[str], *, guarantees_only: bool = False, text: str = "") -> list[Ban]:
        """The bans `dishes` break, and the guaranteed ingredient words `text` names."""
        found = [self._bans[d] for d in dishes if d in self._bans]
        found = [b for b in found if b.guarantee] if guarantees_only else found
        return found + (self.words.bans(text) if self.words is not None else [])

    def word_bans(self, text: str) -> list[Ban]:
        return self.words.bans(text) if self.words is not None else []

    def spellings(self, catalog: DishNames | None) -> tuple[str, ...]:
        """Every catalog spelling of every banned dish, guarantees first, for the generator to ban while sampling."""
        known = _spellings_by_name(catalog) if catalog is not None and hasattr(catalog, "dishes") else {}
        found: list[str] = []
        for guaranteed in (True, False):
            for ban in self._bans.values():
                if ban.guarantee is guaranteed:
                    found.extend(known.get(ban.dish) or (ban.dish,))
            if guaranteed and self.words is not None:
                found.extend(self.words.spellings())
        return tuple(dict.fromkeys(found))

    def reasons(self) -> dict[str, int]:
        """How many dishes each reason bans (for logs and the benchmark)."""
        counts: dict[str, int] = {}
        for ban in self:
            for reason in ban.reasons:
                counts[reason] = counts.get(reason, 0) + 1
        return counts


@lru_cache(maxsize=4)
def _spellings_by_name(catalog: DishNames) -> dict[str, tuple[str, ...]]:
    return {dish.name: dish.spellings for dish in catalog.dishes}


@dataclass(frozen=True)
class Drawn:
    text: str
    result: GenerationResult | None  # None: the last sample was stopped (it named a guaranteed dish)
    request: GenerationRequest  # the request of the last sample (its seed is the answer's)
    attempts: int
    dishes: tuple[str, ...]  # catalog dishes the text names
    blocked: tuple[Ban, ...] = ()  # guaranteed bans the last sample still broke: the user must not see it


class AnswerDrawer:
    def __init__(self, generator: TextGenerator, catalog: DishNames | None, *, max_resamples: int,
                 seed_source: Callable[[], int], max_concurrent: int | None = None) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("the generation cap must be at least 1")
        self.generator = generator
        self.catalog = catalog
        self.max_resamples = max_resamples
        self.seed_source = seed_source
        self.reach = _reach(catalog)
        self._cap = asyncio.Semaphore(max_concurrent) if max_concurrent is not None else None

    def dishes_in(self, text: str) -> tuple[str, ...]:
        return tuple(self.catalog.names_in(text)) if self.catalog is not None and text else ()

    async def draw(self, request: GenerationRequest, avoid: AvoidList, partial: Partial, on_resample: Resampled,
                   check: Check | None = None) -> Drawn:
        """`check` (text → why to sample again, or None) steers softly, like a soft ban: the last sample is kept
        whatever it says (model/fit.py's "does the answer fit what was asked")."""
        attempts = 1
        while True:
            last = attempts > self.max_resamples
            watch = avoid.guaranteed if last else avoid.dishes
            text, result = await self._stream(request, partial, watch, avoid)
            dishes = self.dishes_in(text)
            broken = avoid.violations(dishes, guarantees_only=last, text=text)
            problem = check(text) if check is not None and result is not None and not broken and not last else None
            if problem is not None:
                log.debug("sample %d %s: drawing again", attempts, problem)
            elif result is not None and not broken:
                return Drawn(text, result, request, attempts, dishes)
            if last:
                blocked = tuple(b for b in broken if b.guarantee)
                if not blocked:
                    log.warning("answer still names avoided dishes %s after %d samples; kept",
                                [b.dish for b in broken], attempts)
                return Drawn(text, result, request, attempts, dishes, blocked)
            attempts += 1
            request = replace(request, seed=self.seed_source())
            await on_resample(request, attempts)

    async def _stream(self, request: GenerationRequest, partial: Partial, watch: frozenset[str],
                      avoid: AvoidList) -> tuple[str, GenerationResult | None]:
        """Run one sample. Returns (text, result); result is None when it was stopped for naming a watched dish or
        a guaranteed ingredient word."""
        if self._cap is None:
            return await self._sample(request, partial, watch, avoid)
        async with self._cap:
            return await self._sample(request, partial, watch, avoid)

    async def _sample(self, request: GenerationRequest, partial: Partial, watch: frozenset[str],
                      avoid: AvoidList) -> tuple[str, GenerationResult | None]:
        stream = self.generator.stream(request)  # raises GeneratorBusy at once when the queue is full
        text = ""
        try:
            async for delta in stream:
                text += delta
                # Only the end can hold a new name: scan from a word start `reach` characters before the delta
                # (longer than any spelling and its particles) instead of the whole text at every delta.
                tail = text[_word_start(text, len(text) - len(delta) - self.reach):]
                if (watch and not watch.isdisjoint(self.dishes_in(tail))) or avoid.word_bans(tail):
                    await stream.aclose()
                    return text, None
                await partial.send(text)
        except BaseException:
            await stream.aclose()
            raise
        result = stream.result
        return (result.text if result is not None else text), result


@lru_cache(maxsize=4)  # per catalog: walking every spelling took 1.4 ms, once per answer
def _reach(catalog: DishNames | None) -> int:
    """How far back from a delta a dish name that it completes can start: the longest spelling, plus a word's worth
    of particles (a spaced name counts only with what follows it: "김치 찌개맛집")."""
    dishes = getattr(catalog, "dishes", None)
    longest = max((len(s) for d in dishes for s in d.spellings), default=0) if dishes else 32
    return longest + 16


def _word_start(text: str, position: int) -> int:
    """The start of the word at `position` (0 for a position before the text)."""
    if position <= 0:
        return 0
    for i in range(position, -1, -1):
        if text[i].isspace():
            return i + 1
    return 0


class Partial:
    """Forwards partial text to the front end; a failing callback is logged once and then left alone."""

    def __init__(self, callback: DeltaCallback | None) -> None:
        self.callback = callback

    async def send(self, text: str) -> None:
        if self.callback is None or not text:
            return
        try:
            await self.callback(text)
        except Exception:
            log.warning("partial-answer callback failed; streaming to this user stops", exc_info=True)
            self.callback = None
