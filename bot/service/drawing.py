"""Drawing one answer that names no banned dish: sample, check, resample with a new seed, a bounded number of times.

A sample is watched while it streams: once its text names a banned catalog dish it is stopped, before that text
reaches the user, and the next sample starts (the front end's preview starts over). A complete sample is checked
again as a whole. After `max_resamples` extra samples the last one is watched for guarantees only: it may name a
soft-banned dish (steering has its limits), but if it names a guaranteed one (an allergy), `Drawn.blocked` says so
and the caller shows a polite fallback instead, never that text.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from bot.service.avoidance import AvoidList, Ban
from model import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

DeltaCallback = Callable[[str], Awaitable[None]]
Resampled = Callable[[GenerationRequest, int], Awaitable[None]]
Check = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Drawn:
    text: str
    result: GenerationResult | None  # None: the last sample was stopped (it named a guaranteed dish)
    request: GenerationRequest  # the request of the last sample (its seed is the answer's)
    attempts: int
    dishes: tuple[str, ...]  # catalog dishes the text names
    blocked: tuple[Ban, ...] = ()  # guaranteed bans the last sample still broke: the user must not see it


class AnswerDrawer:
    def __init__(self, generator: Any, catalog: Any | None, *, max_resamples: int,
                 seed_source: Callable[[], int]) -> None:
        self.generator = generator
        self.catalog = catalog
        self.max_resamples = max_resamples
        self.seed_source = seed_source
        self.reach = _reach(catalog)

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
            text, result = await self._stream(request, partial, watch)
            dishes = self.dishes_in(text)
            broken = avoid.violations(dishes, guarantees_only=last)
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

    async def _stream(self, request: GenerationRequest, partial: Partial,
                      watch: frozenset[str]) -> tuple[str, GenerationResult | None]:
        """Run one sample. Returns (text, result); result is None when it was stopped for naming a watched dish."""
        stream = self.generator.stream(request)  # raises GeneratorBusy at once when the queue is full
        text = ""
        try:
            async for delta in stream:
                text += delta
                # Only the end can hold a new name: scan from a word start `reach` characters before the delta
                # (longer than any spelling and its particles) instead of the whole text at every delta.
                if watch and not watch.isdisjoint(self.dishes_in(text[_word_start(text, len(text) - len(delta)
                                                                                 - self.reach):])):
                    await stream.aclose()
                    return text, None
                await partial.send(text)
        except BaseException:
            await stream.aclose()
            raise
        result = stream.result
        return (result.text if result is not None else text), result


@lru_cache(maxsize=4)  # per catalog: walking every spelling took 1.4 ms, once per answer
def _reach(catalog: Any | None) -> int:
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
