"""Reading taste statements with kiwipiepy: what is remembered, what is not, and whether a question comes with it."""

from __future__ import annotations

import pytest

from bot.korean import with_particle
from bot.taste import replies as taste_text
from bot.taste.parse import TasteReader
from bot.taste.profile import ALLERGEN_ORDER, TasteItem, TasteProfile, TasteRules, allergy, diet
from model import DishCatalog


@pytest.fixture(scope="module")
def reader() -> TasteReader:
    return TasteReader.load(DishCatalog.load())


def dislike(target: str, value: str) -> TasteItem:
    return TasteItem("dislike", target, value)


def like(target: str, value: str) -> TasteItem:
    return TasteItem("like", target, value)


STATEMENTS = [
    ("나 새우 알레르기 있어", [allergy("새우")], False),
    ("나 새우 알레르기 있어. 해산물 빼고 추천해줘", [allergy("새우")], True),
    ("오이 싫어해", [dislike("ingredient", "오이")], False),
    ("요즘 채식 중이야", [diet("veg")], False),
    ("돼지고기는 안 먹어", [diet("nopork")], False),
    ("새우랑 게 알레르기가 있는데 저녁 뭐 먹지?", [allergy("새우"), allergy("게")], True),
    ("갑각류 알레르기예요", [allergy("게"), allergy("새우")], False),
    ("땅콩 알러지 있음", [allergy("땅콩")], False),
    ("나 게 알레르기 있어", [allergy("게")], False),  # kiwi reads 나 게 as 나다 + -게: the whole word is a name
    ("나 계란 알레르기야", [allergy("달걀")], False),
    ("밀가루 알레르기가 있어요. 점심 메뉴 추천 부탁해요", [allergy("밀")], True),
    ("땅콩, 호두 알레르기", [allergy("땅콩"), allergy("호두")], False),
    ("매운 거 싫어", [dislike("tag", "매운")], False),
    ("나 매운 거 좋아하는데 뭐 먹을까", [like("tag", "매운")], True),
    ("오이는 별로야", [dislike("ingredient", "오이")], False),
    ("오이 별로 안 좋아해", [dislike("ingredient", "오이")], False),
    ("가지 못 먹어", [dislike("ingredient", "가지")], False),
    ("김치찌개 좋아해", [like("dish", "김치찌개")], False),
    ("새우튀김 좋아해", [like("dish", "새우튀김")], False),
    ("중식 싫어", [dislike("category", "중식")], False),
    ("국물 요리 좋아해", [like("tag", "국물")], False),
    ("다이어트 중이라 가벼운 거", [diet("light")], True),
    ("비건이에요", [diet("vegan")], False),
    ("저는 채식주의자입니다", [diet("veg")], False),
    ("채식하고 있어", [diet("veg")], False),
    ("소고기 안 먹어요", [diet("nobeef")], False),
    ("난 돼지고기 먹지 않아요", [diet("nopork")], False),
    # not eaten because of an allergy: the allergy, never the milder dislike (issue 23)
    ("새우 알레르기가 있어서 해산물은 못 먹어", [allergy(a) for a in ("새우", "게", "고등어", "오징어", "조개류")], False),
    ("나 새우 알레르기 있고 오이 싫어해", [allergy("새우"), dislike("ingredient", "오이")], False),
]

NOT_STATEMENTS = [
    "새우 알레르기 있으면 뭐 먹어야 해?",  # a condition
    "새우 알레르기 있는 사람도 먹을 수 있는 거 추천해줘",  # a modifier: someone with the allergy
    "친구가 새우 알레르기 있어",  # someone else
    "새우 알레르기 없어",  # a negation
    "너 오이 싫어해?",  # a question to the bot
    "오이 싫어하는 사람 많아?",
    "오늘은 매운 게 싫어",  # only for today
    "채식 안 해",
    "채식 메뉴 추천해줘",  # a request, not a fact about oneself
    "다이어트 식단 추천",
    "알레르기 유발 식품 알려줘",
    "매운 요리 추천해줘",
    "좋아하는 음식 추천해줘",
    "오이 빼고 추천해줘",  # for this answer only
    "싫어하는 음식 없어",
    "셀러리악 싫어",  # a name we do not know is not guessed at
    "비 오는 날 뭐 먹지",
]


@pytest.mark.parametrize(("text", "items", "asks"), STATEMENTS)
def test_statements_are_read_as_taste_items(reader: TasteReader, text: str, items: list[TasteItem],
                                            asks: bool) -> None:
    statement = reader.read(text)
    assert statement is not None, text
    assert list(statement.items) == items and statement.asks is asks


@pytest.mark.parametrize("text", NOT_STATEMENTS)
def test_questions_conditions_and_other_peoples_tastes_are_not_statements(reader: TasteReader, text: str) -> None:
    assert reader.read(text) is None


def test_ingredients_are_words_of_dish_names_not_substrings(reader: TasteReader) -> None:
    ingredients = reader.rules.ingredients
    assert {"파전", "해물파전"} <= ingredients["파"] and "파스타" not in ingredients["파"]
    assert {"오이냉국", "오이무침"} <= ingredients["오이"]
    assert "콩나물국밥" in ingredients["콩나물"] and "김치찌개" in ingredients["김치"]
    dishes = reader.rules.dishes_for(dislike("ingredient", "새우"))  # an allergen word: every dish that carries it
    assert "새우튀김" in dishes and "김치찌개" in dishes  # 김치찌개 carries 새우 (새우젓) in the catalog


def test_profile_rules_and_prompt_note() -> None:
    catalog = DishCatalog.load()
    rules = TasteRules(catalog)
    profile = TasteProfile((allergy("땅콩"), diet("veg"), dislike("category", "중식"), like("tag", "매운")))
    conflicts = rules.conflicts(profile)
    guaranteed = {c.dish for c in conflicts if c.guarantee}
    assert guaranteed == {d.name for d in catalog.with_allergen("땅콩")}
    soft = {c.dish for c in conflicts if not c.guarantee}
    assert "짜장면" in soft and "삼겹살" in soft and "파전" not in soft  # 중식; 고기 for 채식; a 채식 dish
    assert all(c.reason.startswith("allergy:") for c in conflicts if c.guarantee)
    note = profile.prompt_note()
    assert note.splitlines()[0] == "알레르기: 땅콩. 이 재료가 든 메뉴는 절대 추천하지 마세요."
    assert "식단: 채식." in note and "싫어하는 것: 중식." in note and "좋아하는 것: 매운 음식." in note
    assert profile.with_items([dislike("tag", "매운")]).of("like") == ()  # a dislike replaces the like


def test_copy_fits_the_words_and_names_no_dish(reader: TasteReader) -> None:
    assert taste_text.confirm_question([allergy("새우")]) == "새우 알레르기를 기억해 둘까요?"
    assert taste_text.confirm_question([dislike("ingredient", "오이")]) == "오이를 싫어하신다고 기억해 둘까요?"
    assert taste_text.confirm_question([like("dish", "김치찌개")]) == "김치찌개를 좋아하신다고 기억해 둘까요?"
    assert taste_text.confirm_question([dislike("ingredient", "당근")]).startswith("당근을 ")
    assert taste_text.confirm_question([diet("nopork")]) == "돼지고기는 안 드신다고 기억해 둘까요?"
    assert with_particle("떡볶이", "은") == "떡볶이는" and with_particle("중식", "은") == "중식은"
    catalog = DishCatalog.load()
    for allergen in ALLERGEN_ORDER:  # the lines a user with allergies may see instead of, or under, an answer
        for line in (taste_text.fallback([allergen], asked_for_it=True), taste_text.fallback([allergen], asked_for_it=False),
                     taste_text.check_ingredients([allergen]), taste_text.confirm_question([allergy(allergen)])):
            assert catalog.names_in(line) == [], line


@pytest.mark.parametrize(("text", "unsure"), [
    ("우유 먹으면 배 아파", ("우유",)),
    ("땅콩 먹으면 안 돼", ("땅콩",)),
    ("밀가루 먹으면 소화가 안 돼", ("밀",)),
])
def test_an_upset_body_is_asked_about_not_guessed(reader: TasteReader, text: str, unsure: tuple[str, ...]) -> None:
    statement = reader.read(text)
    assert statement is not None and statement.items == () and statement.unsure == unsure


@pytest.mark.parametrize("text", ["새우\x00 알레르기 있어", "새우\u200b알레르기\x07 있어", "\x00\x00나 새우 알레르기 있어\x1b"])
def test_control_characters_do_not_defeat_the_reader(reader: TasteReader, text: str) -> None:
    statement = reader.read(text)
    assert statement is not None and statement.items == (allergy("새우"),)
