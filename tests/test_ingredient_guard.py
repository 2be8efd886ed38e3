"""The allergy guarantee down to the ingredient word (model/food/ingredients.py, data/allergen_ingredients.csv).

A guarantee test: every allergen category × each of its ingredient words × the phrasings a model writes (particles,
spacing, inside a compound) must be caught; a single slip fails. Beside it, false alarms that substring matching
would raise (맛있게 is not 게, 우유부단 is not 우유) must not be.
"""

from __future__ import annotations

import pytest

from bot.korean import with_particle
from model.food.dishes import ALLERGENS
from model.food.ingredients import AllergenIngredients, IngredientsError, parse_rows

PARTICLES = ("을", "이", "은", "으로", "과", "도", "만", "처럼", "랑")
FRAMES = (
    "{w} 어때요?",
    "오늘은 {w} 들어간 요리 어때요?",
    "{p} 곁들이면 맛있어요.",
    "{w}볶음 어때요?",
    "{w} 샐러드처럼 가볍게 드세요.",
    "{w}국이 좋아요.",
    "저녁엔{w}요리 어때요",  # no spaces around it
)


@pytest.fixture(scope="module")
def table() -> AllergenIngredients:
    return AllergenIngredients.load()


def phrasings(word: str) -> list[str]:
    out = [f"{with_particle(word, p)} 좋아요." for p in PARTICLES]
    out += [frame.format(w=word, p=with_particle(word, "을")) for frame in FRAMES]
    return out


def test_every_category_has_words_with_sources(table):
    by_category: dict[str, int] = {}
    for cats in table.carried.values():
        for cat in cats:
            by_category[cat] = by_category.get(cat, 0) + 1
    assert set(by_category) == ALLERGENS
    assert min(by_category.values()) >= 3


def test_every_word_in_every_phrasing_is_caught(table):
    missed = []
    for word, cats in table.carried.items():
        for text in phrasings(word):
            hits = table.find(text, cats)
            if not any(h.word == word or set(cats) <= set(h.allergens) for h in hits):
                missed.append((cats, word, text))
    assert not missed, f"{len(missed)} slipped, e.g. {missed[:10]}"


@pytest.mark.parametrize(("text", "allergen"), [
    ("콩나물국 어때요?", "대두"), ("두부 샐러드처럼 자극 없는 구이가 안전해요", "대두"), ("간장게장 어때요", "게"),
    ("잣죽이 부드러워요", "잣"), ("게맛살 샐러드", "게"), ("유부초밥 어때요", "대두"), ("계란말이 좋아요", "달걀"),
    ("오징어채 볶음", "오징어"), ("굴소스로 볶아요", "조개류"), ("된장국 한 그릇", "대두"), ("콩국수 어때요", "밀"),
    ("치즈케이크 드세요", "우유"), ("생크림 케이크", "우유"), ("메밀국수 시원해요", "메밀"), ("땅콩버터 토스트", "땅콩"),
    ("닭가슴살 샐러드", "닭고기"), ("토마토소스 파스타", "토마토"), ("꽃게탕 어때요", "게"), ("생굴 드세요", "조개류"),
    ("새우젓으로 간해요", "새우"), ("삼겹살 구이", "돼지고기"), ("차돌박이 숙주볶음", "쇠고기"),
    ("순두부 어때요", "대두"), ("마파두부를 드세요", "대두"), ("닭칼국수 어때요", "밀"), ("막국수를 곁들이면", "밀"),
    ("두부두루치기도 드셔보세요", "대두"),
])
def test_compounds_kiwi_keeps_whole_are_caught(table, text, allergen):
    assert any(allergen in h.allergens for h in table.find(text, [allergen])), text


@pytest.mark.parametrize(("text", "allergen"), [
    ("맛있게 드세요", "게"), ("게다가 값도 싸요", "게"), ("우유부단한 저도 고르기 쉬워요", "우유"), ("밀당은 그만", "밀"),
    ("반죽을 얇게 밀면 돼요", "밀"), ("게임하면서 먹기 좋아요", "게"), ("국면이 바뀌었어요", "밀"), ("장면이 떠올라요", "밀"),
    ("면접 전에 가볍게 드세요", "밀"), ("완두콩밥 말고 현미밥", "대두"), ("그 집이 좋아요", "대두"), ("알아서 고르세요", "달걀"),
    ("먹으면 기분이 좋아져요", "밀"), ("빵빵하게 배불러요", "밀"), ("전혀 안 매워요", "조개류"), ("햄버거를 드세요", "돼지고기"), ("수유부도 먹어도 돼요", "대두"),
])
def test_words_that_only_look_like_ingredients_are_not_alarms(table, text, allergen):
    assert table.find(text, [allergen]) == [], text


def test_only_the_users_allergens_count(table):
    assert [h.word for h in table.find("두부와 치즈를 넣어요", ["우유"])] == ["치즈"]
    assert {h.word for h in table.find("간장으로 간해요", ["밀"])} == {"간장"}


def test_a_broken_table_names_file_and_line():
    with pytest.raises(IngredientsError, match="line 2"):
        parse_rows(["allergen,word,source", "콩,두부,레시피"], "x.csv")
    with pytest.raises(IngredientsError, match="source"):
        parse_rows(["allergen,word,source", "대두,두부,"], "x.csv")
