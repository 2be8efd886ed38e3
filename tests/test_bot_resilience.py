"""What real Telegram and real load do to the bot: flood control, time-outs, long answers, busy generators, many
users at once, restarts. Nothing may be lost and each user's answers must come in order."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bot_fixtures import all_turns, rows
from fakes import FakeGenerator
from tg_harness import TOKEN, telegram_bot, wait_until

from bot.redaction import redact_secrets_in_logs
from bot.service.replies import BUSY
from bot.settings import load_settings
from bot.telegram.replies import SORRY
from bot.telegram.sending import SafeSender, split_text, utf16_len

KEYBOARD = "reply_markup"


def question_of(prompt: str) -> str:
    return prompt.rsplit("### 질문:", 1)[1].split("\n\n### 답변:", 1)[0].strip()


def echo(prompt: str, seed: int) -> str:
    question = question_of(prompt)
    # "천천히" questions get a long answer: streamed at the fake's delay, it takes ten times longer.
    return f"[{question}] " + ("국밥 " * 40 if "천천히" in question else "라면")


def answers_in(h, chat_id: int) -> list[str]:
    return [m["text"] for m in h.api.chat_messages(chat_id) if KEYBOARD in m]


async def test_two_messages_from_one_user_at_once_are_answered_in_order(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, FakeGenerator(echo, chunk=2, delay=0.005), latency_s=0.001) as h:
        await h.feed([h.api.message_update(1, 11, "천천히 첫 번째"), h.api.message_update(1, 11, "두 번째")])
        await wait_until(lambda: len(answers_in(h, 1)) == 2, what="two answers")
        texts = answers_in(h, 1)
        assert texts[0].startswith("[천천히 첫 번째]") and texts[1].startswith("[두 번째]")
    turns = all_turns(h.db)
    assert [(t[1], t[2][:5]) for t in turns] == [
        ("user", "천천히 첫"), ("assistant", "[천천히 "), ("user", "두 번째"), ("assistant", "[두 번째")]


async def test_fifty_users_at_once_are_all_answered(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, FakeGenerator(echo, delay=0.001), latency_s=0.001) as h:
        await h.feed([h.api.message_update(100 + u, 100 + u, f"사용자 {u} 점심") for u in range(50)])
        await wait_until(lambda: sum(len(answers_in(h, 100 + u)) for u in range(50)) == 50, what="50 answers")
        for u in range(50):
            assert answers_in(h, 100 + u) == [f"[사용자 {u} 점심] 라면"]
    assert rows(h.db, "SELECT role, status, COUNT(*) FROM turns GROUP BY role, status") == [
        ("assistant", "ok", 50), ("user", "ok", 50)]


async def test_generations_beyond_the_global_cap_wait_instead_of_failing(tmp_path: Path) -> None:
    seen_running: list[int] = []
    gen = FakeGenerator(echo, chunk=1, delay=0.002)
    gen.on_call = lambda req: seen_running.append(gen.running)
    async with telegram_bot(tmp_path, gen, max_concurrent=2) as h:
        await h.feed([h.api.message_update(u, u, f"{u}번 손님") for u in range(1, 7)])
        await wait_until(lambda: sum(len(answers_in(h, u)) for u in range(1, 7)) == 6, what="6 answers")
    assert len(seen_running) == 6 and max(seen_running) <= 1  # a new one starts only when fewer than 2 run


async def test_a_restart_on_the_same_database_keeps_the_history(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, FakeGenerator(["짜장면 어때요?"])) as h:
        await h.text(1, 11, "중식 추천해줘")
    gen = FakeGenerator(["그럼 짬뽕은요?"])
    async with telegram_bot(tmp_path, gen, db=h.db) as h2:
        await h2.text(1, 11, "다른 중식은?")
        assert "중식 추천해줘" in gen.prompts[0] and "짜장면 어때요?" in gen.prompts[0]
        assert answers_in(h2, 1) == ["그럼 짬뽕은요?"]
    assert len(all_turns(h.db)) == 4


async def test_flood_control_is_waited_out_and_nothing_is_lost(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path) as h:
        h.api.fail("sendMessage", "retry_after", retry_after=1)
        h.api.fail("sendMessageDraft", "retry_after", retry_after=5)  # a preview just skips
        started = time.monotonic()
        await h.text(1, 11, "점심 추천해줘")
        assert time.monotonic() - started >= 1.0
        sends = h.api.calls_to("sendMessage")
        assert [c.failed for c in sends] == ["retry_after", None]
        assert sends[1].at - sends[0].at >= 1.0
        assert answers_in(h, 1) == ["김치찌개 어때요? 얼큰하고 든든해요."]


async def test_time_outs_are_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path) as h:
        h.api.fail("sendMessage", "timed_out", times=2)
        await h.text(1, 11, "점심 추천해줘")
        assert [c.failed for c in h.api.calls_to("sendMessage")] == ["timed_out", "timed_out", None]
        assert len(answers_in(h, 1)) == 1
        h.api.fail("sendMessage", "timed_out", times=10)
        await h.text(1, 11, "저녁은?")  # four attempts, then the error handler; the turn itself is stored
        assert len(h.api.calls_to("sendMessage")) == 3 + 4 + 1
        assert all_turns(h.db)[-1][3] == "ok"


async def test_too_long_is_split_and_resent(tmp_path: Path) -> None:
    answer = "비빔밥 어때요? " * 300  # 2,700 characters: fits our count, but "Telegram" says too long once
    async with telegram_bot(tmp_path, FakeGenerator([answer])) as h:
        h.api.fail("sendMessage", "too_long")
        await h.text(1, 11, "점심 추천해줘")
        messages = h.api.chat_messages(1)
        assert len(messages) >= 2 and [KEYBOARD in m for m in messages] == [False] * (len(messages) - 1) + [True]
        assert " ".join(m["text"] for m in messages).split() == answer.split()


async def test_answers_over_4096_characters_are_split_with_the_keyboard_last(tmp_path: Path) -> None:
    answer = "\n\n".join(f"{i}. 김치찌개와 된장찌개 중에서 고르기 어렵다면 둘 다 드셔 보세요. 😋" * 8 for i in range(40))
    async with telegram_bot(tmp_path, FakeGenerator([answer], chunk=500)) as h:
        await h.text(1, 11, "찌개 추천")
        messages = h.api.chat_messages(1)
        assert len(messages) >= 4 and all(utf16_len(m["text"]) <= 4096 for m in messages)
        assert [KEYBOARD in m for m in messages] == [False] * (len(messages) - 1) + [True]
        assert " ".join(m["text"] for m in messages).split() == answer.split()


async def test_not_modified_counts_as_success(tmp_path: Path) -> None:
    gen = FakeGenerator(["짬뽕 어때요? 얼큰해요. " * 3, "우동은요?"], chunk=2, delay=0.06)
    async with telegram_bot(tmp_path, gen) as h:
        h.api.fail("editMessageText", "not_modified")  # the first preview edit
        await h.text(-5, 11, "@mechuri_test_bot 점심?", chat_type="group")
        first = h.last_message(-5)
        assert first["text"] == ("짬뽕 어때요? 얼큰해요. " * 3).strip() and KEYBOARD in first
        h.api.fail("editMessageReplyMarkup", "not_modified")  # as if the keyboard were already gone
        await h.press(-5, 11, first["message_id"], first[KEYBOARD]["inline_keyboard"][0][0]["callback_data"])
        assert h.last_message(-5)["text"] == "우동은요?"
        assert SORRY not in [m["text"] for m in h.api.chat_messages(-5)]


async def test_failing_previews_never_cost_the_final_answer(tmp_path: Path) -> None:
    gen = FakeGenerator(["떡볶이 어때요? 매콤달콤해요."], chunk=2, delay=0.01)
    async with telegram_bot(tmp_path, gen) as h:
        h.api.fail("sendMessageDraft", "bad_gateway", times=100)
        h.api.fail("sendChatAction", "bad_gateway", times=100)
        await h.text(1, 11, "매운 요리 추천해줘")
        assert answers_in(h, 1) == ["떡볶이 어때요? 매콤달콤해요."]
        # In a group the preview message cannot be turned into the answer: the answer is sent anew.
        h.api.fail("editMessageText", "too_long", times=100)
        await h.text(-5, 11, "@mechuri_test_bot 매운 거", chat_type="group")
        messages = h.api.chat_messages(-5)
        assert [m["text"] for m in messages] == ["떡볶이 어때요? 매콤달콤해요."] and KEYBOARD in messages[0]


async def test_rejected_formatting_is_resent_as_plain_text(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path) as h:
        h.api.fail("sendMessage", "parse_entities")
        sent = await SafeSender(h.app.bot).send_text(1, "<b>짬뽕</b> 어때요?", parse_mode="HTML")
        assert [c.params.get("parse_mode") for c in h.api.calls_to("sendMessage")] == ["HTML", None]
        assert len(sent) == 1 and h.last_message(1)["text"] == "<b>짬뽕</b> 어때요?"


async def test_a_busy_generator_is_told_to_the_user_and_the_question_kept(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, FakeGenerator(busy=True)) as h:
        await h.text(1, 11, "점심 추천해줘")
        assert h.last_message(1)["text"] == BUSY
    assert all_turns(h.db)[0][1:4] == ("user", "점심 추천해줘", "ok")


async def test_cooldown_refuses_politely_and_stores_nothing(tmp_path: Path) -> None:
    async with telegram_bot(tmp_path, user_cooldown_s=30) as h:
        await h.text(1, 11, "점심 추천해줘")
        await h.text(1, 11, "저녁은?")
        assert "천천히" in h.last_message(1)["text"] and len(answers_in(h, 1)) == 1
        await h.text(2, 22, "점심 추천해줘")  # other users are not slowed down
        assert len(answers_in(h, 2)) == 1
    assert [t[2] for t in all_turns(h.db) if t[1] == "user"] == ["점심 추천해줘", "점심 추천해줘"]


async def test_unexpected_errors_give_one_korean_sentence(tmp_path: Path, caplog) -> None:
    async with telegram_bot(tmp_path) as h:

        async def broken(*args, **kwargs):
            raise RuntimeError("boom: internal detail")

        h.service.reply = broken  # type: ignore[method-assign]
        await h.text(1, 11, "점심 추천해줘")
        assert [m["text"] for m in h.api.chat_messages(1)] == [SORRY]
    assert "boom: internal detail" in caplog.text


def test_the_token_never_reaches_the_logs(caplog) -> None:
    undo = redact_secrets_in_logs(load_settings(env_file=None, telegram_bot_token=TOKEN))  # what each command installs
    try:
        log = logging.getLogger("mechuri.test")
        log.error("url https://api.telegram.org/bot%s/getMe", TOKEN)
        try:
            raise ValueError(f"The token `{TOKEN}` was rejected by the server.")
        except ValueError:
            log.exception("initialise failed")
    finally:
        undo()
    assert "<token>" in caplog.text and TOKEN not in caplog.text
    assert TOKEN not in "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)


def test_split_text_respects_the_limit_and_keeps_every_word() -> None:
    text = "가나다 " * 3000 + "😋" * 5000
    parts = split_text(text, 4096)
    assert all(0 < utf16_len(p) <= 4096 for p in parts)
    assert "".join(parts).replace(" ", "") == text.replace(" ", "")
    assert split_text("") == [] and split_text("짧아요") == ["짧아요"]
