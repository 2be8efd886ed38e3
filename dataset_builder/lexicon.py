"""The slot lexicon and the morpheme stream it is matched against (see slots.py for what the slots are for).

The lexicon is `slot_lexicon.csv` beside this file (slot, canonical, surfaces), written in plain Korean: each surface
is run through Kiwi inside a carrier phrase ("{surface} 음식") so it is tagged as it would be in a request, and the
key is the joined morpheme forms. "form/TAG" gives a key literally, for the few words Kiwi tags differently alone.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dataset_builder.similarity import KIWI_CONTENT_TAGS, get_kiwi

LEXICON_PATH = Path(__file__).with_name("slot_lexicon.csv")
DEFAULT_CATALOG = Path(__file__).resolve().parents[1] / "data" / "dishes.csv"

AFFIX_TAGS = frozenset({"XPN", "XSN"})
_STREAM_TAGS = KIWI_CONTENT_TAGS | AFFIX_TAGS
NOUN_TAGS = frozenset({"NNG", "NNP", "SL", "SH"})
# One-token keys also match on a coarse tag class, so 차 (tea, NNG) is not 차 (찬 = cold, VA) and 달 (moon) is not
# 달 (sweet). Multi-token keys are specific enough without.
_TAG_CLASS = {"VV": "V", "VX": "V", "VA": "A"}
_MAX_KEY_TOKENS = 6
_NATIVE_NUMBERS = {"한": 1, "두": 2, "둘": 2, "세": 3, "셋": 3, "석": 3, "네": 4, "넷": 4, "다섯": 5,
                   "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9, "열": 10, "스무": 20, "스물": 20}
_SINO_DIGITS = {"일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "칠": 7, "팔": 8, "구": 9}
_MULTIPLIERS = {"십": 10, "백": 100, "천": 1000, "만": 10000}
# "만원", "삼천원", "2인분" when Kiwi keeps number and unit in one noun.
_NUMBER_WITH_UNIT = re.compile(r"^([0-9]+|[일이삼사오육칠팔구십백천만]+)(원|인분|명|살|분|시간|개)$")
COUNTERS = frozenset({"가지", "개", "명", "인분", "살", "분", "시간", "끼", "잔", "병", "그릇", "접시", "인", "원", "마리",
                       "조각", "판", "세트"})
# A key written as one word ("중식") may match several text morphemes only when they are all nouns: "김치 찌개" is
# 김치찌개, but "배달 음식 중 식어도" is not 중식.
_COMPOUND_TAGS = frozenset({"NNG", "NNP", "SL", "SH", "XR", "XPN", "XSN", "NR", "SN"})
# A yes/no question ("먹어도 돼?", "먹어야 해?", "만들 수 있어?", "괜찮아?") asks for advice, not for a dish; with a
# question word ("뭘 먹어야 할까") it is a request for a recommendation again.
_QUESTION_WORDS = frozenset({"뭐", "뭘", "무엇", "무슨", "어떤", "어디", "어느", "언제", "얼마", "얼마나", "어떻", "몇",
                             "누구"})
# "알려 주실 수 있나요?" is a polite request, not a question whether something can be done.
_REQUEST_AUXILIARIES = frozenset({"주", "드리"})


def _tag(token) -> str:
    return token.tag.split("-")[0]


@dataclass(frozen=True)
class Morpheme:
    form: str
    cls: str
    tag: str


def _advice_at(tokens: list, i: int) -> bool:
    """Is tokens[i] the predicate of a yes/no question (되/괜찮/하 after -어야/있 after 수, then a final ending)?"""
    t = tokens[i]
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    if nxt is None or _tag(nxt) != "EF":
        return False
    prev = tokens[i - 1] if i else None
    tag = _tag(t)
    if not (
        (t.form in ("되", "괜찮") and tag in ("VV", "VA"))
        or (t.form == "하" and tag == "VX" and prev is not None and prev.form in ("어야", "아야"))
        or (t.form == "있" and prev is not None and prev.form == "수" and not _polite_request(tokens, i - 1))
    ):
        return False
    start = next((j + 1 for j in range(i - 1, -1, -1) if _tag(tokens[j]) == "SF"), 0)
    return not any(x.form in _QUESTION_WORDS for x in tokens[start:i])


def _polite_request(tokens: list, i: int) -> bool:
    """Does the 수 at tokens[i] follow 주/드리 ("해 주실 수", "알려 드릴 수")?"""
    for t in reversed(tokens[:i]):
        tag = _tag(t)
        if tag in ("EP", "ETM"):
            continue
        return tag == "VX" and t.form in _REQUEST_AUXILIARIES
    return False


def _korean_number(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    value, digit = 0, None
    for c in text:
        if c in _SINO_DIGITS:
            digit = _SINO_DIGITS[c]
        elif c in _MULTIPLIERS:
            value += (digit or 1) * _MULTIPLIERS[c]
            digit = None
        else:
            return None
    return value + (digit or 0)


def morphemes(tokens) -> list[Morpheme]:
    """Content morphemes and affixes, normalised: lower case, 하다-adjectives to their root (깔끔하 = 깔끔 XR)."""
    out = []
    tokens = list(tokens)
    for i, t in enumerate(tokens):
        tag = _tag(t)
        if tag not in _STREAM_TAGS:
            continue
        form = t.form.lower()
        if tag in ("VV", "VA", "VX") and _advice_at(tokens, i):
            out.append(Morpheme("<advice>", "N", "NNG"))
            continue
        if tag in ("NNG", "NNP") and (unit := _NUMBER_WITH_UNIT.match(form)):
            value = _korean_number(unit.group(1))
            if value is not None:
                out += [Morpheme(str(value), "N", "SN"), Morpheme(unit.group(2), "N", "NNB")]
                continue
        if form == "하" and tag in ("VV", "VX"):
            continue  # the light verb of 해 먹다, 잘하는 집, 하는 법: Kiwi tags it VV or XSV by context
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if form == "어떻" and nxt is not None and nxt.form == "게":
            form, tag = "어떻게", "MAG"  # "how", unlike 어때 ("what about")
        elif form == "재료" and nxt is not None and nxt.tag == "JKB" and nxt.form in ("로", "으로"):
            form = "재료로"  # "with the ingredients", not a question about them
        elif tag == "VA" and len(form) > 1 and form.endswith("하"):
            form, tag = form[:-1], "XR"
        out.append(Morpheme(form, _TAG_CLASS.get(tag, "N"), tag))
    return out


@dataclass(frozen=True)
class _Entry:
    slot: str
    canonical: str
    cls: str | None  # tag class a one-token key must have; None for multi-token keys
    ntok: int  # morphemes in the key as compiled


class Lexicon:
    """Joined morpheme forms -> slot entries. The shipped CSV wins over the catalog where both know a key."""

    def __init__(self, entries: dict[str, list[_Entry]]) -> None:
        self.entries = entries

    @classmethod
    def build(cls, lexicon: Path = LEXICON_PATH, catalog: Path | None = DEFAULT_CATALOG) -> Lexicon:
        rows = _read_lexicon(lexicon)
        dishes = _read_catalog(catalog) if catalog is not None and catalog.exists() else []
        # Places and countries a catalog alias may start with: every region spelling, but only a cuisine's own name
        # (프렌치프라이 is 감자튀김, not French food).
        prefixes = sorted(
            ((s.replace(" ", ""), c, slot) for slot, c, s in rows if slot == "region" or (slot == "cuisine" and s == c)),
            key=lambda p: -len(p[0]),
        )
        known = {s.replace(" ", "") for _, _, s in rows} | {s.replace(" ", "") for _, s in dishes}
        kiwi = get_kiwi()
        surfaces = [s for _, _, s in rows if "/" not in s] + [s for _, s in dishes]
        compiled = dict(zip(surfaces, kiwi.tokenize([f"{s} 음식" for s in surfaces]), strict=True))
        entries: dict[str, list[_Entry]] = {}

        def add(surface: str, new: list[tuple[str, str]], *, override: bool) -> None:
            if "/" in surface:
                form, tag = surface.split("/")
                keys = [(form, _TAG_CLASS.get(tag, "N"), 1)]
            else:
                toks = morphemes(t for t in compiled[surface] if t.start < len(surface))
                keys = [("".join(t.form for t in toks), toks[0].cls if len(toks) == 1 else None, len(toks))]
                keys = keys if toks else []
                compact = surface.replace(" ", "").lower()
                if len(compact) > 1 and all(compact != k for k, _, _ in keys):
                    keys.append((compact, None, 1))  # Kiwi may keep the whole name as one token in a request
            for key, key_cls, ntok in keys:
                if not override and key in entries:
                    continue
                bucket = entries.setdefault(key, [])
                for slot, canonical in new:
                    entry = _Entry(slot, canonical, key_cls, ntok)
                    if entry not in bucket:
                        bucket.append(entry)

        for slot, canonical, surface in rows:
            add(surface, [(slot, canonical)], override=True)
        for name, surface in dishes:
            # "전주비빔밥", "일본라멘": a place or cuisine before a known name is a slot too ("대구지리" is cod).
            compact = surface.replace(" ", "")
            prefix = next((p for p in prefixes if compact.startswith(p[0]) and compact[len(p[0]) :] in known), None)
            new = [("dish", name)] + ([(prefix[2], prefix[1])] if prefix else [])
            add(surface, new, override=False)
        return cls(entries)

    def match(self, stream: Sequence[Morpheme], i: int) -> tuple[list[_Entry], int] | None:
        """The longest key starting at stream[i], as (entries, tokens used)."""
        for length in range(min(_MAX_KEY_TOKENS, len(stream) - i), 0, -1):
            key = "".join(t.form for t in stream[i : i + length])
            found = self.entries.get(key)
            if not found:
                continue
            if length == 1:
                found = [e for e in found if e.cls is None or e.cls == stream[i].cls]
            elif any(t.tag not in _COMPOUND_TAGS for t in stream[i : i + length]):
                found = [e for e in found if e.ntok >= length]
            if found:
                return found, length
        return None


def _read_lexicon(path: Path) -> list[tuple[str, str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [
            (rec["slot"].strip(), rec["canonical"].strip(), surface.strip())
            for rec in csv.DictReader(f)
            for surface in rec["surfaces"].split("|")
            if surface.strip()
        ]


def _read_catalog(path: Path) -> list[tuple[str, str]]:
    """(dish name, surface) for every name and alias in the dish catalog (name,aliases,... with `|` lists)."""
    with path.open(encoding="utf-8", newline="") as f:
        out = []
        for rec in csv.DictReader(f):
            name = (rec.get("name") or "").strip()
            if name:
                out += [(name, s.strip()) for s in (name, *(rec.get("aliases") or "").split("|")) if s.strip()]
        return out


@functools.cache
def cached_lexicon(lexicon: Path, catalog: Path | None) -> Lexicon:
    return Lexicon.build(lexicon, catalog)


def number_run(stream: Sequence[Morpheme], i: int) -> tuple[int, int]:
    """A run of number morphemes ("2", "만"; "두"; "스무") from stream[i], as (end, value); end == i if none."""
    value = None
    j = i
    while j < len(stream):
        tok = stream[j]
        if tok.tag == "SN" and tok.form.replace(",", "").isdigit():
            value = (value or 0) + int(tok.form.replace(",", ""))
        elif tok.tag in ("NR", "MM") and tok.form in _NATIVE_NUMBERS:
            value = (value or 0) + _NATIVE_NUMBERS[tok.form]
        elif tok.tag == "NR" and tok.form in _SINO_DIGITS:
            value = (value or 0) + _SINO_DIGITS[tok.form]
        elif tok.tag == "NR" and tok.form in _MULTIPLIERS:
            value = (value or 1) * _MULTIPLIERS[tok.form]
        else:
            break
        j += 1
    return j, value or 0
