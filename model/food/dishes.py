"""Dish catalog and dish extractor: which dishes does a text name?

The "다른 거" retry flow uses `DishCatalog.find` to notice when a regenerated answer still names a dish the user
turned down, so the extractor favours precision: a wrong hit costs a needless resample, a missed hit lets a rejected
dish through.

Data: data/dishes.csv (UTF-8, written by hand), columns `name,aliases,category,tags,allergens`; aliases, tags and
allergens are `|`-separated and may be empty.

Tag vocabulary (TAGS): 매운 안매운 차가운 따뜻한 국물 면 밥 고기 해산물 채식 디저트 음료 아침 점심 저녁 야식 해장 간식
술안주 다이어트 회복식 혼밥 배달 편의점 간단요리 여름 겨울 비오는날 모임 지역음식.

Allergen spelling (ALLERGENS): the names of the Korean labeling law (식품 등의 표시기준, 알레르기 유발물질), one spelling
each: 우유 달걀 밀 메밀 땅콩 대두 호두 잣 게 새우 오징어 고등어 조개류 복숭아 토마토 돼지고기 쇠고기 닭고기 아황산류.
The law writes 알류(가금류) for eggs; we write 달걀. Beef is 쇠고기, never 소고기. 조개류 covers 굴, 전복 and 홍합 as the law
does. Lookups also accept common synonyms (소고기, 계란, 난류, 갑각류 …), see ALLERGEN_SYNONYMS.

Matching rules (why each exists):
- Spaces are ignored inside a match ("김치 찌개" → 김치찌개): we match on a space-stripped copy and map positions back.
- At each position the longest alias wins, so 김치볶음밥 is not read as 김치 or 볶음밥, and 비빔냉면 not as 냉면.
- Anything may follow a name inside a word (particles: 김치찌개는/를/나, or compounds: 김치찌개집).
- No name is a single syllable (전, 국, 회 would fire inside 전혀, 한국, 회사); the loader refuses them.
- A match that spans a space must start a word, and what follows it in its last word must be empty or a particle.
  So "사과 자르기" is not 과자, "소 주문" not 소주, "떡 국물" not 떡국, and "김치 전에" (NOUN_LOOKALIKES) not 김치전.
- STOP_WORDS are ordinary words that contain a dish name (콜라겐, 체육회); inside one word they hide the dish.
- WORD_START_ONLY: 라면 is also the conditional ending -라면 (저라면, 김치찌개라면), so bare 라면 must start a word.
- VERB_LOOKALIKES: 밀면 is also "if you roll" (반죽을 밀면, 얇게 밀면), so it does not count after a word that ends
  the way an object or an adverb does.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from model.food.table import table_rows

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "dishes.csv"
COLUMNS = ("name", "aliases", "category", "tags", "allergens")

TAGS = frozenset(
    "매운 안매운 차가운 따뜻한 국물 면 밥 고기 해산물 채식 디저트 음료 아침 점심 저녁 야식 해장 간식 술안주 다이어트 "
    "회복식 혼밥 배달 편의점 간단요리 여름 겨울 비오는날 모임 지역음식".split()
)
ALLERGENS = frozenset(
    "우유 달걀 밀 메밀 땅콩 대두 호두 잣 게 새우 오징어 고등어 조개류 복숭아 토마토 돼지고기 쇠고기 닭고기 아황산류".split()
)
# Words people use for the labeling-law names; a group word (갑각류) stands for several allergens.
ALLERGEN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "소고기": ("쇠고기",),
    "계란": ("달걀",),
    "난류": ("달걀",),
    "알류": ("달걀",),
    "콩": ("대두",),
    "밀가루": ("밀",),
    "갑각류": ("게", "새우"),
    "조개": ("조개류",),
    "굴": ("조개류",),
    "전복": ("조개류",),
    "홍합": ("조개류",),
    "돼지": ("돼지고기",),
    "닭": ("닭고기",),
    "아황산": ("아황산류",),
}

# one-syllable pieces that, written apart and followed by a particle, are ordinary words: "김치 전에" (before kimchi)
NOUN_LOOKALIKES = frozenset({"전"})
STOP_WORDS = ("콜라겐", "콜라비", "소주제", "체육회", "무채색", "밀면서", "수정과정")
WORD_START_ONLY = frozenset({"라면"})
# name -> last syllables of the previous word after which the name reads as a verb
VERB_LOOKALIKES: dict[str, str] = {"밀면": "을를게로"}
# What may follow a name that was written with a space inside it ("김치 찌개를"); startswith, so "이" covers 이랑/이나.
PARTICLES = (
    "은", "는", "이", "가", "을", "를", "과", "와", "랑", "하고", "에", "의", "도", "만", "나", "든", "로", "으로",
    "요", "야", "예요", "입니", "인", "지", "죠", "까지", "부터", "보다", "처럼", "같", "마저", "뿐", "밖에",
    "집", "맛집", "전문", "한", "류", "세트", "정식", "곱빼기",
)  # fmt: skip

_WORD = re.compile(r"\S+")


class CatalogError(ValueError):
    """The dish catalog file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Dish:
    name: str
    aliases: tuple[str, ...] = ()
    category: str = ""
    tags: tuple[str, ...] = ()
    allergens: tuple[str, ...] = ()

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True, slots=True)
class Mention:
    dish: Dish
    start: int  # offsets into the (NFC-normalised) text
    end: int
    surface: str  # the text as written, spaces included


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    dish: Dish | None  # None: a stop word
    word_start_only: bool = False
    verb_after: str = ""  # last syllables of a previous word that make this name a verb


def normalize(text: str) -> str:
    """The matching key of a spelling: NFC, no whitespace, lower case (for names like LA갈비)."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return "".join(text.split()).lower()


def _is_hangul(ch: str) -> bool:
    return "가" <= ch <= "힣"


class DishCatalog:
    def __init__(self, dishes: Iterable[Dish], source: str = "<memory>") -> None:
        self.source = source
        self.dishes: tuple[Dish, ...] = tuple(dishes)
        self._by_key: dict[str, Dish] = {}
        for dish in self.dishes:
            for spelling in dish.spellings:
                key = normalize(spelling)
                if len(key) < 2:
                    raise CatalogError(
                        f"{source}: {dish.name}: spelling {spelling!r} is shorter than two characters; "
                        "one-syllable names fire inside ordinary words, so write the full dish name"
                    )
                other = self._by_key.get(key)
                if other is not None and other is not dish:
                    raise CatalogError(
                        f"{source}: {spelling!r} names both {other.name} and {dish.name}; keep it on one dish only"
                    )
                self._by_key[key] = dish
        self._index = self._build_index()

    # ---- loading -------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> DishCatalog:
        """The catalog in `path` (default: the repo's data/dishes.csv), parsed once per file version."""
        path = Path(path) if path is not None else DEFAULT_PATH
        try:
            stat = path.resolve().stat()
        except FileNotFoundError:
            raise CatalogError(f"dish catalog not found: {path}; restore data/dishes.csv or pass its path") from None
        return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)

    # ---- extraction ----------------------------------------------------------------------------------------------
    def mentions(self, text: str) -> list[Mention]:
        """Every dish mention in `text`, left to right, repeats included."""
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        lowered = text.lower()
        if len(lowered) != len(text):  # a few non-Korean letters grow when lowered; keep offsets exact instead
            lowered = text
        pieces: list[str] = []
        pos: list[int] = []  # compact index -> index in text
        starts: list[int] = []  # compact indices where a whitespace-separated word starts
        for m in _WORD.finditer(lowered):
            starts.append(len(pos))
            pieces.append(m.group())
            pos.extend(range(m.start(), m.end()))
        compact = "".join(pieces)
        n = len(compact)
        word_start = bytearray(n + 1)
        for s in starts:
            word_start[s] = 1
        word_start[n] = 1

        found: list[Mention] = []
        # one dict probe per position on its first two characters (every key has at least two); most miss
        buckets = list(map(self._index.get, map(operator.add, compact, compact[1:])))
        free = 0  # the first position not yet covered by an accepted match
        for i, candidates in enumerate(buckets):
            if candidates is None or i < free:
                continue
            for entry in candidates:  # longest first
                end = i + len(entry.key)
                if compact.startswith(entry.key, i) and self._accept(entry, compact, word_start, i, end):
                    if entry.dish is not None:
                        start, stop = pos[i], pos[end - 1] + 1
                        found.append(Mention(entry.dish, start, stop, text[start:stop]))
                    free = end
                    break
        return found

    @staticmethod
    def _accept(entry: _Entry, compact: str, word_start: bytearray, i: int, end: int) -> bool:
        at_boundary = word_start[i] or i == 0 or not _is_hangul(compact[i - 1])
        last_space = word_start.rfind(1, i + 1, end)  # start of the last word the match reaches into
        if last_space != -1:  # written with spaces inside
            if entry.dish is None or not at_boundary:
                return False
            rest_end = end  # the Hangul that follows the match inside its last word
            while not word_start[rest_end] and _is_hangul(compact[rest_end]):
                rest_end += 1
            rest = compact[end:rest_end]
            if rest and (not rest.startswith(PARTICLES) or compact[last_space:end] in NOUN_LOOKALIKES):
                return False
        if entry.word_start_only and not at_boundary:
            return False
        return not (entry.verb_after and word_start[i] and i > 0 and compact[i - 1] in entry.verb_after)

    def find(self, text: str) -> list[Dish]:
        """Dishes named in `text`, in order of first appearance, each once."""
        seen: dict[str, Dish] = {}
        for mention in self.mentions(text):
            seen.setdefault(mention.dish.name, mention.dish)
        return list(seen.values())

    def names_in(self, text: str) -> list[str]:
        return [dish.name for dish in self.find(text)]

    def rejected_in(self, text: str, rejected: Iterable[str | Dish]) -> list[Dish]:
        """Dishes in `text` that are among `rejected` (names, aliases or Dish objects); unknown names are ignored."""
        wanted = set()
        for item in rejected:
            dish = item if isinstance(item, Dish) else self.get(item)
            if dish is not None:
                wanted.add(dish.name)
        return [dish for dish in self.find(text) if dish.name in wanted]

    # ---- lookups -------------------------------------------------------------------------------------------------
    def get(self, name_or_alias: str) -> Dish | None:
        return self._by_key.get(normalize(name_or_alias))

    def __getitem__(self, name_or_alias: str) -> Dish:
        dish = self.get(name_or_alias)
        if dish is None:
            raise KeyError(f"{name_or_alias!r} is not in the dish catalog ({self.source})")
        return dish

    def __contains__(self, name_or_alias: object) -> bool:
        return isinstance(name_or_alias, str) and self.get(name_or_alias) is not None

    def __iter__(self) -> Iterator[Dish]:
        return iter(self.dishes)

    def __len__(self) -> int:
        return len(self.dishes)

    def with_tags(self, *tags: str) -> list[Dish]:
        """Dishes that carry every one of `tags`."""
        unknown = set(tags) - TAGS
        if unknown:
            raise ValueError(f"unknown tag(s) {sorted(unknown)}; choose from {sorted(TAGS)}")
        return [d for d in self.dishes if all(t in d.tags for t in tags)]

    def in_category(self, category: str) -> list[Dish]:
        return [d for d in self.dishes if d.category == category]

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(d.category for d in self.dishes))

    def with_allergen(self, allergen: str) -> list[Dish]:
        """Dishes that (in the common recipe) contain `allergen`; synonyms such as 소고기 or 갑각류 work."""
        names = set(resolve_allergen(allergen))
        return [d for d in self.dishes if names.intersection(d.allergens)]

    def free_of(self, *allergens: str) -> list[Dish]:
        """Dishes whose common recipe contains none of `allergens`."""
        names = {a for allergen in allergens for a in resolve_allergen(allergen)}
        return [d for d in self.dishes if not names.intersection(d.allergens)]

    # ---- internals -----------------------------------------------------------------------------------------------
    def _build_index(self) -> dict[str, list[_Entry]]:
        entries = [_Entry(normalize(w), None) for w in STOP_WORDS]
        for key, dish in self._by_key.items():
            entries.append(_Entry(key, dish, key in WORD_START_ONLY, VERB_LOOKALIKES.get(key, "")))
        index: dict[str, list[_Entry]] = {}
        for entry in sorted(entries, key=lambda e: -len(e.key)):
            index.setdefault(entry.key[:2], []).append(entry)
        return index


def resolve_allergen(allergen: str) -> tuple[str, ...]:
    allergen = allergen.strip()
    if allergen in ALLERGENS:
        return (allergen,)
    if allergen in ALLERGEN_SYNONYMS:
        return ALLERGEN_SYNONYMS[allergen]
    raise ValueError(f"unknown allergen {allergen!r}; choose from {sorted(ALLERGENS)} or {sorted(ALLERGEN_SYNONYMS)}")


def _split(field: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in field.split("|") if part.strip())


def parse_rows(lines: Iterable[str], source: str) -> list[Dish]:
    """Dishes from CSV lines; a CatalogError names `source` and the line of the first problem."""
    dishes: list[Dish] = []
    line_of: dict[str, int] = {}
    hint = "fields are |-separated, never comma-separated"
    for where, line, (name, aliases, category, tags, allergens) in table_rows(lines, source, COLUMNS, CatalogError,
                                                                              hint):
        if not name:
            raise CatalogError(f"{where}: the name is empty")
        if not category or len(category.split()) != 1:
            raise CatalogError(f"{where}: {name}: the category must be one word, got {category!r}")
        dish = Dish(name, _split(aliases), category, _split(tags), _split(allergens))
        if bad := sorted(set(dish.tags) - TAGS):
            raise CatalogError(f"{where}: {name}: unknown tag(s) {bad}; allowed: {' '.join(sorted(TAGS))}")
        if bad := sorted(set(dish.allergens) - ALLERGENS):
            raise CatalogError(f"{where}: {name}: unknown allergen(s) {bad}; allowed: {' '.join(sorted(ALLERGENS))}")
        for spelling in dish.spellings:
            key = normalize(spelling)
            if key in line_of and line_of[key] != line:
                raise CatalogError(
                    f"{where}: {name}: {spelling!r} is already used on line {line_of[key]}; "
                    "a spelling may name one dish only"
                )
            line_of[key] = line
        dishes.append(dish)
    return dishes


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> DishCatalog:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            dishes = parse_rows(f, path)
    except UnicodeDecodeError as e:
        raise CatalogError(f"{path}: not UTF-8 ({e}); save the catalog as UTF-8") from None
    return DishCatalog(dishes, source=path)

