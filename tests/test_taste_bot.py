"""Taste in the Telegram front end: a real PTB Application, real SQLite, the real catalog, the fake Bot API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bot_fixtures import fresh_db, rows
from fakes import FakeGenerator
from tg_harness import telegram_bot

from bot.taste import replies as taste_text
from bot.taste.profile import ALLERGEN_ORDER
from bot.telegram.keyboards import parse_confirm, parse_edit
from bot.telegram.replies import BAD_BUTTON, NOT_YOURS
from model import DishCatalog

CATALOG = DishCatalog.load()
KEYBOARD = "reply_markup"


def buttons(message: dict) -> list[dict]:
    return [b for row in message[KEYBOARD]["inline_keyboard"] for b in row]


def button(message: dict, text: str) -> str:
    return next(b["callback_data"] for b in buttons(message) if b["text"] == text)


def taste_rows(db: Path, user_id: int) -> list[tuple]:
    return rows(db, "SELECT kind, target, value FROM taste_items WHERE user_id = ? ORDER BY id", user_id)


async def test_statement_with_a_question_is_answered_at_once_with_the_confirmation_beside_it(tmp_path: Path) -> None:
    gen = FakeGenerator(["새우튀김 어때요?", "비빔밥 어때요? 고소하고 든든해요."])
    async with telegram_bot(tmp_path, gen, catalog=CATALOG) as h:
        await h.text(1, 11, "나 새우 알레르기 있어. 해산물 빼고 추천해줘")
        answer, ask = h.api.chat_messages(1)
        assert answer["text"] == "비빔밥 어때요? 고소하고 든든해요." and "다른 거" in str(answer[KEYBOARD])
        assert len(gen.requests) == 2 and "새우튀김" in gen.requests[0].avoid  # honoured before it is remembered
        assert "알레르기: 새우" in gen.prompts[0] and taste_rows(h.db, 11) == []
        assert ask["text"] == "새우 알레르기를 기억해 둘까요?" and [b["text"] for b in buttons(ask)] == ["예", "아니요"]
        assert all(len(b["callback_data"].encode()) <= 64 for b in buttons(ask))
        await h.press(1, 11, ask["message_id"], button(ask, "예"))
        messages = h.api.chat_messages(1)
        assert len(messages) == 2 and messages[1]["text"].startswith("기억했어요") and KEYBOARD not in messages[1]
        assert len(gen.requests) == 2  # the question is not answered twice
    assert taste_rows(h.db, 11) == [("allergy", "allergen", "새우")]


async def test_a_food_question_with_a_diet_gets_its_answer_first(tmp_path: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요? 가볍고 든든해요."])
    async with telegram_bot(tmp_path, gen, catalog=CATALOG) as h:
        await h.text(1, 11, "다이어트 중인데 저녁으로 가볍게 먹을 거 있을까?")
        answer, ask = h.api.chat_messages(1)
        assert answer["text"] == "비빔밥 어때요? 가볍고 든든해요." and "식단: 다이어트" in gen.prompts[0]
        assert ask["text"] == "다이어트 중이라고 기억해 둘까요?"
        generated = len(gen.requests)
        await h.press(1, 11, ask["message_id"], button(ask, "아니요"))
        assert h.api.chat_messages(1)[1]["text"] == taste_text.DECLINED_NO_QUESTION
        assert len(gen.requests) == generated and len(h.api.chat_messages(1)) == 2
    assert taste_rows(h.db, 11) == []


@pytest.mark.parametrize(("choice", "row"), [("알레르기예요", ("allergy", "allergen", "우유")),
                                             ("그냥 싫어해요", ("dislike", "ingredient", "우유")), ("아니요", None)])
async def test_an_unsure_allergen_is_asked_about_not_guessed(tmp_path: Path, choice: str, row: tuple | None) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    async with telegram_bot(tmp_path, gen, catalog=CATALOG) as h:
        await h.text(1, 11, "우유 마시면 배가 아파")
        ask = h.last_message(1)
        assert ask["text"] == "우유 알레르기인가요, 아니면 그냥 싫어하시는 건가요?" and gen.requests == []
        assert [b["text"] for b in buttons(ask)] == ["알레르기예요", "그냥 싫어해요", "아니요"]
        await h.press(1, 11, ask["message_id"], button(ask, choice))
        assert len(h.api.chat_messages(1)) == 1
    assert taste_rows(h.db, 11) == ([row] if row else [])


async def test_statement_alone_declined_remembers_nothing_and_answers_nothing(tmp_path: Path) -> None:
    gen = FakeGenerator(["김치찌개 어때요?"])
    async with telegram_bot(tmp_path, gen, catalog=CATALOG) as h:
        await h.text(1, 11, "오이 싫어해")
        ask = h.last_message(1)
        assert ask["text"] == "오이를 싫어하신다고 기억해 둘까요?"
        await h.press(1, 11, ask["message_id"], button(ask, "아니요"))
        assert h.api.chat_messages(1)[-1]["text"] == taste_text.DECLINED_NO_QUESTION
        assert len(h.api.chat_messages(1)) == 1 and gen.requests == []
        await h.text(1, 11, "요즘 채식 중이야")
        ask = h.last_message(1)
        await h.press(1, 11, ask["message_id"], button(ask, "예"))
        assert h.last_message(1)["text"].startswith("기억했어요") and gen.requests == []
    assert taste_rows(h.db, 11) == [("diet", "diet", "veg")]


@pytest.mark.parametrize("data", ["tc:y:abc", "tc:x:5", "tc:y:" + "9" * 70, "tt:a:1", "tt:q:1:11", "tt:a:99:11",
                                  "tt:d:keto:11", "tt:a:-1:11", "tt:a:1:11:1", "tt:x:1:" + "1" * 60])
async def test_forged_taste_buttons_are_refused_and_change_nothing(tmp_path: Path, data: str) -> None:
    async with telegram_bot(tmp_path, catalog=CATALOG) as h:
        await h.text(1, 11, "/taste")
        view = h.last_message(1)
        await h.press(1, 11, view["message_id"], data)
        assert h.api.calls_to("answerCallbackQuery")[-1].params["text"] == BAD_BUTTON
        assert h.last_message(1) == view and taste_rows(h.db, 11) == []
    assert parse_confirm("tc:y:12") == ("y", 12) and parse_edit("tt:a:3:11") == ("a", "3", 11)


async def test_someone_elses_taste_buttons_are_refused(tmp_path: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    async with telegram_bot(tmp_path, gen, catalog=CATALOG) as h:
        await h.text(-5, 11, "@mechuri_test_bot 나 땅콩 알레르기 있는데 간식 추천해줘", chat_type="group")
        ask, generated = h.last_message(-5), len(gen.requests)  # answered at once, the question beside it
        await h.press(-5, 22, ask["message_id"], button(ask, "예"))  # another member presses 예
        assert "찾을 수 없어요" in h.last_message(-5)["text"] and len(gen.requests) == generated
        await h.text(-5, 11, "/taste@mechuri_test_bot", chat_type="group")
        view = h.last_message(-5)
        await h.press(-5, 22, view["message_id"], button(view, "🚫 알레르기 고르기"))
        assert h.api.calls_to("answerCallbackQuery")[-1].params["text"] == NOT_YOURS
        assert h.last_message(-5) == view
    assert taste_rows(h.db, 11) == [] and taste_rows(h.db, 22) == []


async def test_taste_view_toggles_allergies_and_diet_and_removes_items(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, catalog=CATALOG) as h:
        await h.text(1, 11, "/taste")
        view = h.last_message(1)
        assert view["text"].startswith(taste_text.EMPTY_PROFILE)
        await h.press(1, 11, view["message_id"], button(view, "🚫 알레르기 고르기"))
        view = h.last_message(1)
        assert [b["text"] for b in buttons(view)][: len(ALLERGEN_ORDER)] == list(ALLERGEN_ORDER)
        await h.press(1, 11, view["message_id"], button(view, "새우"))
        view = h.last_message(1)
        assert "✅ 새우" in [b["text"] for b in buttons(view)] and "• 알레르기: 새우" in view["text"]
        assert h.api.calls_to("answerCallbackQuery")[-1].params["text"] == "새우 알레르기를 기억했어요"
        await h.press(1, 11, view["message_id"], button(view, "← 돌아가기"))
        await h.press(1, 11, view["message_id"], button(h.last_message(1), "🥗 식단 고르기"))
        await h.press(1, 11, view["message_id"], button(h.last_message(1), "채식"))
        assert "✅ 채식" in [b["text"] for b in buttons(h.last_message(1))]
        await h.text(1, 11, "가지 싫어해")
        await h.press(1, 11, h.last_message(1)["message_id"], button(h.last_message(1), "예"))
        await h.text(1, 11, "/taste")
        view = h.last_message(1)
        assert "• 싫어하는 것: 가지" in view["text"] and "• 식단: 채식" in view["text"]
        remove = button(view, "❌ 싫어하는 것: 가지 지우기")
        await h.press(1, 11, view["message_id"], remove)
        assert "가지" not in h.last_message(1)["text"]
        await h.press(1, 11, view["message_id"], remove)  # a stale button: the item is gone already
        assert h.api.calls_to("answerCallbackQuery")[-1].params["text"] == "이미 지워진 항목이에요."
        assert len(h.api.chat_messages(1)) == 3  # /taste, the statement's question, /taste: edits happen in place
    assert taste_rows(h.db, 11) == [("allergy", "allergen", "새우"), ("diet", "diet", "veg")]


async def test_forget_removes_the_profile(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, catalog=CATALOG) as h:
        await h.text(1, 11, "나 우유 알레르기 있어")
        await h.press(1, 11, h.last_message(1)["message_id"], button(h.last_message(1), "예"))
        await h.text(1, 11, "/reset")
        assert taste_rows(h.db, 11) == [("allergy", "allergen", "우유")]  # /reset keeps the profile
        await h.text(1, 11, "/forget")
        ask = h.last_message(1)
        assert "입맛 기록" in ask["text"]
        await h.press(1, 11, ask["message_id"], button(ask, "삭제"))
        await h.text(1, 11, "/taste")
        assert h.last_message(1)["text"].startswith(taste_text.EMPTY_PROFILE)
    assert taste_rows(h.db, 11) == [] and rows(h.db, "SELECT count(*) FROM recommended_dishes") == [(0,)]


async def test_allergies_are_honoured_across_a_restart(tmp_path: Path) -> None:
    db = await asyncio.to_thread(fresh_db, tmp_path)
    async with telegram_bot(tmp_path, FakeGenerator(["비빔밥 어때요?"]), db=db, catalog=CATALOG) as h:
        await h.text(1, 11, "나 갑각류 알레르기 있어")
        await h.press(1, 11, h.last_message(1)["message_id"], button(h.last_message(1), "예"))
    gen = FakeGenerator(["간장게장 어때요?", "새우 튀김 어때요?", "된장찌개 어때요?"])
    async with telegram_bot(tmp_path, gen, db=db, catalog=CATALOG) as h:  # a new process on the same database
        await h.text(1, 11, "저녁 추천해줘")
        assert h.last_message(1)["text"] == "된장찌개 어때요?" and len(gen.requests) == 3
        assert {"간장게장", "새우튀김", "꽃게탕"} <= set(gen.requests[0].avoid)
        assert "알레르기: 게, 새우" in gen.prompts[0]
