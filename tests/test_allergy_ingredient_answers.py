"""The allergy guarantee down to the ingredient, through ConversationService on real SQLite with the real catalog
and ingredient table: an answer naming an ingredient word that carries one of the user's allergens is stopped while
it streams, resampled, and refused past the bound; one short check line at most."""

from __future__ import annotations

from pathlib import Path

import pytest
from bot_fixtures import fresh_db, rows, service_on
from fakes import FakeGenerator

from bot.taste import replies as taste_text
from bot.taste.profile import ALLERGEN_ORDER, allergy
from model import DishCatalog
from model.food.ingredients import AllergenIngredients

CATALOG = DishCatalog.load()
TABLE = AllergenIngredients.load()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


async def test_an_answer_naming_an_allergen_ingredient_is_resampled_and_never_shown(db: Path) -> None:
    gen = FakeGenerator(["두부 샐러드처럼 자극 없는 구이가 안전해요.", "샐러드 어때요? 가볍고 산뜻해요."])
    seen: list[str] = []

    async def partial(text: str) -> None:
        seen.append(text)

    async with service_on(db, gen, catalog=CATALOG) as service:
        await service.taste.remember(5, [allergy("대두")])
        answer = await service.reply(1, 5, "가벼운 저녁 추천해줘", on_partial=partial)
    assert answer.text == "샐러드 어때요? 가볍고 산뜻해요." and len(gen.requests) == 2
    assert not any(TABLE.find(text, ["대두"]) for text in seen)  # stopped before the preview showed 두부
    assert {"두부", "된장", "간장", "콩나물"} <= set(gen.requests[0].avoid)  # banned while sampling
    assert "콩" not in gen.requests[0].avoid  # one syllable: checked, not byte-banned (it would forbid 콩나물 too)


@pytest.mark.parametrize("allergen", ALLERGEN_ORDER)
async def test_every_allergen_each_of_its_words_past_the_bound_gets_the_fallback(db: Path, allergen: str) -> None:
    words = sorted(TABLE.words_for([allergen]))
    gen = FakeGenerator(lambda prompt, seed: f"오늘은 {words[seed % len(words)]}랑 곁들이면 좋아요.")
    async with service_on(db, gen, catalog=CATALOG, max_resamples=len(words)) as service:
        await service.taste.remember(5, [allergy(allergen)])
        answer = await service.reply(1, 5, "저녁 추천해줘")
    assert answer.fallback and answer.status == "failed"
    assert answer.text == taste_text.fallback([allergen], asked_for_it=False)
    assert rows(db, "SELECT text FROM turns WHERE role = 'assistant'") == [("",)]


async def test_a_question_naming_the_ingredient_is_told_why(db: Path) -> None:
    gen = FakeGenerator(["두부조림 어때요?"])
    async with service_on(db, gen, catalog=CATALOG, max_resamples=1) as service:
        await service.taste.remember(5, [allergy("대두")])
        answer = await service.reply(1, 5, "두부 요리 추천해줘")
    assert answer.fallback and answer.text == taste_text.fallback(["대두"], asked_for_it=True)


async def test_words_that_only_look_like_an_allergen_are_kept_at_once(db: Path) -> None:
    gen = FakeGenerator(["샐러드 어때요? 게다가 가볍게 맛있게 먹을 수 있어요."])
    async with service_on(db, gen, catalog=CATALOG) as service:
        await service.taste.remember(5, [allergy("게"), allergy("우유")])
        answer = await service.reply(1, 5, "가벼운 점심 추천해줘")
    assert answer.text.startswith("샐러드 어때요?") and len(gen.requests) == 1


async def test_one_short_caution_line_at_most(db: Path) -> None:
    gen = FakeGenerator(["따끈한 국물 요리가 좋겠어요.", "따끈한 국물 요리가 좋겠어요. 재료는 꼭 확인하세요."])
    async with service_on(db, gen, catalog=CATALOG, check_fit=False, max_resamples=0) as service:
        await service.taste.remember(5, list(map(allergy, ALLERGEN_ORDER)))
        every = await service.reply(1, 5, "추운 날 뭐 먹지")
        own = await service.reply(1, 5, "추운 날 뭐 먹지")
    words, suggestion, check = every.text.split("\n\n")
    assert words == "따끈한 국물 요리가 좋겠어요." and check == "※ 재료에 알레르기 성분이 들어 있지 않은지 꼭 확인해 주세요."
    assert suggestion == taste_text.safe_suggestion(every.dishes)  # named no dish: safe picks beside the words
    assert own.text.startswith("따끈한 국물 요리가 좋겠어요. 재료는 꼭 확인하세요.")  # its own caution: not a second
    assert own.text.count("확인") == 1


def _unsafe(dish: str, allergens: list[str]) -> bool:
    return bool(set(CATALOG[dish].allergens) & set(allergens)) or bool(TABLE.find(dish, allergens))


@pytest.mark.parametrize("allergen", ALLERGEN_ORDER)
async def test_an_answer_naming_no_dish_gets_safe_catalog_dishes_beside_it(db: Path, allergen: str) -> None:
    """An allergy never empties the answer: the model's words named no dish, so the catalog's picks that fit the
    question and carry none of the allergen (column or ingredient word) are offered, and "다른 거" turns them down."""
    gen = FakeGenerator(["오늘은 속이 편한 음식이 좋겠어요."])
    async with service_on(db, gen, catalog=CATALOG, check_fit=False, max_resamples=0) as service:
        await service.taste.remember(5, [allergy(allergen)])
        first = await service.reply(1, 5, "따뜻한 저녁 추천해줘")
        second = await service.retry(1, 5, first.turn_id)
    for answer in (first, second):
        assert answer.dishes and taste_text.safe_suggestion(answer.dishes) in answer.text
        assert not [d for d in answer.dishes if _unsafe(d, [allergen])], answer.dishes
        assert answer.text.count("※") == 1  # the model's own words still vouch for nothing: one check line
    assert not set(first.dishes) & set(second.dishes)  # turned down with the answer
    stored = [t for (t,) in rows(db, "SELECT text FROM turns WHERE role = 'assistant' ORDER BY id")]
    assert all(taste_text.safe_suggestion(a.dishes) in t for a, t in zip((first, second), stored, strict=True))


async def test_no_suggestion_when_the_model_named_a_dish_or_the_user_has_no_allergy(db: Path) -> None:
    gen = FakeGenerator(["샐러드 어때요?", "오늘은 속이 편한 음식이 좋겠어요."])
    async with service_on(db, gen, catalog=CATALOG, check_fit=False, max_resamples=0) as service:
        await service.taste.remember(5, [allergy("땅콩")])
        named = await service.reply(1, 5, "저녁 추천해줘")
        plain = await service.reply(1, 6, "저녁 추천해줘")
    assert named.text == "샐러드 어때요?" and named.dishes == ("샐러드",)
    assert plain.text == "오늘은 속이 편한 음식이 좋겠어요." and plain.dishes == ()


async def test_an_allergy_gets_safe_candidates_and_an_answer_with_no_dish_is_drawn_again(db: Path) -> None:
    gen = FakeGenerator(["속이 부드럽게 풀려요.", "삼계탕 어때요? 국물이 진해요."])
    async with service_on(db, gen, catalog=CATALOG) as service:
        await service.taste.remember(5, [allergy("밀"), allergy("대두")])
        answers = [await service.reply(1, 5, "국물 요리 추천해줘") for _ in range(8)]
        plain = await service.reply(1, 6, "국물 요리 추천해줘")
    assert answers[0].text == "삼계탕 어때요? 국물이 진해요."
    offered = set()
    for prompt in gen.prompts[:-1]:
        context = next(line for line in prompt.splitlines() if line.startswith("후보: "))
        offered |= set(context.removeprefix("후보: ").split(", "))
    dishes = [CATALOG[name] for name in offered]
    assert len(dishes) >= 6 and all("국물" in d.tags for d in dishes)  # they fit what was asked, and vary
    assert not any({"밀", "대두"} & set(d.allergens) or TABLE.find(d.name, ["밀", "대두"]) for d in dishes)
    assert "후보: " not in gen.prompts[-1] and plain.text == "삼계탕 어때요? 국물이 진해요."  # no allergy: as before


async def test_with_allergies_an_answer_naming_no_dish_is_drawn_again_without_them_kept(db: Path) -> None:
    calls: list[str] = []

    def model(prompt: str, seed: int) -> str:  # names no dish at first, then a candidate when it is offered one
        calls.append(prompt)
        return "삼계탕 어때요?" if "후보: " in prompt and len(calls) > 1 else "속이 편해져요."

    gen = FakeGenerator(model)
    async with service_on(db, gen, catalog=CATALOG, max_resamples=6) as service:
        await service.taste.remember(5, [allergy("땅콩")])
        allergic = await service.reply(1, 5, "오늘 뭐 먹을까?")
        asked = len(gen.requests)
        plain = await service.reply(1, 6, "오늘 뭐 먹을까?")
    assert allergic.dishes == ("삼계탕",) and asked == 2
    assert plain.text == "속이 편해져요." and len(gen.requests) == asked + 1
