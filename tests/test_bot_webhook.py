"""`serve(webhook=True)` in-process: a fake Telegram POSTs updates to the bot's webhook on 127.0.0.1, and the bot
talks back to the fake Bot API over HTTP. What Telegram would see: setWebhook with our URL and secret, 403 for a
wrong secret, a refused malformed body, questions stored before the 200, a burst answered in order, deleteWebhook."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from bot_fixtures import all_turns, fresh_db, rows
from fake_bot_api import FakeBotAPI, FakeBotServer
from fakes import FakeGenerator
from telegram.ext import Application

from bot.settings import load_settings
from bot.store.history import Store
from bot.telegram.app import serve

TOKEN = "777001:WEBHOOK-test-token"
SECRET = "s3cret-WEBHOOK_token"
KEYBOARD = "reply_markup"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def echo(prompt: str, seed: int) -> str:
    question = prompt.rsplit("### 질문:", 1)[1].split("\n\n### 답변:", 1)[0].strip()
    return f"[{question}] 국밥 어때요?"


def answers_in(api: FakeBotAPI, chat_id: int) -> list[str]:
    return [m["text"] for m in api.chat_messages(chat_id) if KEYBOARD in m]


async def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class WebhookBot:
    def __init__(self, api: FakeBotAPI, app: Application, url: str) -> None:
        self.api, self.app, self.url = api, app, url

    async def post(self, update: dict[str, Any] | bytes, **kwargs: Any) -> tuple[int, bytes]:
        # The server runs on this event loop: the blocking POST goes to a thread.
        return await asyncio.to_thread(self.api.deliver, update, **kwargs)


@asynccontextmanager
async def webhook_bot(database_url: str, generator: Any, *, api: FakeBotAPI | None = None,
                      **overrides: Any) -> AsyncIterator[WebhookBot]:
    api = api or FakeBotAPI()
    port = free_port()
    with FakeBotServer(api) as server:
        settings = load_settings(
            env_file=None, telegram_bot_token=TOKEN, telegram_base_url=server.base_url, database_url=database_url,
            webhook_url=f"http://127.0.0.1:{port}/telegram", webhook_port=port, webhook_secret=SECRET,
            user_cooldown_s=0.0, max_new_tokens=64, **overrides,
        )
        started: asyncio.Future[Application] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def make_generator(_settings: Any) -> Any:
            return generator

        task = asyncio.create_task(serve(settings, stop, make_generator=make_generator, webhook=True,
                                         ready=lambda app: started.set_result(app)))
        try:
            app = await asyncio.wait_for(asyncio.shield(started), 60)
            yield WebhookBot(api, app, f"http://127.0.0.1:{port}/telegram")
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


async def test_a_conversation_over_the_webhook(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_question = Store._add_question

    def slow_add_question(self: Store, *args: Any) -> Any:
        time.sleep(0.3)  # a slow database: the 200 must still wait for the commit
        return store_question(self, *args)

    monkeypatch.setattr(Store, "_add_question", slow_add_question)
    release = asyncio.Event()
    gen = FakeGenerator(echo, block=release)
    async with webhook_bot(f"sqlite+aiosqlite:///{db}", gen) as bot:
        hook = bot.api.webhook
        assert hook is not None and hook["url"] == bot.url and hook["secret_token"] == SECRET
        assert "callback_query" in hook["allowed_updates"] and hook["max_connections"] == 40
        try:
            status, _ = await bot.post(bot.api.message_update(1, 11, "비 오는 날 뭐 먹지"))
            # Telegram has its 200 only once the question is committed (the generation is still blocked).
            assert status == 200
            assert [t[1:4] for t in all_turns(db)][:1] == [("user", "비 오는 날 뭐 먹지", "ok")]
        finally:
            release.set()
        await wait_for(lambda: len(answers_in(bot.api, 1)) == 1, "the answer")
        first = next(m for m in bot.api.chat_messages(1) if KEYBOARD in m)
        data = first[KEYBOARD]["inline_keyboard"][0][0]["callback_data"]
        assert (await bot.post(bot.api.callback_update(1, 11, first["message_id"], data)))[0] == 200
        await wait_for(lambda: len(bot.api.chat_messages(1)) == 2 and len(answers_in(bot.api, 1)) == 1, "the retry")
        assert (await bot.post(bot.api.message_update(1, 11, "/help")))[0] == 200
        await wait_for(lambda: len(bot.api.chat_messages(1)) == 3, "the help text")
    assert [t[3] for t in all_turns(db)] == ["ok", "rejected", "ok"]
    assert bot.api.webhook is None and bot.api.calls_to("deleteWebhook")  # the only replica removed it on stop


async def test_wrong_secret_and_malformed_bodies_are_refused_and_change_nothing(db: Path) -> None:
    async with webhook_bot(f"sqlite+aiosqlite:///{db}", FakeGenerator(echo)) as bot:
        update = bot.api.message_update(1, 11, "몰래 보낸 질문")
        assert (await bot.post(update, secret="wrong-secret"))[0] == 403
        assert (await bot.post(update, secret=""))[0] == 403  # no header at all
        assert (await bot.post(update, content_type="text/plain"))[0] == 403
        assert (await bot.post(json.dumps({"update_id": 5, "message": {"text": 7}}).encode()))[0] == 400
        assert (await bot.post(b"{not json"))[0] >= 400
        assert (await bot.post("업데이트가 아님".encode()))[0] >= 400
        await asyncio.sleep(0.3)
        assert all_turns(db) == [] and not bot.api.calls_to("sendMessage")
        # The process is still serving: the real update goes through.
        assert (await bot.post(update))[0] == 200
        await wait_for(lambda: answers_in(bot.api, 1) == ["[몰래 보낸 질문] 국밥 어때요?"], "the answer")
    assert rows(db, "SELECT count(*) FROM turns") == [(2,)]


async def test_a_burst_of_webhooks_is_answered_whole_and_in_order(db: Path) -> None:
    users, per_user = 20, 5
    async with webhook_bot(f"sqlite+aiosqlite:///{db}", FakeGenerator(echo, delay=0.001)) as bot:
        updates = {u: [bot.api.message_update(100 + u, 100 + u, f"u{u} m{m}") for m in range(per_user)]
                   for u in range(users)}
        statuses: list[int] = []

        def send_all(user: int) -> None:  # one user's messages go one after another, as Telegram sends them
            for update in updates[user]:
                statuses.append(bot.api.deliver(update)[0])

        threads = [threading.Thread(target=send_all, args=(u,)) for u in range(users)]
        await asyncio.to_thread(lambda: ([t.start() for t in threads], [t.join() for t in threads]))
        total = users * per_user
        await wait_for(lambda: sum(len(answers_in(bot.api, 100 + u)) for u in range(users)) == total, "every answer")
        assert statuses == [200] * total
        for u in range(users):
            assert answers_in(bot.api, 100 + u) == [f"[u{u} m{m}] 국밥 어때요?" for m in range(per_user)]
    stored = rows(db, "SELECT c.user_id, t.text FROM turns t JOIN conversations c ON c.id = t.conversation_id "
                      "WHERE t.role = 'user' ORDER BY t.id")
    for u in range(users):
        assert [text for user, text in stored if user == 100 + u] == [f"u{u} m{m}" for m in range(per_user)]
    assert rows(db, "SELECT count(*) FROM turns WHERE role = 'assistant' AND status = 'ok'") == [(total,)]


async def test_only_the_last_replica_to_stop_deletes_the_webhook(db: Path) -> None:
    api = FakeBotAPI()
    url = f"sqlite+aiosqlite:///{db}"
    async with webhook_bot(url, FakeGenerator(echo), api=api, replica_name="first"):
        async with webhook_bot(url, FakeGenerator(echo), api=api, replica_name="second") as second:
            assert len(api.calls_to("setWebhook")) == 2
            assert (await second.post(api.message_update(1, 11, "둘째 복제본에게")))[0] == 200
            await wait_for(lambda: len(answers_in(api, 1)) == 1, "the answer")
        assert api.webhook is not None and not api.calls_to("deleteWebhook")  # the first one still serves
    assert api.webhook is None and len(api.calls_to("deleteWebhook")) == 1
    assert rows(db, "SELECT name, stopped_at IS NOT NULL FROM replicas ORDER BY id") == [("first", 1), ("second", 1)]
