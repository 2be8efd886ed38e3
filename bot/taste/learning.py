"""Learning a dislike from what a user turns down (issue 23, part 4): when the dishes of their "다른 거" and 👎 share
a tag or an ingredient word often enough, the bot asks once: "국물 요리는 별로세요? 앞으로 덜 추천할까요?". Nothing is
remembered without a yes; a no is kept so it never asks again (bot/store/taste.py, table taste_questions).

Pure: it reads the turned-down answers' catalog dishes and returns at most one thing to ask about.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.korean import with_particle
from bot.taste.profile import TasteItem, TasteProfile
from model.food.dishes import DishCatalog

LEARN_AFTER = 3  # turned-down answers sharing one thing before the bot asks
LEARN_SHARE = 0.5  # … and at least this share of all the user's turn-downs,
LEARN_LIFT = 0.3  # … and this much above its share of the catalog: 따뜻한 is most dishes, so it says little
# Tags that say something about taste; meal times, occasions and places (점심, 모임, 배달) do not.
TASTE_TAGS = frozenset({"매운", "국물", "면", "밥", "고기", "해산물", "차가운", "따뜻한", "디저트", "음료"})


@dataclass(frozen=True)
class Learned:
    item: TasteItem  # the dislike a yes remembers
    count: int  # turned-down answers that share it

    @property
    def question(self) -> str:
        return f"{with_particle(self.item.label, '은')} 별로세요? 앞으로 덜 추천할까요?"

    @property
    def yes_text(self) -> str:
        return f"알겠어요, 앞으로 {with_particle(self.item.label, '은')} 덜 추천할게요. /taste 에서 언제든 지울 수 있어요."


NO_TEXT = "알겠어요, 지금처럼 추천할게요. 이건 다시 묻지 않을게요."


class TurnDownLearner:
    """`ingredients`: ingredient word → the dishes whose names hold it (bot/taste/words.py ingredient_index)."""

    def __init__(self, catalog: DishCatalog, ingredients: Mapping[str, frozenset[str]], *,
                 after: int = LEARN_AFTER, share: float = LEARN_SHARE) -> None:
        self.catalog = catalog
        self.after = after
        self.share = share
        self._words: dict[str, set[str]] = {}
        for word, dishes in ingredients.items():
            if len(word) > 1:  # one-syllable words (파, 전, 국) are parts of too many names to mean a taste
                for dish in dishes:
                    self._words.setdefault(dish, set()).add(word)
        # How many catalog dishes have each thing: on a tie the rarer one says more (국물 before 따뜻한).
        self._spread = Counter(thing for dish in catalog for thing in self.what_of([dish.name]))
        self._dishes = max(1, len(list(catalog)))

    def what_of(self, dishes: Sequence[str]) -> set[tuple[str, str]]:
        """The tags and ingredient words an answer's dishes have, as (target, value)."""
        found: set[tuple[str, str]] = set()
        for name in dishes:
            dish = self.catalog.get(name)
            if dish is not None:
                found |= {("tag", t) for t in dish.tags if t in TASTE_TAGS}
                found |= {("ingredient", w) for w in self._words.get(dish.name, ())}
        return found

    def propose(self, turned_down: Sequence[Sequence[str]], profile: TasteProfile,
                asked: set[tuple[str, str]]) -> Learned | None:
        """What to ask about, if anything: the most shared tag (before an ingredient word) not known nor asked."""
        if self.after <= 0 or len(turned_down) < self.after:
            return None
        counts = Counter(thing for dishes in turned_down for thing in self.what_of(dishes))
        known = {item.about for item in profile.items}
        candidates = [(n, target == "tag", -self._spread[target, value], value, target)
                      for (target, value), n in counts.items()
                      if n >= self.after and n >= self.share * len(turned_down)
                      and n / len(turned_down) >= self._spread[target, value] / self._dishes + LEARN_LIFT
                      and (target, value) not in asked and (target, value) not in known]
        if not candidates:
            return None
        n, _, _, value, target = max(candidates)
        return Learned(TasteItem("dislike", target, value), n)
