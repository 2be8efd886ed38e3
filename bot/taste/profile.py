"""A person's taste: allergies, diet, dislikes and likes, and which catalog dishes each of them rules out.

`TasteItem` is one remembered fact, `TasteProfile` a user's set of them. `TasteRules` turns a profile into bans on
catalog dishes (bot/avoidance.py): an allergy bans every dish whose common recipe carries the allergen, as a
guarantee; a diet or a dislike bans the dishes known to conflict (catalog tags, allergens, categories and the
ingredient words of dish names), softly. Reading statements ("나 새우 알레르기 있어") is bot/taste_parse.py; storing
profiles is bot/taste_store.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from model.food.dishes import ALLERGEN_SYNONYMS, ALLERGENS, TAGS, Dish, DishCatalog

# The labelling law's order (식품 등의 표시기준), which is how /taste lists the allergen buttons.
ALLERGEN_ORDER = (
    "달걀", "우유", "메밀", "땅콩", "대두", "밀", "고등어", "게", "새우", "돼지고기",
    "복숭아", "토마토", "아황산류", "호두", "닭고기", "쇠고기", "오징어", "조개류", "잣",
)  # fmt: skip
assert set(ALLERGEN_ORDER) == ALLERGENS
MEAT = frozenset({"돼지고기", "쇠고기", "닭고기"})
SEAFOOD = frozenset({"새우", "게", "오징어", "고등어", "조개류"})
# Words people use for several allergen categories at once, on top of model.dishes.ALLERGEN_SYNONYMS.
ALLERGEN_GROUPS: dict[str, tuple[str, ...]] = {
    "해산물": tuple(sorted(SEAFOOD)),
    "어패류": tuple(sorted(SEAFOOD)),
    "견과류": ("땅콩", "호두", "잣"),
    "견과": ("땅콩", "호두", "잣"),
    "생선": ("고등어",),
    "등푸른생선": ("고등어",),
    "유제품": ("우유",),
    "글루텐": ("밀",),
    "땅콩버터": ("땅콩",),
    "아황산염": ("아황산류",),
    "메밀가루": ("메밀",),
}
KINDS = ("allergy", "diet", "dislike", "like")
TARGETS = ("allergen", "diet", "dish", "ingredient", "tag", "category")
TAG_LABELS = {"매운": "매운 음식", "국물": "국물 요리", "면": "면 요리", "차가운": "차가운 음식",
              "따뜻한": "따뜻한 음식", "밥": "밥 요리", "안매운": "안 매운 음식"}


@dataclass(frozen=True)
class Diet:
    code: str  # also what callback data carries: short
    label: str  # /taste and the prompt
    remember: str  # "… 기억해 둘까요?" completes it


DIETS: dict[str, Diet] = {d.code: d for d in (
    Diet("veg", "채식", "채식 중이라고"),
    Diet("vegan", "비건(완전 채식)", "비건이라고"),
    Diet("nopork", "돼지고기 안 먹음", "돼지고기는 안 드신다고"),
    Diet("nobeef", "소고기 안 먹음", "소고기는 안 드신다고"),
    Diet("light", "다이어트(가벼운 음식)", "다이어트 중이라고"),
)}


def allergens_of(word: str) -> tuple[str, ...]:
    """The allergen categories a word stands for ("갑각류" → 게, 새우), or () for a word that is none."""
    word = word.replace(" ", "")
    if word in ALLERGENS:
        return (word,)
    return ALLERGEN_SYNONYMS.get(word) or ALLERGEN_GROUPS.get(word) or ()


@dataclass(frozen=True)
class TasteItem:
    kind: str  # allergy | diet | dislike | like
    target: str  # allergen | diet | dish | ingredient | tag | category
    value: str  # the allergen category, the diet code, the dish's catalog name, the ingredient word, the tag …

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.target not in TARGETS:
            raise ValueError(f"not a taste item: {self.kind}/{self.target}/{self.value}")

    @property
    def label(self) -> str:
        if self.target == "diet":
            return DIETS[self.value].label if self.value in DIETS else self.value
        if self.target == "tag":
            return TAG_LABELS.get(self.value, self.value)
        return self.value

    @property
    def about(self) -> tuple[str, str]:
        """What the item is about, whatever the feeling: a like and a dislike of one thing exclude each other."""
        return self.target, self.value


def allergy(name: str) -> TasteItem:
    return TasteItem("allergy", "allergen", name)


def diet(code: str) -> TasteItem:
    return TasteItem("diet", "diet", code)


@dataclass(frozen=True)
class TasteProfile:
    items: tuple[TasteItem, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.items)

    def of(self, kind: str) -> tuple[TasteItem, ...]:
        return tuple(i for i in self.items if i.kind == kind)

    @property
    def allergies(self) -> tuple[str, ...]:
        mine = {i.value for i in self.of("allergy")}
        return tuple(a for a in ALLERGEN_ORDER if a in mine)

    @property
    def diets(self) -> tuple[str, ...]:
        return tuple(i.value for i in self.of("diet"))

    def new(self, items: Iterable[TasteItem]) -> tuple[TasteItem, ...]:
        """The items not remembered yet, each once."""
        return tuple(i for i in dict.fromkeys(items) if i not in self.items)

    def with_items(self, items: Iterable[TasteItem]) -> TasteProfile:
        """This profile plus `items`; a like replaces a dislike of the same thing, and the other way round."""
        kept = list(self.items)
        for item in items:
            if item in kept:
                continue
            if item.kind in ("like", "dislike"):
                kept = [k for k in kept if not (k.kind in ("like", "dislike") and k.about == item.about)]
            kept.append(item)
        return TasteProfile(tuple(kept))

    def prompt_note(self) -> str:
        """The lines of the prompt's context that tell the model about this person."""
        lines = []
        if self.allergies:
            lines.append(f"알레르기: {', '.join(self.allergies)}. 이 재료가 든 메뉴는 절대 추천하지 마세요.")
        for kind, title in (("diet", "식단"), ("dislike", "싫어하는 것"), ("like", "좋아하는 것")):
            labels = [i.label for i in self.of(kind)]
            if labels:
                lines.append(f"{title}: {', '.join(labels)}.")
        return "\n".join(lines)


@dataclass(frozen=True)
class Conflict:
    dish: str
    reason: str  # "allergy:새우", "diet:veg", "dislike:ingredient:오이"
    guarantee: bool


class TasteRules:
    """Which catalog dishes each taste item rules out. `ingredients` maps an ingredient word to the dishes whose
    names contain it as a word (built from kiwipiepy morphemes in bot/taste_parse.py)."""

    def __init__(self, catalog: DishCatalog, ingredients: Mapping[str, frozenset[str]] | None = None) -> None:
        self.catalog = catalog
        self.ingredients = dict(ingredients or {})
        self._cache: dict[TasteItem, frozenset[str]] = {}

    def dishes_for(self, item: TasteItem) -> frozenset[str]:
        found = self._cache.get(item)
        if found is None:
            found = frozenset(d.name for d in self._dishes_for(item))
            self._cache[item] = found
        return found

    def _dishes_for(self, item: TasteItem) -> Iterable[Dish]:
        catalog, value = self.catalog, item.value
        if item.target == "allergen":
            return catalog.with_allergen(value)
        if item.target == "diet":
            return [d for d in catalog if diet_conflict(value, d)]
        if item.target == "dish":
            dish = catalog.get(value)
            return [dish] if dish is not None else []
        if item.target == "tag":
            return [d for d in catalog if value in d.tags or d.category == value]
        if item.target == "category":
            return catalog.in_category(value)
        # an ingredient: dishes whose names hold the word, and for an allergen word every dish carrying it
        named = self.ingredients.get(value, frozenset())
        carrying = set(allergens_of(value))
        return [d for d in catalog if d.name in named or carrying.intersection(d.allergens)]

    def conflicts(self, profile: TasteProfile) -> list[Conflict]:
        """Every dish the profile rules out, with why; allergies first, and they are guarantees."""
        found = []
        for item in sorted(profile.items, key=lambda i: KINDS.index(i.kind)):
            if item.kind == "like":
                continue
            reason = f"{item.kind}:{item.value}" if item.kind != "dislike" else f"dislike:{item.target}:{item.value}"
            for dish in sorted(self.dishes_for(item)):
                found.append(Conflict(dish, reason, guarantee=item.kind == "allergy"))
        return found

    def carries(self, dish_name: str, allergens: Iterable[str]) -> list[str]:
        """The allergens of `allergens` that the dish carries (its common recipe, as the catalog lists it)."""
        dish = self.catalog.get(dish_name)
        wanted = set(allergens)
        return [a for a in dish.allergens if a in wanted] if dish is not None else []


def diet_conflict(code: str, dish: Dish) -> bool:
    """Does a dish conflict with a diet, as far as the catalog's tags and allergens tell?"""
    allergens, tags = set(dish.allergens), set(dish.tags)
    if code in ("veg", "vegan"):
        animal = bool(tags & {"고기", "해산물"} or allergens & (MEAT | SEAFOOD)) and "채식" not in tags
        return animal or (code == "vegan" and bool(allergens & {"달걀", "우유"}))
    if code == "nopork":
        return "돼지고기" in allergens
    if code == "nobeef":
        return "쇠고기" in allergens
    if code == "light":
        return bool(tags & {"디저트", "야식"}) and "다이어트" not in tags
    return False


def group_words(catalog: DishCatalog) -> dict[str, str]:
    """Words that name a group of dishes: a tag ("국물") or a category ("중식"), as the target they resolve to."""
    words = {category: "category" for category in catalog.categories}
    words.update({tag: "tag" for tag in TAGS})
    return words
