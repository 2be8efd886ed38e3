"""ConversationService under concurrency, restarts and a kill -9 in the middle of a generation."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bot_fixtures import all_turns, rows, service_on
from fakes import FakeGenerator

from bot.service.contract import ConversationBusy
from bot.service.replies import FORGOTTEN_TEXT
from bot.store.history import Store

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def db(database):
    """Every test here runs on SQLite and on PostgreSQL."""
    return database


async def test_two_messages_from_one_user_are_answered_in_order(db: Path) -> None:
    gen = FakeGenerator(lambda prompt, seed: f"답{prompt.count('### 질문:')}", delay=0.01)
    async with service_on(db, gen) as service:
        first, second = await asyncio.gather(service.reply(1, 1, "하나"), service.reply(1, 1, "둘"))
    assert first.question_turn_id < second.question_turn_id and first.turn_id < second.turn_id
    # The second question was generated only after the first was answered, with that answer in its history.
    assert "### 질문: 하나\n\n### 답변: 답1\n\n### 질문: 둘" in gen.prompts[1]
    assert (first.text, second.text) == ("답1", "답2")


async def test_a_cancelled_call_keeps_the_order_for_the_next(db: Path) -> None:
    release = asyncio.Event()
    gen = FakeGenerator(["첫 답", "셋째 답"], block=release)
    async with service_on(db, gen) as service:
        first = asyncio.create_task(service.reply(1, 1, "하나"))
        second = asyncio.create_task(service.reply(1, 1, "둘"))
        third = asyncio.create_task(service.reply(1, 1, "셋"))
        await asyncio.sleep(0.3)
        second.cancel()
        await asyncio.sleep(0.1)
        assert len(gen.requests) == 1  # the third still waits for the first
        release.set()
        results = await asyncio.gather(first, second, third, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[0].text == "첫 답" and results[2].text == "셋째 답"
    assert "### 답변: 첫 답" in gen.prompts[1] and "둘" not in gen.prompts[1]


async def test_fifty_users_at_once_are_all_answered(db: Path) -> None:
    gen = FakeGenerator(lambda prompt, seed: f"{seed}번 메뉴", delay=0.002)
    async with service_on(db, gen) as service:
        answers = await asyncio.gather(*(service.reply(100 + u, 1000 + u, f"사용자 {u}의 질문") for u in range(50)))
        assert service.status()["in_flight"] == 0
    assert all(a.status == "ok" for a in answers)
    assert rows(db, "SELECT role, status, count(*) FROM turns GROUP BY role, status ORDER BY role") == [
        ("assistant", "ok", 50), ("user", "ok", 50)
    ]
    assert len({a.seed for a in answers}) == 50
    for answer in answers:  # each answer belongs to its own question
        question = rows(db, "SELECT text FROM turns WHERE id = ?", answer.question_turn_id)[0][0]
        assert rows(db, "SELECT reply_to FROM turns WHERE id = ?", answer.turn_id)[0][0] == answer.question_turn_id
        assert question.startswith("사용자 ")


async def test_generations_over_the_global_cap_wait_their_turn(db: Path) -> None:
    release = asyncio.Event()
    gen = FakeGenerator(["답"], block=release)
    async with service_on(db, gen, max_concurrent=2) as service:
        running = [asyncio.create_task(service.reply(u, u, "질문")) for u in (1, 2, 3)]
        while len(gen.requests) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert len(gen.requests) == 2 and not any(task.done() for task in running)  # the third waits, unrefused
        release.set()
        answers = await asyncio.gather(*running)
    assert [a.status for a in answers] == ["ok"] * 3 and len(gen.requests) == 3
    assert rows(db, "SELECT count(*) FROM turns WHERE role = 'user'") == [(3,)]


async def test_a_full_generator_queue_says_busy_and_keeps_the_question(db: Path) -> None:
    gen = FakeGenerator(["답"])
    gen.busy = True
    async with service_on(db, gen) as service:
        with pytest.raises(ConversationBusy):
            await service.reply(3, 3, "세 번째")
    assert rows(db, "SELECT count(*) FROM turns WHERE role = 'user'") == [(1,)]  # the turned-away question is kept


async def test_a_restarted_service_sees_the_history(db: Path) -> None:
    async with service_on(db, FakeGenerator(["짬뽕 어때요?"])) as service:
        first = await service.reply(1, 1, "중식 추천")
    gen = FakeGenerator(["짜장면 어때요?", "탕수육!"])
    async with service_on(db, gen) as service:
        again = await service.retry(1, 1, first.turn_id)  # the button of an answer from before the restart
        await service.reply(1, 1, "하나 더")
    assert again.status == "ok"
    assert "### 질문: 중식 추천\n\n### 답변: 짜장면 어때요?" in gen.prompts[1] and "짬뽕" not in gen.prompts[1]


KILL_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from bot_fixtures import all_turns, fresh_db, rows, service_on
from fakes import FakeGenerator
from bot.service.conversation import ConversationService
from bot.settings import GenerationDefaults
from bot.store.history import Store

async def main():
    store = Store({url!r})
    await store.upgrade()
    gen = FakeGenerator(block=asyncio.Event(), on_block=lambda req: print("GENERATING", flush=True))
    service = ConversationService(store, gen, generation=GenerationDefaults())
    await service.reply(7, 7, "죽기 직전의 질문")

asyncio.run(main())
"""


async def test_kill_during_generation_loses_nothing(db) -> None:
    victim = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILL_SCRIPT.format(tests=str(TESTS), url=db.url))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(victim.stdout.readline), timeout=60)
        assert line.strip() == "GENERATING", victim.stderr.read()
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        victim.stdout.close()
        victim.stderr.close()
    assert victim.returncode == -signal.SIGKILL
    assert [t[1:4] for t in all_turns(db)] == [("user", "죽기 직전의 질문", "ok"), ("assistant", "", "pending")]
    async with Store(db.url) as store:
        await store.upgrade()
        assert await store.recover() == 1
    assert [t[3] for t in all_turns(db)] == ["ok", "failed"]
    if db.kind == "sqlite":
        with sqlite3.connect(db.path) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The user carries on: the interrupted question is not shown to the model, the new one is answered.
    gen = FakeGenerator(["다시 시작!"])
    async with service_on(db, gen) as service:
        answer = await service.reply(7, 7, "다시 물어볼게요")
    assert answer.status == "ok" and "죽기 직전" not in gen.prompts[0]


async def test_reset_and_forget_keep_their_place_in_the_line(db: Path) -> None:
    release = asyncio.Event()
    gen = FakeGenerator(["첫 답", "새 대화의 답"], block=release)
    async with service_on(db, gen) as service:
        first = asyncio.create_task(service.reply(1, 1, "하나"))
        reset = asyncio.create_task(service.reset(1, 1))
        after_reset = asyncio.create_task(service.reply(1, 1, "리셋 뒤 질문"))
        await asyncio.sleep(0.2)
        release.set()
        one, _, two = await asyncio.gather(first, reset, after_reset)
        # The message sent after /reset went to the new conversation, and the answer in flight was finished.
        assert one.text == "첫 답" and "하나" not in gen.prompts[1]
        conversations = rows(db, "SELECT t.text, c.closed_at IS NULL FROM turns t JOIN conversations c "
                                 "ON c.id = t.conversation_id WHERE t.role = 'user' ORDER BY t.id")
        assert conversations == [("하나", 0), ("리셋 뒤 질문", 1)] and two.status == "ok"
        gen.block = asyncio.Event()
        pending = asyncio.create_task(service.reply(1, 1, "지워질 질문"))
        forget = asyncio.create_task(service.forget(1, 1))
        await asyncio.sleep(0.2)
        assert not forget.done()  # forget waits for the answer in flight instead of pulling rows from under it
        gen.block.set()
        await asyncio.gather(pending, forget)
    assert all_turns(db) == [] and rows(db, "SELECT count(*) FROM conversations") == [(0,)]


async def test_forget_waits_for_an_answer_in_another_chat(db) -> None:
    release = asyncio.Event()
    gen = FakeGenerator(["단체방 답"], block=release)
    async with service_on(db, gen) as service:
        in_group = asyncio.create_task(service.reply(-500, 1, "단체방에서 물어본 질문"))
        while not gen.requests:
            await asyncio.sleep(0.01)
        forget = asyncio.create_task(service.forget(1, 1))  # from the private chat, while the group answer runs
        await asyncio.sleep(0.2)
        assert not forget.done()
        release.set()
        answer, deleted = await asyncio.gather(in_group, forget)
    assert answer.status == "ok" and deleted == 4  # the user, the conversation, the question and its answer
    assert all_turns(db) == [] and rows(db, "SELECT count(*) FROM users") == [(0,)]


async def test_forget_from_another_process_while_a_question_waits(db) -> None:
    # Two services on one database stand for two processes: /forget on one deletes a question the other has
    # stored and not yet begun to answer. The answer must not end in an integrity error.
    release = asyncio.Event()
    gen = FakeGenerator(["첫 답", "둘째 답"], block=release)
    async with service_on(db, gen) as here, service_on(db, FakeGenerator()) as there:
        first = asyncio.create_task(here.reply(2, 1, "첫 질문"))
        while not gen.requests:
            await asyncio.sleep(0.01)
        second = asyncio.create_task(here.reply(2, 1, "둘째 질문"))
        while len(all_turns(db)) < 3:
            await asyncio.sleep(0.01)
        assert await there.forget(1, 1) == 5
        release.set()
        one, two = await asyncio.gather(first, second)
    assert one.status == "ok" and two.status == "failed" and two.text == FORGOTTEN_TEXT
    assert len(gen.requests) == 1  # the forgotten question was not generated
    assert all_turns(db) == [] and rows(db, "SELECT count(*) FROM conversations") == [(0,)]
