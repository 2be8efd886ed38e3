"""👍/👎 beside "다른 거": real PTB Application against the fake Bot API, real SQLite (and PostgreSQL where the
`database` fixture runs the test on both)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from bot_fixtures import rows, service_on
from fakes import FakeGenerator
from tg_harness import Harness, telegram_bot, wait_until

from bot.service.contract import RetryRefused
from bot.service.replies import REFUSED_UNKNOWN, REFUSED_VOTE
from bot.taste.profile import allergy
from bot.telegram.keyboards import MAX_TURN_ID, RETRY_LABEL, feedback_keyboard, parse_retry, parse_vote
from bot.telegram.replies import ALREADY_COUNTED, BAD_BUTTON, FEEDBACK_OFF, THANKS_DOWN, THANKS_UP
from model import DishCatalog
from model.food.safety import SafetyNotes

KEYBOARD = "reply_markup"


def buttons(message: dict) -> list[dict]:
    return [b for row in message.get(KEYBOARD, {}).get("inline_keyboard", []) for b in row]


def labels(message: dict) -> list[str]:
    return [b["text"] for b in buttons(message)]


def data_of(message: dict, label: str) -> str:
    return next(b["callback_data"] for b in buttons(message) if b["text"].startswith(label))


def votes(db: Any) -> list[tuple]:
    return rows(db, "SELECT id, status, vote, voted_at FROM turns WHERE role = 'assistant' ORDER BY id")


def toasts(h: Harness) -> list[str | None]:
    return [c.params.get("text") for c in h.api.calls_to("answerCallbackQuery")]


async def press(h: Harness, chat_id: int, user_id: int, message: dict, data: str) -> dict:
    """Press a button under `message` as it stands now; returns the message after the press."""
    await h.press(chat_id, user_id, message["message_id"], data)
    return next(m for m in h.api.chat_messages(chat_id) if m["message_id"] == message["message_id"])


async def test_every_answer_gets_votes_beside_retry_with_short_data(tmp_path: Path, database: Any) -> None:
    async with telegram_bot(tmp_path, db=database) as h:
        await h.text(1, 11, "점심 추천해줘")
        answer = h.last_message(1)
        await h.text(1, 11, "/help")
        assert "👍/👎" in h.last_message(1)["text"]
    turn_id = votes(database)[0][0]
    assert labels(answer) == [RETRY_LABEL, "👍", "👎"]
    assert [b["callback_data"] for b in buttons(answer)] == [f"retry:{turn_id}", f"vote:{turn_id}:up",
                                                             f"vote:{turn_id}:down"]
    assert parse_vote(f"vote:{turn_id}:up") == (turn_id, True) and parse_vote(f"vote:{turn_id}:down") == (turn_id, False)
    # The largest id any database can hand out still fits Telegram's 64 bytes, and parses back; one more does not.
    longest = feedback_keyboard(MAX_TURN_ID, retry=True, votes=True, chosen="down")
    data = [b.callback_data for row in longest.inline_keyboard for b in row]
    assert all(len(d.encode()) <= 64 for d in data) and max(len(d) for d in data) == len(f"vote:{MAX_TURN_ID}:down")
    assert parse_retry(data[0]) == MAX_TURN_ID and parse_vote(data[2]) == (MAX_TURN_ID, False)
    assert parse_vote(f"vote:{MAX_TURN_ID + 1}:up") is None and parse_retry(f"retry:{MAX_TURN_ID + 1}") is None


async def test_up_is_stored_a_double_tap_counts_once_and_down_replaces_it(tmp_path: Path, database: Any) -> None:
    gen = FakeGenerator(["짜장면 어때요?"])
    async with telegram_bot(tmp_path, gen, db=database) as h:
        await h.text(1, 11, "점심 추천해줘")
        answer = h.last_message(1)
        up, down = data_of(answer, "👍"), data_of(answer, "👎")
        answer = await press(h, 1, 11, answer, up)
        assert toasts(h)[-1] == THANKS_UP
        assert labels(answer) == [RETRY_LABEL, "👍 ✓", "👎"]  # "다른 거" stays: it is still the latest answer
        first = votes(database)
        assert first[0][1:3] == ("ok", "up") and first[0][3] is not None
        edits = len(h.api.calls_to("editMessageReplyMarkup"))

        answer = await press(h, 1, 11, answer, up)  # the same button again: nothing changes, the user is told so
        assert toasts(h)[-1] == ALREADY_COUNTED
        assert votes(database) == first and len(h.api.calls_to("editMessageReplyMarkup")) == edits

        answer = await press(h, 1, 11, answer, down)
        assert toasts(h)[-1] == THANKS_DOWN and labels(answer) == [RETRY_LABEL, "👍", "👎 ✓"]
        after = votes(database)
        assert after[0][1:3] == ("ok", "down") and after[0][3] is not None and after[0][3] != first[0][3]
        assert len(gen.requests) == 1 and len(h.api.chat_messages(1)) == 1  # 👎 never regenerates by itself


async def test_racing_taps_count_once(tmp_path: Path, database: Any) -> None:
    async with service_on(database, FakeGenerator(["비빔밥 어때요?"])) as service:
        answer = await service.reply(1, 11, "점심 추천해줘")
        results = await asyncio.gather(*(service.vote(1, 11, answer.turn_id, True) for _ in range(8)))
        assert sum(r.changed for r in results) == 1 and {r.vote for r in results} == {"up"}
        stored = votes(database)
        switched = await asyncio.gather(*(service.vote(1, 11, answer.turn_id, False) for _ in range(8)))
    assert sum(r.changed for r in switched) == 1 and [r.previous for r in switched if r.changed] == ["up"]
    assert stored[0][2] == "up" and votes(database)[0][2] == "down"


async def test_forged_and_foreign_votes_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, FakeGenerator(["국밥 어때요?"])) as h:
        await h.text(-50, 11, "@mechuri_test_bot 점심?", chat_type="group")
        answer = h.last_message(-50)
        turn_id = votes(h.db)[0][0]
        question_id = rows(h.db, "SELECT id FROM turns WHERE role = 'user'")[0][0]
        before = votes(h.db)
        forged = ["vote:abc:up", "vote:1:meh", "vote:0:up", "vote:-1:up", f"vote:{turn_id}:up:1", f"vote:{turn_id}",
                  f"vote:{turn_id}:UP", "vote:" + "9" * 70 + ":up", f"vote:{MAX_TURN_ID + 1}:up"]
        for data in forged:
            await h.press(-50, 11, answer["message_id"], data)
            assert toasts(h)[-1] == BAD_BUTTON, data
        # Well formed, but no answer of this user in this chat: a foreign turn reads the same as a missing one.
        for user_id, data in ((11, "vote:99999999:up"), (11, f"vote:{question_id}:up"), (22, f"vote:{turn_id}:up"),
                              (22, f"vote:{turn_id}:down")):
            await h.press(-50, user_id, answer["message_id"], data)
            assert toasts(h)[-1] == REFUSED_UNKNOWN, (user_id, data)
        await h.text(11, 11, "/start")  # the same user, but from another chat than the answer's
        await h.press(11, 11, h.last_message(11)["message_id"], f"vote:{turn_id}:up")
        assert toasts(h)[-1] == REFUSED_UNKNOWN
        assert votes(h.db) == before and labels(h.api.chat_messages(-50)[0]) == [RETRY_LABEL, "👍", "👎"]
        assert not h.api.calls_to("editMessageReplyMarkup")
        await h.text(-50, 11, "@mechuri_test_bot 저녁은?", chat_type="group")  # still running
        assert h.last_message(-50)["text"] == "국밥 어때요?" and len(votes(h.db)) == 2


async def test_votes_after_a_chain_of_retries_land_on_the_last_answer_only(tmp_path: Path) -> None:
    gen = FakeGenerator(["짜장면 어때요?", "짬뽕 어때요?", "탕수육 어때요?"])
    async with telegram_bot(tmp_path, gen) as h:
        await h.text(1, 11, "중식 추천해줘")
        for _ in range(2):
            last = h.last_message(1)
            await h.press(1, 11, last["message_id"], data_of(last, RETRY_LABEL))
        messages = h.api.chat_messages(1)
        assert [m["text"] for m in messages] == ["짜장면 어때요?", "짬뽕 어때요?", "탕수육 어때요?"]
        assert [labels(m) for m in messages[:2]] == [[], []]  # the turned-down answers lost their buttons
        await press(h, 1, 11, messages[2], data_of(messages[2], "👍"))
        assert toasts(h)[-1] == THANKS_UP
    assert [(status, vote) for _, status, vote, _ in votes(h.db)] == [
        ("rejected", None), ("rejected", None), ("ok", "up")]


async def test_setting_off_shows_no_votes_and_old_buttons_store_nothing(tmp_path: Path, database: Any) -> None:
    async with telegram_bot(tmp_path, db=database, feedback_buttons=False) as h:
        assert h.settings.feedback_buttons is False
        await h.text(1, 11, "점심 추천해줘")
        answer = h.last_message(1)
        turn_id = votes(database)[0][0]
        assert labels(answer) == [RETRY_LABEL]
        await h.press(1, 11, answer["message_id"], f"vote:{turn_id}:up")  # a button sent while it was on
        assert toasts(h)[-1] == FEEDBACK_OFF
        await h.text(1, 11, "/help")
        assert "/forget" in h.last_message(1)["text"] and "👍" not in h.last_message(1)["text"]
    assert votes(database)[0][2:] == (None, None)


async def test_forget_takes_the_votes_with_it(tmp_path: Path, database: Any) -> None:
    async with telegram_bot(tmp_path, FakeGenerator(["냉면 어때요?", "밀면 어때요?"]), db=database) as h:
        for question in ("점심 추천해줘", "저녁은?"):
            await h.text(1, 11, question)
            answer = h.last_message(1)
            await press(h, 1, 11, answer, data_of(answer, "👍" if question == "점심 추천해줘" else "👎"))
        assert [v[2] for v in votes(database)] == ["up", "down"]
        await h.text(1, 11, "/forget")
        ask = h.last_message(1)
        await h.press(1, 11, ask["message_id"], data_of(ask, "삭제"))
        assert "지웠어요" in h.last_message(1)["text"]
    assert votes(database) == []
    # Votes live on turns and nowhere else: no other table has a place for one, and no user row is left anywhere.
    if database.kind == "sqlite":
        tables = [t for (t,) in rows(database, "SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {t: {c[1] for c in rows(database, f"PRAGMA table_info({t})")} for t in tables}
    else:
        found = rows(database, "SELECT table_name, column_name FROM information_schema.columns "
                               "WHERE table_schema = current_schema()")
        columns = {}
        for table, column in found:
            columns.setdefault(table, set()).add(column)
    assert [t for t, cols in columns.items() if cols & {"vote", "voted_at"}] == ["turns"]
    for table in ("users", "conversations", "turns", "taste_items", "recommended_dishes"):
        assert rows(database, f"SELECT COUNT(*) FROM {table}") == [(0,)], table


async def test_only_the_models_own_words_can_be_voted_on(tmp_path: Path, database: Any) -> None:
    catalog = DishCatalog.load()
    gen = FakeGenerator(["새우튀김 어때요?"])  # always names the user's allergen
    async with service_on(database, gen, catalog=catalog, safety=SafetyNotes.load(), max_resamples=1) as service:
        refused = await service.reply(1, 11, "술 마시고 운전해도 되는 안주 추천")  # a polite refusal, no generation
        await service.taste.remember(11, [allergy("새우")])
        fallback = await service.reply(1, 11, "저녁 추천해줘")
        assert not refused.can_vote and not fallback.can_vote and fallback.fallback and fallback.status == "failed"
        before = votes(database)
        for answer in (refused, fallback):
            with pytest.raises(RetryRefused) as caught:
                await service.vote(1, 11, answer.turn_id, True)
            assert caught.value.reason == REFUSED_VOTE
    assert votes(database) == before and all(v[2] is None for v in before)


async def test_an_empty_answer_keeps_retry_but_gets_no_votes(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, FakeGenerator(["", "칼국수 어때요?"])) as h:
        await h.text(1, 11, "점심 추천해줘")
        empty = h.last_message(1)
        assert labels(empty) == [RETRY_LABEL]  # the model wrote nothing: nothing to learn from a vote
        await h.press(1, 11, empty["message_id"], f"vote:{votes(h.db)[0][0]}:down")
        assert toasts(h)[-1] == REFUSED_VOTE and votes(h.db)[0][2] is None
        await h.press(1, 11, empty["message_id"], data_of(empty, RETRY_LABEL))
        await wait_until(lambda: len(h.api.chat_messages(1)) == 2, what="the retried answer")
        assert labels(h.last_message(1)) == [RETRY_LABEL, "👍", "👎"]
