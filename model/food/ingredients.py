"""Ingredient words that carry an allergen (두부 → 대두, 치즈 → 우유, 게살 → 게), found in an answer by morphology.

The catalog's allergens cover the dishes it names; an answer can also name an ingredient ("두부 샐러드처럼…"), and for
a user allergic to it that is as bad as naming the dish. Data: data/allergen_ingredients.csv, written by us, columns
`allergen,word,source`: one row per (allergen category, word); a word may carry several categories (간장: 대두, 밀).
`source` says where the link comes from (the labelling law's own names, a common recipe, processed foods' labels).

Matching is on kiwipiepy lemmas (model/food/morph.py), never on substrings: only noun lemmas count, so "맛있게" (게 is
an ending there), "게다가" (an adverb) and "반죽을 밀면" (a verb) are not 게 or 밀. A noun lemma matches a word when it
is the word, or when it is a compound Kiwi keeps whole (콩나물국, 잣죽, 게맛살, 유부초밥) that splits entirely into
known pieces: ingredient words, food heads that follow one (국, 죽, 볶음, 소스, 맛살…) and modifiers that precede one
(생, 건, 훈제…). "우유부단", "게임" and "면접" do not split that way, so they are no match. A one-syllable word (게, 굴, 콩,
빵, 면, 잣, 닭) counts inside a compound only at its start (or after modifiers): "국면" and "장면" are not 면.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from model.food.morph import kiwi
from model.food.table import table_rows

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "allergen_ingredients.csv"
COLUMNS = ("allergen", "word", "source")
NOUN_TAGS = frozenset({"NNG", "NNP"})
# What follows an ingredient inside one compound noun (게+맛살, 잣+죽, 굴+소스, 콩+국수).
HEADS = frozenset(
    "국 죽 탕 찌개 전골 볶음 구이 전 조림 무침 말이 채 초밥 밥 덮밥 볶음밥 김밥 국밥 면 빵 소스 장 살 맛살 깡 튀김 "
    "샐러드 라떼 케이크 크림 잼 수프 스프 국수 젓 가루 즙 차 티 주스 파스타 피자 버거 만두 까스 가스 스테이크 찜 냉채 "
    "꼬치 칩 쿠키 과자 떡 묵 국물 육수 요리 갈비 강정 발 두루치기 버터 파이 타르트 라면 우동 볶이 무스 푸딩 빙수 셰이크 쉐이크 "
    "스무디 칼국수 수제비 부침 부침개 전병 꼬치구이 구이용 젓갈 조개 알 완자 롤 랩 토스트 샌드위치 조각".split()
)
# What precedes an ingredient inside one compound noun (생+굴, 건+새우, 훈제+연어).
MODIFIERS = frozenset("생 건 훈제 통 냉동 마른 자반 방울 흑 왕 깐 갑 참 수제 꽃 대 홍 털 볶은 구운 냉 햇 국산 수입".split())
# Whole lemmas that split into known pieces but are ordinary words or dishes without the allergen in that piece.
# A particle Kiwi read into the noun ("게로", "굴과") may end a compound.
PARTICLE_ENDS = frozenset("은 는 이 가 을 를 과 와 도 만 로 으로 랑 이랑 에 의 나 이나 처럼 하고 까지 부터 보다".split())
NOT_COMPOUNDS = frozenset({"햄버거", "국면", "장면", "면발", "수유부", "비상사태", "윈도우"})


class IngredientsError(ValueError):
    """The ingredient table is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class IngredientHit:
    word: str  # the ingredient word as the table writes it (두부)
    allergens: tuple[str, ...]  # the categories it carries (대두)


class AllergenIngredients:
    def __init__(self, rows: Iterable[tuple[str, str]], source: str = "<memory>") -> None:
        carried: dict[str, list[str]] = {}
        for allergen, word in rows:
            carried.setdefault(word, [])
            if allergen not in carried[word]:
                carried[word].append(allergen)
        self.carried: dict[str, tuple[str, ...]] = {w: tuple(a) for w, a in carried.items()}
        self.source = source
        self._pieces = frozenset(self.carried) | HEADS | MODIFIERS

    @classmethod
    def load(cls, path: str | Path | None = None) -> AllergenIngredients:
        path = Path(path) if path is not None else DEFAULT_PATH
        try:
            stat = path.resolve().stat()
        except FileNotFoundError:
            raise IngredientsError(f"ingredient table not found: {path}; restore data/allergen_ingredients.csv") from None
        return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)

    def words_for(self, allergens: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Every word carrying one of `allergens`, with which of them it carries."""
        wanted = set(allergens)
        found = {w: tuple(a for a in cats if a in wanted) for w, cats in self.carried.items()}
        return {w: cats for w, cats in found.items() if cats}

    def find(self, text: str, allergens: Iterable[str] | None = None) -> list[IngredientHit]:
        """The ingredient words `text` names (each once, in order), limited to those carrying `allergens`."""
        wanted = None if allergens is None else set(allergens)
        hits: dict[str, IngredientHit] = {}
        for stem, exact in noun_stems(text[:2000]):
            for word in ((stem,) if stem in self.carried else ()) if exact else self._words_in(stem):
                cats = self.carried[word] if wanted is None else tuple(a for a in self.carried[word] if a in wanted)
                if cats and word not in hits:
                    hits[word] = IngredientHit(word, cats)
        return list(hits.values())

    def _words_in(self, stem: str) -> tuple[str, ...]:
        if stem in self.carried:
            return (stem,)
        if any(stem.startswith(word) and (stem == word or stem[len(word):] in PARTICLE_ENDS) for word in NOT_COMPOUNDS):
            return ()  # 햄버거를 is no 햄
        return _split(stem, self._pieces, self.carried)

    def __len__(self) -> int:
        return len(self.carried)


def _split(form: str, pieces: frozenset[str], carried: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The ingredient words of a compound noun that splits wholly into known pieces (longest pieces first), or else
    that ends in a word of two syllables or more after any first part (순두부, 마파두부, 칼국수, 아이스크림: the part
    before it only says which kind); () when neither. A one-syllable word counts only after modifiers alone (생굴,
    꽃게) or at the start."""
    parts = _segments(form, pieces)
    if parts is None or len(parts) < 2:
        return _ending_in(form, carried)
    ending = _ending_in(form, carried)
    found = []
    for i, part in enumerate(parts):
        if part not in carried:
            continue
        if len(part) == 1 and not all(p in MODIFIERS and p not in carried for p in parts[:i]):
            continue
        found.append(part)
    return tuple(dict.fromkeys((*found, *ending)))


@lru_cache(maxsize=4096)
def noun_stems(text: str) -> tuple[tuple[str, bool], ...]:
    """The stretches of `text` that Kiwi reads as nouns, as written: each starts a word, or follows a particle or an
    ending inside one ("저녁엔두부요리" → 두부요리), and is given twice, cut where Kiwi's particle or ending starts
    (두부예요 → 두부) and whole to the word's end (for a particle Kiwi read into the noun: 게로, 굴과). A stretch that
    starts with a verb, an adverb or an ending is none (맛있게, 게다가, 밀면 as "if you roll"); 것 written 게 is the
    noun 게 (crab) unless a modifier ending comes before it (가벼운 게 = 가벼운 것이). A root (XR) counts only as a whole
    word (면 어때요?), never split (빵빵하게). Each stem comes with whether it must be a word as it stands."""
    tokens = kiwi().tokenize(text)
    stems: list[tuple[str, bool]] = []
    for i, token in enumerate(tokens):
        word_end = _word_end(text, token.start)
        starts_word = i == 0 or token.start == 0 or text[token.start - 1].isspace()
        after_particle = i > 0 and tokens[i - 1].tag[0] in "JE" and tokens[i - 1].start < token.start
        inner_noun = token.tag in NOUN_TAGS and token.len > 1  # 막/MAG + 국수: a noun of its own inside a word
        root = token.tag.startswith("XR")
        if not (starts_word or after_particle or inner_noun) or not (root or _noun_like(tokens, i)):
            continue
        cut = next((t.start for t in tokens[i + 1:] if (t.start < word_end and t.tag[0] in "JE") or t.tag in _CUT_TAGS),
                   word_end)
        whole = text[token.start:word_end].rstrip(_PUNCTUATION)
        stems += [(s, root) for s in dict.fromkeys((text[token.start:min(cut, word_end)], whole)) if s]
    return tuple(stems)


_CUT_TAGS = frozenset({"VCP", "VCN", "XSV", "XSA"})
_PUNCTUATION = ".,!?~…·'\")]"


def _word_end(text: str, position: int) -> int:
    end = position
    while end < len(text) and not text[end].isspace():
        end += 1
    return end


def _noun_like(tokens: list, i: int) -> bool:
    tag = tokens[i].tag.split("-")[0]
    if tag in NOUN_TAGS or tag in ("NR", "XPN", "SL", "IC", "MM", "NP"):  # not XR: 빵빵(하게) is no 빵
        return True
    if tag == "NNB":  # 게 read as 것 (게 어때요?), unless it is 것 after a modifier ending (맛있는 게)
        return i == 0 or tokens[i - 1].tag != "ETM"
    return False


def _ending_in(form: str, carried: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    bodies = [form, *(form[: -len(p)] for p in PARTICLE_ENDS if form.endswith(p) and len(form) > len(p))]
    for body in bodies:
        for start in range(1, len(body) - 1):
            if body[start:] in carried:
                return (body[start:],)
    return ()


@lru_cache(maxsize=8192)
def _segments_cached(form: str, pieces: frozenset[str], first: bool) -> tuple[str, ...] | None:
    if not form:
        return ()
    if not first and form in PARTICLE_ENDS:  # only at the end, and never alone
        return (form,)
    for end in range(len(form), 0, -1):  # the longest first piece that lets the rest split too
        head = form[:end]
        if head in pieces:
            rest = _segments_cached(form[end:], pieces, False)
            if rest is not None:
                return (head, *rest)
    return None


def _segments(form: str, pieces: frozenset[str]) -> tuple[str, ...] | None:
    return _segments_cached(form, pieces, True) if len(form) <= 12 else None


def parse_rows(lines: Iterable[str], source: str) -> list[tuple[str, str]]:
    from model.food.dishes import ALLERGENS

    rows: list[tuple[str, str]] = []
    for where, _, (allergen, word, origin) in table_rows(lines, source, COLUMNS, IngredientsError):
        if allergen not in ALLERGENS:
            raise IngredientsError(f"{where}: {allergen!r} is not an allergen category ({' '.join(sorted(ALLERGENS))})")
        if not word or " " in word or not origin:
            raise IngredientsError(f"{where}: the word must be one word without spaces, and the source must be given")
        rows.append((allergen, word))
    return rows


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> AllergenIngredients:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return AllergenIngredients(parse_rows(f, path), source=path)
