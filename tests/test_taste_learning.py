"""Learning a dislike from what a user turns down (issue 23, part 4), on real SQLite with the real migrations, the
real catalog and the PTB Application against the fake Bot API: asked once, remembered only on a yes, never again."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from bot_fixtures import fresh_db, rows, service_on
from fakes import FakeGenerator
from tg_harness import telegram_bot

from bot.service.contract import TasteRefused
from bot.taste.learning import NO_TEXT, TurnDownLearner
from bot.taste.parse import TasteReader
from bot.taste.profile import TasteItem, TasteProfile
from bot.terminal.chat import MARKER, run_chat
from model import DishCatalog

CATALOG = DishCatalog.load()
SOUPS = ["된장찌개 어때요?", "청국장 어때요?", "비지찌개 어때요?", "비빔밥 어때요?"]
QUESTION = "국물 요리는 별로세요? 앞으로 덜 추천할까요?"
SOUP = TasteItem("dislike", "tag", "국물")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


def answers_of(gen: FakeGenerator):
    """Each answer in turn, whatever the request (resamples included)."""
    calls = iter(range(10_000))
    return lambda prompt, seed: SOUPS[min(next(calls), len(SOUPS) - 1)]


async def turn_down_soups(service, user_id: int = 7):
    answer = await service.reply(1, user_id, "점심 추천해줘")
    for _ in range(3):
        answer = await service.retry(1, user_id, answer.turn_id)
    return answer


async def test_three_turned_down_soups_ask_once_and_a_yes_remembers_a_dislike(db: Path) -> None:
    gen = FakeGenerator()
    gen.answers = answers_of(gen)
    async with service_on(db, gen, catalog=CATALOG) as service:
        answer = await turn_down_soups(service)
        assert answer.text == "비빔밥 어때요?" and answer.confirm == QUESTION and answer.proposal == (SOUP,)
        assert not await service.taste.store.profile(7)  # nothing remembered without a yes
        text = await service.settle_learned(7, answer.learn_id, True)
        assert text == "알겠어요, 앞으로 국물 요리는 덜 추천할게요. /taste 에서 언제든 지울 수 있어요."
        assert (await service.taste.store.profile(7)).items == (SOUP,)
        with pytest.raises(TasteRefused):  # a second press, or someone else's
            await service.settle_learned(7, answer.learn_id, True)
        with pytest.raises(TasteRefused):
            await service.settle_learned(8, answer.learn_id, True)


async def test_a_no_is_kept_and_never_asked_again(db: Path) -> None:
    gen = FakeGenerator()
    gen.answers = answers_of(gen)
    async with service_on(db, gen, catalog=CATALOG) as service:
        answer = await turn_down_soups(service)
        assert await service.settle_learned(7, answer.learn_id, False) == NO_TEXT
        gen.answers = lambda prompt, seed: "김치찌개 어때요?"
        for _ in range(3):  # more soups turned down: 국물 is not asked about again
            answer = await service.retry(1, 7, answer.turn_id)
            assert answer.confirm != QUESTION
        assert not await service.taste.store.profile(7)
    assert rows(db, "SELECT target, value, answer FROM taste_questions WHERE value = '국물'") == [("tag", "국물", "no")]


async def test_learning_off_asks_nothing(db: Path) -> None:
    gen = FakeGenerator()
    gen.answers = answers_of(gen)
    async with service_on(db, gen, catalog=CATALOG, learn_after=0) as service:
        assert (await turn_down_soups(service)).confirm is None


def test_the_learner_needs_a_shared_taste_not_a_shared_meal_time() -> None:
    reader = TasteReader.load(CATALOG)
    learner = TurnDownLearner(CATALOG, reader.rules.ingredients)
    mixed = [("비빔밥",), ("된장찌개",), ("떡볶이",), ("냉면",)]  # all 점심 dishes, no taste in common
    assert learner.propose(mixed, TasteProfile(), set()) is None
    soups = [("된장찌개",), ("청국장",), ("비지찌개",)]
    assert learner.propose(soups, TasteProfile(), set()).item == SOUP
    assert learner.propose(soups, TasteProfile((SOUP,)), set()).item != SOUP  # known already
    assert learner.propose(soups[:2], TasteProfile(), set()) is None  # not yet


async def test_the_question_in_telegram_and_in_the_terminal(tmp_path: Path, db: Path) -> None:
    gen = FakeGenerator()
    gen.answers = answers_of(gen)
    async with telegram_bot(tmp_path, gen, catalog=CATALOG) as h:
        await h.text(1, 11, "점심 추천해줘")
        for _ in range(3):
            answer = next(m for m in reversed(h.api.chat_messages(1)) if "다른 거" in str(m.get("reply_markup")))
            data = next(b["callback_data"] for row in answer["reply_markup"]["inline_keyboard"] for b in row
                        if b["callback_data"].startswith("retry:"))
            await h.press(1, 11, answer["message_id"], data)
        ask = h.last_message(1)
        assert ask["text"] == QUESTION
        yes = next(b["callback_data"] for row in ask["reply_markup"]["inline_keyboard"] for b in row
                   if b["text"].startswith("예"))
        await h.press(1, 11, ask["message_id"], yes)
        assert h.last_message(1)["text"].startswith("알겠어요, 앞으로 국물 요리는 덜 추천할게요.")
        await h.text(1, 11, "/taste")
        assert "• 싫어하는 것: 국물 요리" in h.last_message(1)["text"]
    assert rows(h.db, "SELECT kind, target, value FROM taste_items WHERE user_id = 11") == [("dislike", "tag", "국물")]

    terminal = FakeGenerator()
    terminal.answers = answers_of(terminal)
    out = io.StringIO()
    async with service_on(db, terminal, catalog=CATALOG) as service:
        assert await run_chat(service, ["점심 추천해줘", "/retry", "/retry", "/retry", "n"], out) == 0
        assert not await service.taste.store.profile(0)
    assert MARKER + QUESTION + " (y/N)" in out.getvalue() and MARKER + NO_TEXT in out.getvalue()


async def test_thumbs_down_count_and_ask_in_telegram(tmp_path: Path) -> None:
    soups = iter(SOUPS[:3] * 10)
    gen = FakeGenerator(lambda prompt, seed: next(soups))
    async with telegram_bot(tmp_path, gen, catalog=CATALOG) as h:
        for question in ("점심 추천해줘", "저녁 추천해줘", "저녁 메뉴 추천"):
            await h.text(1, 11, question)
            answer = h.last_message(1)
            down = next(b["callback_data"] for row in answer["reply_markup"]["inline_keyboard"] for b in row
                        if b["callback_data"].endswith(":down"))
            await h.press(1, 11, answer["message_id"], down)
        ask = h.last_message(1)
        assert ask["text"] == QUESTION
        no = next(b["callback_data"] for row in ask["reply_markup"]["inline_keyboard"] for b in row
                  if b["text"] == "아니요")
        await h.press(1, 11, ask["message_id"], no)
        assert h.last_message(1)["text"] == NO_TEXT
    assert rows(h.db, "SELECT count(*) FROM taste_items") == [(0,)]
