"""What an answer must not name, and why: one list that every reason to avoid a dish feeds.

Each source adds catalog dishes with a reason: dishes the user turned down ("다른 거"), allergies, diet, dislikes,
dishes recommended in the last days (variety), and any later check. A ban is either a guarantee (allergies: the user
never sees an answer naming the dish, whatever it costs) or soft (steering: the last sample is kept even if it names
one). Soft bans from taste and variety are lifted when the question asks for the dish by name. The list gives the
generator every catalog spelling to ban while sampling (GenerationRequest.avoid), and bot/answering.py checks each
sample against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Ban:
    dish: str  # the catalog name
    reasons: tuple[str, ...]  # "turned down", "allergy:새우", "diet:veg", "dislike:ingredient:오이", "recent"
    guarantee: bool = False
    unless_asked: bool = False  # lifted when the question names the dish


class AvoidList:
    def __init__(self, bans: Iterable[Ban] = ()) -> None:
        self._bans: dict[str, Ban] = {}
        for ban in bans:
            self._merge(ban)

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
        return AvoidList(b for b in self if b.dish not in lifted)

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

    def violations(self, dishes: Sequence[str], *, guarantees_only: bool = False) -> list[Ban]:
        found = [self._bans[d] for d in dishes if d in self._bans]
        return [b for b in found if b.guarantee] if guarantees_only else found

    def spellings(self, catalog: Any) -> tuple[str, ...]:
        """Every catalog spelling of every banned dish, guarantees first, for the generator to ban while sampling."""
        known = _spellings_by_name(catalog) if catalog is not None and hasattr(catalog, "dishes") else {}
        found: list[str] = []
        for guaranteed in (True, False):
            for ban in self._bans.values():
                if ban.guarantee is guaranteed:
                    found.extend(known.get(ban.dish) or (ban.dish,))
        return tuple(dict.fromkeys(found))

    def reasons(self) -> dict[str, int]:
        """How many dishes each reason bans (for logs and the benchmark)."""
        counts: dict[str, int] = {}
        for ban in self:
            for reason in ban.reasons:
                counts[reason] = counts.get(reason, 0) + 1
        return counts


@lru_cache(maxsize=4)
def _spellings_by_name(catalog: Any) -> dict[str, tuple[str, ...]]:
    return {dish.name: dish.spellings for dish in catalog.dishes}
