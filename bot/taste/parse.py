"""Reading taste statements in plain messages: "나 새우 알레르기 있어", "오이 싫어해", "요즘 채식 중이야",
"돼지고기는 안 먹어".

Recognition works on kiwipiepy morphemes and lemmas, never on substrings: a statement is a predicate that carries a
taste (알레르기 + 있다/이다, 싫다, 싫어하다, 별로이다, 좋아하다, 안/못 먹다, 채식 + 이다/하다 …) whose objects are names we
know (the catalog's allergen categories and their common words, dish names, tags and categories, and the ingredient
words inside dish names). It must be said about oneself, as a fact: a question ("오이 싫어해?"), a condition
("알레르기 있으면"), a modifier ("알레르기 있는 사람"), a negation ("알레르기 없어"), someone else ("친구가 …") or a
one-off ("오늘은 매운 게 싫어") is not remembered. What is left of the message after the statements tells whether
it also asks something.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.taste.grammar import (
    diet_noun,
    fact_end,
    is_content,
    is_negated,
    lemma_of,
    next_is,
)
from bot.taste.profile import TasteItem, TasteRules, allergens_of, group_words
from bot.taste.words import (
    ADJECTIVE_TAGS,
    ALLERGY_NOUNS,
    BEEF,
    EXTRA_INGREDIENTS,
    FILLERS,
    GENERIC,
    ONE_OFF,
    PEOPLE,
    PORK,
    TRIGGERS,
    cached_index,
    shared_kiwi,
)
from model.food.dishes import DishCatalog


@dataclass(frozen=True)
class Statement:
    items: tuple[TasteItem, ...]
    asks: bool  # the message also asks something: answer it once the user has chosen



class TasteReader:
    """Statements in a message, as taste items. Build it with `load()` (off the event loop: it starts Kiwi)."""

    def __init__(self, catalog: DishCatalog, kiwi: Any, ingredients: dict[str, frozenset[str]]) -> None:
        self.catalog = catalog
        self.kiwi = kiwi
        self.rules = TasteRules(catalog, ingredients)
        self.groups = group_words(catalog)
        self.vocabulary = set(ingredients) | set(EXTRA_INGREDIENTS)

    @classmethod
    def load(cls, catalog: DishCatalog) -> TasteReader:
        kiwi = shared_kiwi()
        return cls(catalog, kiwi, cached_index(catalog, kiwi))

    @staticmethod
    def might_state(text: str) -> bool:
        return any(trigger in text for trigger in TRIGGERS)

    def read(self, text: str) -> Statement | None:
        if not self.might_state(text):
            return None
        tokens = self.kiwi.tokenize(text)
        items: list[TasteItem] = []
        covered: set[int] = set()
        for i in range(len(tokens)):
            found = self._statement_at(tokens, i, text)
            if found is not None:
                new_items, span = found
                items.extend(new_items)
                covered.update(range(span[0], span[1]))
        if not items:
            return None
        asks = any(is_content(t) for j, t in enumerate(tokens) if j not in covered)
        return Statement(tuple(dict.fromkeys(items)), asks)

    # --- one statement ------------------------------------------------------------------------------------------

    def _statement_at(self, tokens: Sequence[Any], i: int, text: str) -> tuple[list[TasteItem], tuple[int, int]] | None:
        token, lemma = tokens[i], lemma_of(tokens[i])
        if token.tag.startswith("NN") and token.form in ALLERGY_NOUNS:
            return self._allergy(tokens, i, text)
        if token.tag.startswith("NN") and diet_noun(tokens, i) is not None:
            return self._diet(tokens, i, *diet_noun(tokens, i))
        if lemma in ("싫다", "싫어하다") or (token.form == "질색" and token.tag.startswith("NN")):
            return self._feeling(tokens, i, text, "dislike", invert=False)
        if token.form == "별로" and token.tag == "MAG" and i + 1 < len(tokens) and tokens[i + 1].tag == "VCP":
            return self._feeling(tokens, i, text, "dislike", invert=False)
        if lemma == "좋아하다" or (lemma == "좋다" and next_is(tokens, i, ("어", "아"), "EC")
                                  and next_is(tokens, i + 1, ("하",), "VX")):
            return self._feeling(tokens, i, text, "like", invert=True)
        if lemma in ("먹다", "마시다"):
            return self._not_eaten(tokens, i, text)
        return None

    def _allergy(self, tokens: Sequence[Any], i: int, text: str):
        end = fact_end(tokens, i + 1, allow=("있다", "이다", "반응", "체질", "환자"))
        if end is None:
            return None
        objects, start = self._objects(tokens, i, text)
        names = [a for span in objects for a in allergens_of(span)]
        if not names:  # a one-syllable name kiwi reads as an ending ("나 게 알레르기": 나다 + 게): the whole word
            word = text[: tokens[i].start].split()[-1:] or [""]
            names = list(allergens_of(word[0].rstrip(",")))
            start = next((j for j, t in enumerate(tokens) if t.start >= tokens[i].start - len(word[0]) - 1), i)
        if not names or self._not_mine(tokens, start):
            return None
        return [TasteItem("allergy", "allergen", a) for a in dict.fromkeys(names)], (start, end)

    def _diet(self, tokens: Sequence[Any], i: int, code: str, width: int):
        j = i + width
        if j < len(tokens) and tokens[j].form == "중" and tokens[j].tag == "NNB":
            j += 1
        end = fact_end(tokens, j, allow=("이다", "하다"), need_predicate=tokens[j - 1].form != "중")
        if end is None or self._not_mine(tokens, i):
            return None
        return [TasteItem("diet", "diet", code)], (i, end)

    def _feeling(self, tokens: Sequence[Any], i: int, text: str, kind: str, *, invert: bool):
        end = fact_end(tokens, i + 1, allow=("이다", "하다"))
        if end is None:
            return None
        negated = is_negated(tokens, i)
        if negated and not invert:
            return None
        kind = "dislike" if negated else kind
        return self._about_things(tokens, i, text, kind, end)

    def _not_eaten(self, tokens: Sequence[Any], i: int, text: str):
        if not is_negated(tokens, i):
            return None
        end = fact_end(tokens, i + 1, allow=())
        if end is None:
            return None
        objects, start = self._objects(tokens, i, text)
        if self._not_mine(tokens, start):
            return None
        items = []
        for span in objects:
            key = span.replace(" ", "")
            if key in PORK:
                items.append(TasteItem("diet", "diet", "nopork"))
            elif key in BEEF:
                items.append(TasteItem("diet", "diet", "nobeef"))
            elif (thing := self.resolve(span)) is not None:
                items.append(TasteItem("dislike", *thing))
        return (items, (start, end)) if items else None

    def _about_things(self, tokens: Sequence[Any], i: int, text: str, kind: str, end: int):
        objects, start = self._objects(tokens, i, text)
        if self._not_mine(tokens, start):
            return None
        things = [thing for span in objects if (thing := self.resolve(span)) is not None]
        return ([TasteItem(kind, *t) for t in things], (start, end)) if things else None

    def resolve(self, span: str) -> tuple[str, str] | None:
        """What a noun phrase names: (target, value) for a dish, ingredient, tag or category we know, else None."""
        key = span.replace(" ", "")
        candidates = [key] + [key[: -len(g)] for g in GENERIC if key.endswith(g) and len(key) > len(g)]
        for word in candidates:
            if word in self.groups:
                return self.groups[word], word
            dish = self.catalog.get(word)
            shared = len(self.rules.ingredients.get(word, ())) > 1
            if dish is not None and not shared:
                return "dish", dish.name
            if word in self.vocabulary or allergens_of(word):
                return "ingredient", word
            if dish is not None:
                return "dish", dish.name
        return None

    def _objects(self, tokens: Sequence[Any], anchor: int, text: str) -> tuple[list[str], int]:
        """The noun phrases the predicate at `anchor` is about, read leftwards ("새우랑 게", "매운 거"), and where they
        start. Each phrase is the original text of a run of nouns."""
        runs: list[list[str]] = []  # right to left; each run's phrases in text order
        j = anchor - 1
        start = anchor
        while j >= 0:
            while j >= 0 and tokens[j].tag in ("JX", "JKO", "JKS", "MAG"):  # 오이는 진짜, 매운 걸 못
                j -= 1
            run_end = j
            while j >= 0 and (tokens[j].tag in ("NNG", "NNP", "NNB", "XSN", "XPN", "SL") and tokens[j].form not in FILLERS):
                j -= 1
            if j == run_end:
                break
            run = tokens[j + 1 : run_end + 1]
            if run[-1].form in GENERIC and j >= 1 and tokens[j].tag == "ETM" and lemma_of(tokens[j - 1]) in ADJECTIVE_TAGS:
                runs.append([ADJECTIVE_TAGS[lemma_of(tokens[j - 1])]])
                j -= 2
            else:
                runs.append(self._split_run(run, text))
            start = j + 1
            if j >= 0 and (tokens[j].tag == "JC" or tokens[j].form in (",", "및", "그리고", "또는")):
                j -= 1
                continue
            break
        return [span for run in reversed(runs) for span in run], start

    def _split_run(self, run: Sequence[Any], text: str) -> list[str]:
        """A run of nouns split into the phrases we know, longest first from the right ("요즘 새우튀김" → 새우튀김).
        A phrase is made of whole words: part of a word we do not know ("셀러리악") is never guessed at."""
        cuts = [0, *(k for k in range(1, len(run)) if run[k].start > run[k - 1].end), len(run)]
        found: list[str] = []
        end = len(cuts) - 1
        while end > 0:
            for begin in range(end):
                span = text[run[cuts[begin]].start : run[cuts[end] - 1].end]
                if self.resolve(span) is not None or allergens_of(span):
                    found.append(span)
                    end = begin
                    break
            else:
                end -= 1
        return found[::-1]

    def _not_mine(self, tokens: Sequence[Any], start: int) -> bool:
        """Someone else's taste ("친구가 새우 알레르기 있어"), or only for now ("오늘은 매운 게 싫어")."""
        j = start - 1
        while j >= 0 and tokens[j].tag not in ("EF", "EC", "SF"):
            if tokens[j].form in PEOPLE or tokens[j].form in ONE_OFF or tokens[j].form.startswith("이번"):
                return True
            j -= 1
        return False

