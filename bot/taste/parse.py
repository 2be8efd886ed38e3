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

from bot.taste.allergy_talk import allergy_said, also, clean, cured, past_predicate, reactions
from bot.taste.grammar import (
    diet_noun,
    fact_end,
    is_content,
    is_negated,
    lemma_of,
    next_is,
)
from bot.taste.profile import TasteItem, TasteRules, allergens_of, allergy, group_words
from bot.taste.words import (
    ADJECTIVE_TAGS,
    ALLERGY_NOUNS,
    BEEF,
    CONDITIONAL,
    EXTRA_INGREDIENTS,
    FILLERS,
    GENERIC,
    HOUSEHOLD,
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
    unsure: tuple[str, ...] = ()  # allergens it may be allergic to ("우유 마시면 배 아파"): ask which kind


@dataclass(frozen=True)
class Context:
    """What the whole message tells about each statement in it."""

    allergic: bool  # an allergy is given as a fact: "못 먹어" in it is the allergy, never a dislike



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
        text = clean(text)
        if not self.might_state(text):
            return None
        tokens = self.kiwi.tokenize(text)
        context = Context(allergic=allergy_said(tokens))
        items: list[TasteItem] = []
        unsure: list[str] = []
        covered: set[int] = set()
        for i in range(len(tokens)):
            found = self._statement_at(tokens, i, text, context)
            if found is not None:
                new_items, span = found
                items.extend(new_items)
                covered.update(range(span[0], span[1]))
        for reaction in reactions(tokens):
            if not self._not_mine(tokens, reaction.span[0], household=True):
                self._add(items, unsure, reaction.allergens, sure=reaction.sure or context.allergic)
                covered.update(range(*reaction.span))
        for i, token in enumerate(tokens):  # "먹으면 안 돼": unsure unless an allergy is the reason
            if lemma_of(token) in ("먹다", "마시다") and (forbidden := self._forbidden(tokens, i, text)) is not None:
                self._add(items, unsure, forbidden[0], sure=context.allergic)
                covered.update(range(*forbidden[1]))
        return self._statement(tokens, items, unsure, covered)

    @staticmethod
    def _add(items: list[TasteItem], unsure: list[str], names: Sequence[str], *, sure: bool) -> None:
        if sure:
            items.extend(allergy(a) for a in names)
        else:
            unsure.extend(names)

    def _statement(self, tokens: Sequence[Any], items: list[TasteItem], unsure: list[str],
                   covered: set[int]) -> Statement | None:
        if cured(tokens):  # "예전엔 땅콩 알레르기가 있었는데 지금은 다 나았어": nothing of it is remembered
            items, unsure = [i for i in items if i.kind != "allergy"], []
        allergic = {i.value for i in items if i.kind == "allergy"}
        # an allergen heard as an allergy is not also a dislike, nor asked about
        items = [i for i in items if i.kind != "dislike" or not set(allergens_of(i.value)) <= allergic or
                 not allergens_of(i.value)]
        unsure = [a for a in dict.fromkeys(unsure) if a not in allergic]
        if not items and not unsure:
            return None
        asks = any(is_content(t) for j, t in enumerate(tokens) if j not in covered)
        return Statement(tuple(dict.fromkeys(items)), asks, tuple(unsure))

    # --- one statement ------------------------------------------------------------------------------------------

    def _statement_at(self, tokens: Sequence[Any], i: int, text: str,
                      context: Context) -> tuple[list[TasteItem], tuple[int, int]] | None:
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
            return self._not_eaten(tokens, i, text, context)
        return None

    def _allergy(self, tokens: Sequence[Any], i: int, text: str):
        end = fact_end(tokens, i + 1, allow=("있다", "이다", "반응", "체질", "환자"))
        if end is None or past_predicate(tokens, i + 1, end):  # "있었는데": no longer
            return None
        objects, start = self._objects(tokens, i, text)
        names = [a for span in objects for a in allergens_of(span)]
        if not names:  # a one-syllable name kiwi reads as an ending ("나 게 알레르기": 나다 + 게): the whole word
            word = text[: tokens[i].start].split()[-1:] or [""]
            names = list(allergens_of(word[0].rstrip(",")))
            start = next((j for j, t in enumerate(tokens) if t.start >= tokens[i].start - len(word[0]) - 1), i)
        if not names or self._not_mine(tokens, start, household=True):
            return None
        more, end = also(tokens, end)
        return [allergy(a) for a in dict.fromkeys([*names, *more])], (start, end)

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

    def _not_eaten(self, tokens: Sequence[Any], i: int, text: str, context: Context):
        if not is_negated(tokens, i):
            return None
        end = fact_end(tokens, i + 1, allow=())
        if end is None:
            return None
        objects, start = self._objects(tokens, i, text)
        if self._not_mine(tokens, start, household=context.allergic):
            return None
        if context.allergic:  # "알레르기 있어서 땅콩 못 먹어": the allergy, whatever else is not eaten for it
            names = [a for span in objects for a in allergens_of(span)] or self._named_before(tokens, i)
            return ([allergy(a) for a in dict.fromkeys(names)], (start, end)) if names else None
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

    def _forbidden(self, tokens: Sequence[Any], i: int, text: str) -> tuple[list[str], tuple[int, int]] | None:
        """"땅콩 먹으면 안 돼": the allergens it is said of, when said as a fact (not "먹으면 안 돼?")."""
        k = i + 1
        if not (k + 2 < len(tokens) and tokens[k].form in CONDITIONAL and tokens[k + 1].form == "안"
                and lemma_of(tokens[k + 2]) == "되다"):
            return None
        end = fact_end(tokens, k + 3, allow=())
        objects, start = self._objects(tokens, i, text)
        names = [a for span in objects for a in allergens_of(span)] or self._named_before(tokens, i)
        if end is None or not names or self._not_mine(tokens, start, household=True):
            return None
        return names, (min(start, i), end)

    def _named_before(self, tokens: Sequence[Any], i: int) -> list[str]:
        """The allergens named earlier in the sentence ("잣은 알레르기 때문에 먹으면 안 돼요")."""
        j = i - 1
        while j >= 0 and tokens[j].tag not in ("SF", "EF"):
            j -= 1
        return list(dict.fromkeys(a for t in tokens[j + 1 : i] if t.tag.startswith("NN") for a in allergens_of(t.form)))

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
            while j >= 0 and (tokens[j].tag in ("JX", "JKO", "JKS", "MAG") or tokens[j].form in ("에", "둘", "모두")):
                j -= 1  # 오이는 진짜, 매운 걸 못, 새우에 알레르기, 견과류랑 갑각류 둘 다
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

    def _not_mine(self, tokens: Sequence[Any], start: int, *, household: bool = False) -> bool:
        """Someone else's taste ("친구가 새우 알레르기 있어"), or only for now ("오늘은 매운 게 싫어"). With
        `household`, an allergy of the family one cooks for ("우리 애가 땅콩 알레르기 있어") is the user's to avoid."""
        others = PEOPLE - HOUSEHOLD if household else PEOPLE
        j = start - 1
        while j >= 0 and tokens[j].tag not in ("EF", "EC", "SF"):
            if tokens[j].form in others or tokens[j].form in ONE_OFF or tokens[j].form.startswith("이번"):
                return True
            j -= 1
        return False

