"""Does an answer give what the question asked for? The wishes a question states that the dish catalog can check.

"매운 거 먹고 싶어" wants 매운; "고기 안 먹는 친구랑" wants 채식; "어제 과음했어" wants 해장; "맥주랑 어울리는 거" wants
술안주. `wishes_in(question)` reads them from kiwipiepy lemmas (model/food/morph.py), with negation ("맵지 않은", "안 매운",
"매운 거 못 먹어" → 안매운) and a little context ("시원한 국물" is a hot soup, "시원한 거" something cold).

A dish fits a wish when its catalog tags say so (Wish.fits_any), and never when they say the opposite (Wish.never).
An answer fits when one of the catalog dishes it names fits every wish. `RequestCheck.misses(answer)` is the
answer-time check: True when the answer names catalog dishes and none of them fits, and also when it names no dish at
all (to a question that asks for a kind of dish, that is not a recommendation: a lecture, a recipe step, a ramble).
The catalog's 588 dishes include the head words of most others (고르곤졸라 피자 is found as 피자), and the service keeps
the last sample when its bound is reached, so a good answer about a rare dish costs a resample, never the answer.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from model.food.morph import Lemma, contains, lemmas, negated


@dataclass(frozen=True)
class Wish:
    label: str
    fits_any: frozenset[str]  # a dish fits when it carries one of these tags…
    never: frozenset[str] = frozenset()  # …and none of these

    def fits(self, dish: Any) -> bool:
        tags = set(getattr(dish, "tags", ()))
        return bool(tags & self.fits_any) and not tags & self.never


def _wish(label: str, *fits: str, never: Iterable[str] = ()) -> Wish:
    return Wish(label, frozenset(fits or (label,)), frozenset(never))


WISHES: dict[str, Wish] = {w.label: w for w in (
    _wish("매운"), _wish("안매운"), _wish("차가운"), _wish("따뜻한"),
    _wish("여름", "여름", "차가운"), _wish("겨울", "겨울", "따뜻한"), _wish("비오는날"),
    _wish("국물"), _wish("면"), _wish("고기"), _wish("해산물"), _wish("채식", never=("고기", "해산물")),
    _wish("디저트"), _wish("음료"), _wish("간식", "간식", "디저트"),
    _wish("아침"), _wish("야식"), _wish("해장"), _wish("술안주"), _wish("다이어트"), _wish("회복식"), _wish("편의점"),
)}  # fmt: skip

# lemma (form, or form/TAG where the form alone is ambiguous) -> (wish, wish when negated or None)
WORDS: dict[str, tuple[str, str | None]] = {
    "맵/VA": ("매운", "안매운"), "매콤하": ("매운", "안매운"), "얼큰하": ("매운", None), "칼칼하": ("매운", None),
    "화끈하": ("매운", None), "매운맛": ("매운", "안매운"), "순하": ("안매운", None), "맵찔이": ("안매운", None),
    "차갑": ("차가운", "따뜻한"), "차/VA": ("차가운", "따뜻한"), "시원하": ("차가운", None), "얼음": ("차가운", None),
    "따뜻하": ("따뜻한", "차가운"), "따끈하": ("따뜻한", None), "뜨끈하": ("따뜻한", None), "뜨겁": ("따뜻한", None),
    "뜨끈뜨끈하": ("따뜻한", None), "덥": ("여름", None), "무덥": ("여름", None), "여름": ("여름", None), "무더위": ("여름", None),
    "폭염": ("여름", None), "춥": ("겨울", None), "겨울": ("겨울", None), "쌀쌀하": ("겨울", None),
    "으슬으슬": ("겨울", None), "장마": ("비오는날", None), "장마철": ("비오는날", None),
    "국물": ("국물", None), "국/NNG": ("국물", None), "탕/NNG": ("국물", None), "찌개": ("국물", None),
    "면/NNG": ("면", None), "국수": ("면", None), "면요리": ("면", None),
    "고기": ("고기", "채식"), "육류": ("고기", "채식"), "해산물": ("해산물", None), "해물": ("해산물", None),
    "생선": ("해산물", None), "회/NNG": ("해산물", None),
    "채식": ("채식", None), "비건": ("채식", None), "베지테리언": ("채식", None), "채식주의자": ("채식", None),
    "디저트": ("디저트", None), "후식": ("디저트", None), "달달하": ("디저트", None), "달콤하": ("디저트", None),
    "달/VA": ("디저트", None), "카페": ("디저트", None), "음료": ("음료", None), "음료수": ("음료", None),
    "간식": ("간식", None), "출출하": ("간식", None), "주전부리": ("간식", None), "군것질": ("간식", None),
    "아침": ("아침", None), "조식": ("아침", None), "모닝": ("아침", None), "아침밥": ("아침", None),
    "야식": ("야식", None), "밤/NNG": ("야식", None), "새벽": ("야식", None), "한밤중": ("야식", None),
    "해장": ("해장", None), "숙취": ("해장", None), "과음": ("해장", None),
    "안주": ("술안주", None), "술안주": ("술안주", None),
    "다이어트": ("다이어트", None), "칼로리": ("다이어트", None), "저칼로리": ("다이어트", None),
    "체중": ("다이어트", None), "식단": ("다이어트", None),
    "감기": ("회복식", None), "몸살": ("회복식", None), "아프": ("회복식", None), "배탈": ("회복식", None),
    "장염": ("회복식", None), "회복": ("회복식", None), "입원": ("회복식", None), "편의점": ("편의점", None),
}  # fmt: skip
# several lemmas in a row (particles and endings between them are skipped)
PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("비", "오"), "비오는날"), (("비", "내리"), "비오는날"), (("눈", "오"), "겨울"), (("살", "빼"), "다이어트"),
    (("살", "찌"), "다이어트"), (("찌", "날씨"), "여름"), (("찌", "날"), "여름"), (("출근", "전"), "아침"), (("자", "전"), "야식"), (("늦", "시간"), "야식"),
    (("늦", "밤"), "야식"), (("기운", "없"), "회복식"), (("술", "깨"), "해장"), (("속", "풀"), "해장"),
)  # fmt: skip
DRINKS = frozenset({"술", "맥주", "소주", "와인", "막걸리", "하이볼", "위스키", "사케", "생맥주", "치맥", "한잔"})
HANGOVER_CUES = frozenset({"해장", "숙취", "과음", "다음", "어제", "깨", "쓰리", "전날"})
HOT_SOUP_CUES = frozenset({"국물", "해장", "국", "탕", "찌개", "국밥", "전골"})
OPPOSITES = (("매운", "안매운"), ("차가운", "따뜻한"))


def _key(lemma: Lemma) -> tuple[str, str]:
    return lemma.form, f"{lemma.form}/{lemma.tag}"


def wishes_in(question: str) -> tuple[str, ...]:
    """The checkable wishes in `question`, as WISHES labels, in WISHES order."""
    found = lemmas(question)
    forms = {lemma.form for lemma in found}
    wanted: set[str] = set()
    for i, lemma in enumerate(found):
        if not lemma.is_content:
            continue
        rule = next((WORDS[k] for k in _key(lemma)[::-1] if k in WORDS), None)
        if rule is None:
            if lemma.form in DRINKS:
                wanted.add("해장" if forms & HANGOVER_CUES else "술안주")
            elif lemma.form == "마시" and not forms & DRINKS:
                wanted.add("음료")  # 마실 거 추천
            continue
        label, when_negated = rule
        if lemma.form == "시원하" and forms & HOT_SOUP_CUES:
            continue  # 시원한 국물: a hot, clearing soup, not a cold dish
        if negated(found, i):
            if when_negated:
                wanted.add(when_negated)
            continue
        wanted.add(label)
    for words, label in PHRASES:
        if contains(found, words) is not None:
            wanted.add(label)
    if "야식" in wanted:
        wanted.discard("간식")  # 밤에 출출해: a late-night meal
    if "해장" in wanted:
        wanted.discard("술안주")
    if "음료" in wanted and "디저트" not in forms:
        wanted.discard("디저트")  # 카페에서 마실 거: a drink
    for a, b in OPPOSITES:
        if a in wanted and b in wanted:
            wanted -= {a, b}  # "매운 거 좋아하는데 친구는 못 먹어": no clear wish
    return tuple(label for label in WISHES if label in wanted)


def dish_fits(dish: Any, wishes: Iterable[str]) -> bool:
    return all(WISHES[w].fits(dish) for w in wishes)


def fitting_dishes(catalog: Iterable[Any], wishes: Iterable[str]) -> list[Any]:
    wishes = tuple(wishes)
    return [dish for dish in catalog if dish_fits(dish, wishes)]


def candidates(catalog: Iterable[Any], wishes: Iterable[str], excluded: Container[str], count: int,
               rng: random.Random) -> list[str]:
    """Up to `count` catalog dishes that fit `wishes` (any dish when there are none) and are not `excluded`, drawn
    at random: what the prompt offers a model that must steer around many dishes (an allergy to 밀 or 대두 rules
    out hundreds), so that it still has something to recommend."""
    pool = [dish.name for dish in (fitting_dishes(catalog, wishes) if wishes else catalog) if dish.name not in excluded]
    return rng.sample(pool, min(count, len(pool)))


def answer_fits(catalog: Any, answer: str, wishes: Sequence[str]) -> bool | None:
    """True: a named catalog dish fits every wish; False: it names catalog dishes, none fits; None: it names none."""
    dishes = catalog.find(answer)
    if not dishes:
        return None
    return any(dish_fits(dish, wishes) for dish in dishes)


@dataclass(frozen=True)
class RequestCheck:
    """The answer-time check for one question: `misses(answer)` says when to resample."""

    wishes: tuple[str, ...]
    catalog: Any

    def misses(self, answer: str) -> bool:
        return bool(self.wishes) and answer_fits(self.catalog, answer, self.wishes) is not True


def request_check(question: str, catalog: Any) -> RequestCheck | None:
    """The check for `question`, or None when it states nothing the catalog can check (or there is no catalog)."""
    if catalog is None or not hasattr(catalog, "find"):
        return None
    wishes = wishes_in(question)
    return RequestCheck(wishes, catalog) if wishes else None
