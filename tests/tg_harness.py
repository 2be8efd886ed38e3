"""A real PTB Application on a real SQLite file, talking to the in-process fake Bot API. Shared by test_bot_* and
bench/bot_overhead.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot_fixtures import fresh_db
from databases import url_of
from fake_bot_api import FakeBotAPI, FakeRequest
from fakes import FakeGenerator
from telegram import Update
from telegram.ext import AIORateLimiter, Application

from bot.service.conversation import ConversationService
from bot.service.runtime import build_service
from bot.settings import Settings, load_settings
from bot.store.database import Database
from bot.store.history import Store
from bot.telegram.app import build_application, membership_for
from bot.telegram.sending import FloodControl

ADMIN = 900
TOKEN = "123456:TEST-token-never-logged"


def bot_settings(tmp_path: Path, db: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": TOKEN, "database_url": url_of(db), "admin_ids": [ADMIN],
        "user_cooldown_s": 0.0, "adapters_dir": tmp_path / "adapters", "max_new_tokens": 64,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@dataclass
class Harness:
    app: Application
    api: FakeBotAPI
    service: ConversationService
    store: Store
    settings: Settings
    generator: Any
    db: Any  # a SQLite path, or a test database (tests/databases.py)

    async def send(self, update: dict[str, Any]) -> None:
        """Process one update to the end (handlers awaited), as PTB does for one polled update."""
        await self.app.process_update(Update.de_json(update, self.app.bot))

    async def text(self, chat_id: int, user_id: int, text: str, **kwargs: Any) -> dict[str, Any]:
        update = self.api.message_update(chat_id, user_id, text, **kwargs)
        await self.send(update)
        return update

    async def press(self, chat_id: int, user_id: int, message_id: int, data: str) -> None:
        await self.send(self.api.callback_update(chat_id, user_id, message_id, data))

    async def feed(self, updates: list[dict[str, Any]]) -> None:
        """Queue updates the way the polling loop does; they are then handled concurrently."""
        for update in updates:
            await self.app.update_queue.put(Update.de_json(update, self.app.bot))

    def last_message(self, chat_id: int) -> dict[str, Any]:
        return self.api.chat_messages(chat_id)[-1]


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def telegram_bot(
    tmp_path: Path, generator: Any = None, *, db: Any = None, latency_s: float = 0.0, replica: bool = False,
    catalog: Any = None, safety: Any = None, **overrides: Any,
) -> AsyncIterator[Harness]:
    """`replica`: join the database's replicas first, as `mechuri bot` does (on PostgreSQL: shared user locks)."""
    db = db or await asyncio.to_thread(fresh_db, tmp_path)
    settings = bot_settings(tmp_path, db, **overrides)
    generator = generator if generator is not None else FakeGenerator(["김치찌개 어때요? 얼큰하고 든든해요."])
    database = Database(settings.database_url)
    membership = membership_for(settings, database) if replica else None
    if membership is not None:
        await membership.start()
    store = Store(database, replica_id=membership.replica_id if membership is not None else None)
    api = FakeBotAPI()
    service = build_service(settings, store, generator, catalog=catalog, safety=safety,
                            locks=membership.user_locks() if membership is not None else None)
    # Telegram's rates off (tests send far more than 30 messages a second); flood control's retries as in production.
    limiter = FloodControl(AIORateLimiter(overall_max_rate=0, group_max_rate=0, max_retries=3))
    app = build_application(settings, service, request=FakeRequest(api, latency_s=latency_s),
                            get_updates_request=FakeRequest(api), rate_limiter=limiter)
    try:
        async with app:
            await app.post_init(app)
            await app.start()
            try:
                yield Harness(app, api, service, store, settings, generator, db)
            finally:
                await app.stop()
    finally:
        if membership is not None:
            await membership.stop()
        await database.close()
