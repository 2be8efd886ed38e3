"""Slot frames: what makes two Korean food requests the same task, or two different ones.

ROUGE-L alone cannot tell "이탈리아에서 유명한 음식" from "영국에서 유명한 음식": a short request has 4-6 content
morphemes, so swapping the one that matters still scores 0.75-0.83. Nor does it see that "영양가" is "영양 가치" or
that 양념 is 소스. A `Frame` splits a request into
- its question type (`qtype`): recipe, storage, nutrition, where (to eat), origin, ingredients, substitute,
  difference, pairing, or "ask" (recommend / what is) when there is no cue;
- its slots: dishes (the catalog `data/dishes.csv`, every alias), ingredients, cuisines and countries, regions and
  cities, meal times, people, occasions, situations (weather, 해장, 감기), places (편의점, 배달), drinks, dish kinds,
  cooking methods, constraints (맵다/순하다, 건강, 간단, 저렴, ...), numbers, and "topic": any other noun;
- the rest: what is left once particles, endings, spacing and filler words (추천, 음식, 알려 주다, ...) are gone.

Synonyms share one canonical value (한국/우리나라/국내/한식, 양념/소스, 유명/인기/대표, 계란/달걀), negation flips
a slot (안 매운 = 맵지 않은 = 순한; 돼지고기 없이 = not:돼지고기), and spacing does not matter because the lexicon
matches runs of morphemes joined together (김치 찌개 = 김치찌개, 영양 가치 = 영양가치).

The lexicon (slot_lexicon.csv and the dish catalog) and the morpheme stream it matches are in lexicon.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dataset_builder.lexicon import (
    AFFIX_TAGS,
    COUNTERS,
    DEFAULT_CATALOG,
    LEXICON_PATH,
    NOUN_TAGS,
    Morpheme,
    cached_lexicon,
    morphemes,
    number_run,
)
from dataset_builder.similarity import Match, NearDupIndex, get_kiwi

# Slots that name food: "A랑 같이 먹을 B" asks what goes with A only when A is food ("친구랑 같이" is company).
_FOOD_SLOTS = frozenset({"dish", "ingredient", "drink", "kind"})
# Negated slots that have a name of their own.
_NEGATED = {("constraint", "매운"): ("constraint", "순한"), ("constraint", "기름진"): ("constraint", "담백"),
            ("kind", "고기"): ("constraint", "채식"), ("constraint", "순한"): ("constraint", "매운")}
# (test on the slots, slot it makes redundant): a diet snack is a healthy one; 술 마실 때 names the drink already.
_IMPLIED = (
    (lambda slots: ("constraint", "다이어트") in slots, ("constraint", "건강")),
    (lambda slots: any(s == "drink" and c != "음료" for s, c in slots), ("drink", "음료")),
)
# Question types that turn "how" (법, 방법, 어떻게) into something other than a recipe.
_HOW_TO_OTHER = frozenset({"storage", "nutrition", "where", "origin", "difference", "substitute"})


@dataclass(frozen=True)
class Frame:
    qtype: str
    slots: tuple[tuple[str, str], ...]  # sorted (slot, canonical) pairs
    rest: tuple[str, ...]

    @property
    def key(self) -> tuple:
        """Two rows can only be near-duplicates when their keys are equal."""
        return self.qtype, self.slots

    def rest_tokens(self) -> list[str]:
        """What ROUGE-L compares once the keys match; the question type leads so two empty rests score 1.0."""
        return [f"@{self.qtype}", *self.rest]

    def describe(self) -> str:
        slots = ", ".join(f"{s}={c}" for s, c in self.slots) or "no slots"
        return f"{self.qtype} | {slots} | rest: {' '.join(self.rest) or '-'}"

    def to_dict(self) -> dict:
        grouped: dict[str, list[str]] = {}
        for slot, canonical in self.slots:
            grouped.setdefault(slot, []).append(canonical)
        return {"qtype": self.qtype, "slots": grouped, "rest": list(self.rest)}


@dataclass
class _Item:
    slot: str
    canonical: str
    start: int
    end: int


class SlotExtractor:
    """Text -> Frame. Builds its lexicon once (Kiwi tags ~3,000 surfaces in about a second)."""

    def __init__(self, catalog: Path | None = DEFAULT_CATALOG, lexicon: Path = LEXICON_PATH) -> None:
        self.lexicon = cached_lexicon(lexicon, catalog)
        self.light = frozenset(c for c, e in self.lexicon.entries.items() if any(x.slot == "light" for x in e))
        self._kiwi = get_kiwi()
        self.catalog = catalog if catalog is not None and catalog.exists() else None

    def frames(self, texts: Sequence[str]) -> list[Frame]:
        return [self.frame_from_tokens(tokens) for tokens in self._kiwi.tokenize(list(texts))]

    def frame(self, text: str) -> Frame:
        return self.frame_from_tokens(self._kiwi.tokenize(text))

    def frame_from_tokens(self, tokens) -> Frame:
        stream = morphemes(tokens)
        items, rest = self._items(stream)
        items = _apply_negation(items)
        return _resolve(items, rest)

    def _items(self, stream: list[Morpheme]) -> tuple[list[_Item], list[str]]:
        items: list[_Item] = []
        rest: list[str] = []
        i = 0
        while i < len(stream):
            found = self.lexicon.match(stream, i)
            j, value = number_run(stream, i)
            if j > i and (found is None or found[1] == 1):  # "만 원" is a number; "한 끼" a phrase
                while j < len(stream) and stream[j].form in COUNTERS:
                    j += 1  # "세 가지" is three, not eggplants
                items.append(_Item("number", str(value), i, j))
                i = j
                continue
            if found is not None:
                entries, length = found
                items += [_Item(e.slot, e.canonical, i, i + length) for e in entries if e.slot != "light"]
                i += length
                continue
            tok = stream[i]
            if tok.tag not in AFFIX_TAGS and tok.form not in self.light and tok.tag != "NNB" and tok.tag != "NP":
                if tok.tag in NOUN_TAGS:
                    items.append(_Item("topic", tok.form, i, i + 1))
                else:
                    rest.append(tok.form)
            i += 1
        return items, rest


def _apply_negation(items: list[_Item]) -> list[_Item]:
    """안/덜 + slot, slot + 없이/말고/빼고/않은/안 들어간: the slot is negated, and the negator itself dropped."""
    out: list[_Item] = []
    pending_before: int | None = None
    for item in items:
        if item.slot == "negate_before":
            pending_before = item.end
            continue
        if item.slot == "negate_after":
            target = next((x for x in reversed(out) if x.slot not in ("qtype",)), None)
            if target is not None and item.start - target.end <= 1:
                _negate(target)
            continue
        if pending_before is not None and item.start == pending_before and item.slot != "qtype":
            _negate(item)
        pending_before = None
        out.append(item)
    return out


def _negate(item: _Item) -> None:
    if item.canonical.startswith("not:"):
        item.canonical = item.canonical[4:]
        return
    item.slot, item.canonical = _NEGATED.get((item.slot, item.canonical), (item.slot, f"not:{item.canonical}"))


def _resolve(items: list[_Item], rest: list[str]) -> Frame:
    cues = set()
    slots = set()
    for n, item in enumerate(items):
        if item.slot == "qtype":
            if item.canonical == "with":
                prev = items[n - 1] if n else None
                if prev is not None and prev.slot in _FOOD_SLOTS and item.start - prev.end <= 1:
                    cues.add("pairing")
            else:
                cues.add(item.canonical)
        else:
            slots.add((item.slot, item.canonical))
    if any(s == "dish" for s, _ in slots):
        # A dish implies how it is cooked: 김밥 is rolled, 에그타르트 baked.
        slots = {(s, c) for s, c in slots if s != "method"}
    for present, implied in _IMPLIED:
        if present(slots):
            slots.discard(implied)
    if ("person", "어머니") in slots and ("person", "아버지") in slots:
        slots -= {("person", "어머니"), ("person", "아버지")}
        slots.add(("person", "부모"))
    how = "how" in cues
    cues.discard("how")
    if how and not cues & _HOW_TO_OTHER:
        cues.add("recipe")
    return Frame("+".join(sorted(cues)) or "ask", tuple(sorted(slots)), tuple(rest))


@dataclass
class _Bucket:
    index: NearDupIndex
    ids: list[int]


class SlotMatcher:
    """Near-duplicate = same question type and the same slots, and ROUGE-L F1 of the rest > threshold.

    Rows are bucketed by `Frame.key`, so rows whose slots differ are never compared at all; each bucket is an exact
    pruned ROUGE-L index over the rest (question type first, so two rows with nothing else left score 1.0).
    """

    name = "slots"

    def __init__(self, extractor: SlotExtractor, threshold: float, index_factory=None) -> None:
        self.extractor = extractor
        self.threshold = threshold
        self._factory = index_factory or NearDupIndex
        self._buckets: dict[tuple, _Bucket] = {}
        self._frames: list[Frame] = []

    def prepare(self, texts: Sequence[str]) -> list[Frame]:
        unique = list(dict.fromkeys(texts))
        by_text = dict(zip(unique, self.extractor.frames(unique), strict=True))
        return [by_text[t] for t in texts]

    def add(self, frame: Frame) -> None:
        bucket = self._buckets.get(frame.key)
        if bucket is None:
            bucket = self._buckets[frame.key] = _Bucket(self._factory(self.threshold), [])
        bucket.index.add(frame.rest_tokens())
        bucket.ids.append(len(self._frames))
        self._frames.append(frame)

    def best(self, frame: Frame) -> Match | None:
        bucket = self._buckets.get(frame.key)
        found = bucket.index.best(frame.rest_tokens()) if bucket is not None else None
        if found is None:
            return None
        score, local = found
        idx = bucket.ids[local]
        slots = ", ".join(f"{s}={c}" for s, c in frame.slots) or "no slots"
        detail = f"same {frame.qtype} request, same slots ({slots}); rest ROUGE-L {score:.3f} > {self.threshold}"
        return Match(score, idx, detail, {"row": frame.to_dict(), "nearest": self._frames[idx].to_dict()})

    @property
    def candidates_checked(self) -> int:
        return sum(b.index.candidates_checked for b in self._buckets.values())
