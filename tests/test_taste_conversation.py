"""Taste in ConversationService on real SQLite with the real dish catalog: statements confirmed before they are
remembered, allergies as a guarantee (an adversarial generator that names allergen dishes on purpose), soft diet and
dislikes, and variety across days."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bot_fixtures import all_turns, fresh_db, rows, service_on
from fakes import FakeGenerator

from bot.service.contract import TasteRefused
from bot.taste import replies as taste_text
from bot.taste.profile import ALLERGEN_ORDER, TasteItem, allergy, diet
from model import DishCatalog

CATALOG = DishCatalog.load()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


def carrying(text: str, allergens: set[str]) -> list[str]:
    """Catalog dishes named in `text` that carry one of `allergens`: what the guarantee says never to show."""
    return [d.name for d in CATALOG.find(text) if allergens & set(d.allergens)]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_statement_with_a_question_is_answered_at_once_and_remembered_only_after_yes(db: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    async with service_on(db, gen, catalog=CATALOG) as service:
        asked = await service.reply(1, 7, "나 새우 알레르기 있어. 해산물 빼고 추천해줘")
        assert asked.status == "ok" and asked.text == "비빔밥 어때요?" and len(gen.requests) == 1
        assert asked.confirm == "새우 알레르기를 기억해 둘까요?" and asked.proposal == (allergy("새우"),)
        assert not await service.taste.store.profile(7)
        choice = await service.settle_taste(1, 7, asked.question_turn_id, True)
        assert choice.text.startswith("기억했어요") and (await service.taste.store.profile(7)).allergies == ("새우",)
        assert choice.answer is None and len(gen.requests) == 1  # answered already
        prompt, avoid = gen.prompts[0], set(gen.requests[0].avoid)
        assert "알레르기: 새우" in prompt and prompt.count("해산물 빼고 추천해줘") == 1
        assert {"새우튀김", "새우 튀김", "김치찌개"} <= avoid  # every spelling of every dish carrying 새우
        again = await service.settle_taste(1, 7, asked.question_turn_id, True)  # a second press
        assert again.answer is None and again.text.startswith("이미 기억하고") and len(gen.requests) == 1
        known = await service.reply(1, 7, "나 새우 알레르기 있어")
        assert known.status == "noted" and len(gen.requests) == 1
    assert [t[1:4] for t in all_turns(db)][:2] == [("user", "나 새우 알레르기 있어. 해산물 빼고 추천해줘", "ok"),
                                                  ("assistant", "비빔밥 어때요?", "ok")]


async def test_declined_statement_is_not_remembered_but_shapes_that_one_answer(db: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    async with service_on(db, gen, catalog=CATALOG) as service:
        asked = await service.reply(1, 7, "오이 싫어하는데 점심 뭐 먹지?")
        assert asked.status == "ok" and asked.confirm == "오이를 싫어하신다고 기억해 둘까요?"
        choice = await service.settle_taste(1, 7, asked.question_turn_id, False)
        assert choice.text == taste_text.DECLINED_NO_QUESTION and choice.answer is None
        assert not await service.taste.store.profile(7)
        assert "싫어하는 것: 오이" in gen.prompts[0] and "오이냉국" in gen.requests[0].avoid
        plain = await service.reply(1, 7, "저녁은?")
        assert plain.status == "ok" and "오이" not in gen.prompts[1].split("### 질문: 저녁은?")[1]


async def test_a_statement_without_a_question_answers_nothing(db: Path) -> None:
    gen = FakeGenerator(["김치찌개 어때요?"])
    async with service_on(db, gen, catalog=CATALOG) as service:
        asked = await service.reply(1, 7, "요즘 채식 중이야")
        assert asked.text == "채식 중이라고 기억해 둘까요?"
        choice = await service.settle_taste(1, 7, asked.question_turn_id, True)
        assert choice.answer is None and gen.requests == []
        assert (await service.taste.store.profile(7)).diets == ("veg",)
        declined = await service.reply(1, 7, "돼지고기는 안 먹어")
        assert (await service.settle_taste(1, 7, declined.question_turn_id, False)).text == taste_text.DECLINED_NO_QUESTION


async def test_stale_foreign_and_forged_confirmations_change_nothing(db: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    async with service_on(db, gen, catalog=CATALOG) as service:
        asked = await service.reply(1, 7, "땅콩 알레르기 있는데 간식 추천해줘")
        other = await service.reply(1, 8, "점심 추천")
        for chat_id, user_id, turn_id in ((1, 8, asked.question_turn_id), (2, 7, asked.question_turn_id),
                                          (1, 7, 999_999), (1, 8, other.turn_id), (1, 8, other.question_turn_id)):
            with pytest.raises(TasteRefused):
                await service.settle_taste(chat_id, user_id, turn_id, True)
        assert not await service.taste.store.profile(7) and not await service.taste.store.profile(8)
        await service.reply(1, 7, "아니다, 저녁 추천해줘")  # a newer question: the old one is not answered any more
        generated = len(gen.requests)
        choice = await service.settle_taste(1, 7, asked.question_turn_id, True)
        assert choice.answer is None and (await service.taste.store.profile(7)).allergies == ("땅콩",)
        assert len(gen.requests) == generated


# --- the allergy guarantee ----------------------------------------------------------------------------------------


def adversary(allergens: set[str], safe_every: int = 0):
    """A generator that names dishes carrying the allergens in every way the catalog knows them: each spelling,
    with spaces inside, with particles, beside a safe dish, several at once. With `safe_every`, every n-th sample
    is safe, so resampling has something to find."""
    bad = [d for d in CATALOG if allergens & set(d.allergens)]
    safe = [d.name for d in CATALOG if not allergens & set(d.allergens)]
    calls = itertools.count()

    def answer(prompt: str, seed: int) -> str:
        n = next(calls)
        rng = random.Random(seed)
        if safe_every and n % safe_every == safe_every - 1:
            return f"{rng.choice(safe)} 어때요? 담백해서 좋아요."
        dish = rng.choice(bad)
        spelling = rng.choice(dish.spellings)
        if len(spelling) > 2 and rng.random() < 0.3:
            cut = rng.randrange(1, len(spelling))
            spelling = f"{spelling[:cut]} {spelling[cut:]}"  # "새우 튀김": spaces inside a name
        forms = [f"{spelling} 어때요?", f"오늘은 {spelling}를 추천해요.", f"{rng.choice(safe)}도 좋고 {spelling}도 좋아요.",
                 f"{spelling}, {rng.choice(bad).name} 둘 다 맛있어요.", f"{spelling}이랑 {rng.choice(safe)}!"]
        return rng.choice(forms)

    return answer


@pytest.mark.parametrize("allergens", [{a} for a in ALLERGEN_ORDER] + [{"밀", "대두", "달걀"}])
async def test_no_answer_ever_names_a_dish_with_the_users_allergen(db: Path, allergens: set[str]) -> None:
    """The guarantee as a guarantee: against a generator that tries to name allergen dishes, no answer, no retry
    and no streamed preview may name one. The test fails if a single case slips through."""
    gen = FakeGenerator(adversary(allergens, safe_every=5), chunk=3)
    shown: list[str] = []

    async def on_partial(text: str) -> None:
        shown.append(text)

    async with service_on(db, gen, catalog=CATALOG) as service:
        await service.taste.remember(5, [allergy(a) for a in allergens])
        answers = []
        for i in range(6):
            answer = await service.reply(1, 5, f"{i}번째 질문: 점심 추천해줘", on_partial=on_partial)
            answers.append(answer)
            if answer.status == "ok":
                answers.append(await service.retry(1, 5, answer.turn_id, on_partial=on_partial))
    leaks = [(t, carrying(t, allergens)) for t in [a.text for a in answers] + shown if carrying(t, allergens)]
    assert leaks == []
    assert any(a.status == "ok" and a.dishes for a in answers)  # the safe samples got through
    assert any(a.fallback for a in answers)  # and some answers ran out of samples
    stored = [r[0] for r in rows(db, "SELECT text FROM turns WHERE role = 'assistant' AND status != 'failed'")]
    assert stored and not [t for t in stored if carrying(t, allergens)]


async def test_past_the_bound_the_user_gets_a_fallback_never_the_violating_answer(db: Path) -> None:
    gen = FakeGenerator(adversary({"새우"}))  # never safe
    async with service_on(db, gen, catalog=CATALOG, max_resamples=2) as service:
        await service.taste.remember(5, [allergy("새우")])
        answer = await service.reply(1, 5, "저녁 추천해줘")
        asked = await service.reply(1, 5, "새우튀김 추천해줘")
    assert answer.status == "failed" and answer.fallback and len(gen.requests) == 2 * 3
    assert answer.text == taste_text.fallback(["새우"], asked_for_it=False) and carrying(answer.text, {"새우"}) == []
    assert asked.text == taste_text.fallback(["새우"], asked_for_it=True)
    failed = rows(db, "SELECT status, text, error, attempts FROM turns WHERE role = 'assistant'")
    assert all(r[0] == "failed" and r[1] == "" and r[2].startswith("allergy guarantee") and r[3] == 3 for r in failed)


async def test_an_answer_naming_no_catalog_dish_asks_to_check_ingredients(db: Path) -> None:
    gen = FakeGenerator(["따끈한 국물 요리가 좋겠어요."])
    async with service_on(db, gen, catalog=CATALOG) as service:
        await service.taste.remember(5, [allergy("밀"), allergy("게")])
        answer = await service.reply(1, 5, "추운 날 뭐 먹지")
        await service.taste.remember(6, [diet("veg")])
        no_allergy = await service.reply(1, 6, "추운 날 뭐 먹지")
    suggestion = taste_text.safe_suggestion(answer.dishes)  # the catalog's safe picks beside words naming none
    assert answer.dishes and not any({"밀", "게"} & set(CATALOG[d].allergens) for d in answer.dishes)
    assert answer.text == (f"따끈한 국물 요리가 좋겠어요.\n\n{suggestion}\n\n"
                           f"{taste_text.check_ingredients(['밀', '게'])}")
    assert no_allergy.text == "따끈한 국물 요리가 좋겠어요."
    stored = f"따끈한 국물 요리가 좋겠어요.\n\n{suggestion}"  # stored as shown, so "다른 거" turns the picks down too
    assert rows(db, "SELECT text FROM turns WHERE id = ?", answer.turn_id) == [(stored,)]


# --- soft steering and variety --------------------------------------------------------------------------------------


async def test_diet_and_dislikes_steer_softly_unless_the_question_names_the_dish(db: Path) -> None:
    gen = FakeGenerator(["삼겹살 어때요?", "짜장면 어때요?", "파전 어때요?", "삼겹살 먹고 싶으면 삼겹살이죠!"])
    async with service_on(db, gen, catalog=CATALOG) as service:
        await service.taste.remember(5, [diet("veg"), TasteItem("dislike", "category", "중식")])
        steered = await service.reply(1, 5, "저녁 추천해줘")
        asked = await service.reply(1, 5, "삼겹살 맛있게 먹는 법 알려줘")
    assert steered.text == "파전 어때요?" and len(gen.requests) == 4
    assert "식단: 채식." in gen.prompts[0] and "싫어하는 것: 중식." in gen.prompts[0]
    assert {"삼겹살", "짜장면"} <= set(gen.requests[0].avoid)
    assert asked.dishes == ("삼겹살",) and "삼겹살" not in gen.requests[-1].avoid


async def test_soft_bans_give_way_at_the_bound(db: Path) -> None:
    gen = FakeGenerator(["짜장면 어때요?"])
    async with service_on(db, gen, catalog=CATALOG, max_resamples=1) as service:
        await service.taste.remember(5, [TasteItem("dislike", "category", "중식")])
        answer = await service.reply(1, 5, "저녁 추천해줘")
    assert answer.status == "ok" and answer.text == "짜장면 어때요?" and len(gen.requests) == 2


async def test_a_dish_recommended_in_the_last_days_is_avoided_unless_asked(db: Path) -> None:
    clock = Clock()
    gen = FakeGenerator(["김치찌개 어때요?", "김치찌개 또?", "된장찌개 어때요?", "김치찌개 어때요?",
                         "김치찌개 끓이는 법은…", "김치찌개 어때요?"])
    async with service_on(db, gen, catalog=CATALOG, clock=clock) as service:
        first = await service.reply(1, 5, "점심 추천")
        clock.now += timedelta(days=3)
        await service.reset(1, 5)  # a new conversation does not reset variety
        second = await service.reply(1, 5, "점심 추천")
        clock.now += timedelta(days=1)
        asked = await service.reply(1, 5, "김치찌개 끓이는 법 알려줘")
        clock.now += timedelta(days=7, hours=1)  # 김치찌개 was last named 7 days and an hour ago (asked for)
        later = await service.reply(1, 5, "점심 추천")
    assert first.dishes == ("김치찌개",) and second.text == "된장찌개 어때요?"
    assert "김치찌개" in gen.requests[1].avoid and "김치찌개" not in gen.requests[3].avoid
    assert asked.text == "김치찌개 어때요?"  # the question named it: no resample
    assert later.text == "김치찌개 끓이는 법은…" and len(gen.requests) == 5
    assert not {"김치찌개", "된장찌개"} & set(gen.requests[-1].avoid)  # both fell out of the 7-day window


async def test_variety_window_is_a_setting(db: Path) -> None:
    gen = FakeGenerator(["김치찌개 어때요?"])
    async with service_on(db, gen, catalog=CATALOG, variety_days=0) as service:
        await service.reply(1, 5, "점심")
        await service.reply(1, 5, "저녁")
    assert gen.requests[1].avoid == () and len(gen.requests) == 2


async def test_very_long_messages_are_answered_not_read_for_statements(db: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    async with service_on(db, gen, catalog=CATALOG) as service:
        answer = await service.reply(1, 7, "나 새우 알레르기 있어. " + "점심 추천해줘 " * 300)
        assert answer.status == "ok" and len(gen.requests) == 1 and not await service.taste.store.profile(7)


async def test_a_busy_generator_leaves_the_question_to_answer_on_the_next_press(db: Path) -> None:
    from bot.service.contract import ConversationBusy

    gen = FakeGenerator(["비빔밥 어때요?"], busy=True)
    async with service_on(db, gen, catalog=CATALOG) as service:
        asked = await service.reply(1, 7, "나 땅콩 알레르기 있는데 간식 추천해줘")
        assert asked.status == "ask"  # no answer at once while busy: the question comes first, the answer on 예
        with pytest.raises(ConversationBusy):
            await service.settle_taste(1, 7, asked.question_turn_id, True)
        assert (await service.taste.store.profile(7)).allergies == ("땅콩",)  # remembered all the same
        gen.busy = False
        again = await service.settle_taste(1, 7, asked.question_turn_id, True)
    assert again.answer is not None and again.answer.text == "비빔밥 어때요?"


async def test_the_variety_window_comes_from_the_settings(db: Path) -> None:
    from bot.service.runtime import build_service
    from bot.settings import SettingsError, load_settings
    from bot.store.history import Store

    settings = load_settings(env_file=None, variety_days=2.5, database_url=f"sqlite+aiosqlite:///{db}")
    async with Store(settings.database_url) as store:
        service = build_service(settings, store, FakeGenerator(), catalog=CATALOG)
        assert service.taste is not None and service.taste.variety_days == 2.5
    with pytest.raises(SettingsError, match="MECHURI_VARIETY_DAYS"):
        load_settings(env_file=None, variety_days=-1)
