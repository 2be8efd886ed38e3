"""The page's chat handlers (bot/web/chat.py) on the real service and SQLite with a scripted generator: the polite
lines a web user gets when the service cannot answer, and what a forged browser key gets. No browser, no model."""

from __future__ import annotations

from pathlib import Path

import pytest
from bot_fixtures import all_turns, fresh_db, service_on
from fakes import FakeGenerator

from bot.service import replies
from bot.service.ordering import UserLines
from bot.store.users import new_browser_key
from bot.web.chat import RELOAD_PAGE, Latest, WebChat


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


async def last(updates) -> tuple[list, Latest]:
    results = [update async for update in updates]
    return results[-1]


def texts(history: list) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in history]


async def test_a_busy_generator_gets_the_polite_line_and_keeps_the_question(db: Path) -> None:
    async with service_on(db, FakeGenerator(busy=True)) as service:
        history, latest = await last(WebChat(service).send("매운 거 추천해줘", [], new_browser_key()))
    assert texts(history) == [("user", "매운 거 추천해줘"), ("assistant", replies.BUSY)] and latest == Latest()
    turns = all_turns(db)
    assert turns[0][1:3] == ("user", "매운 거 추천해줘")  # stored, as the message says
    assert not [t for t in turns if t[1] == "assistant" and t[3] == "ok"]


async def test_too_soon_and_streaming(db: Path) -> None:
    async with service_on(db, FakeGenerator(["떡볶이 어때요? 맵고 달아요."], chunk=2, delay=0.01)) as service:
        service.lines = UserLines(cooldown_s=60)
        chat, key = WebChat(service), new_browser_key()
        seen = [h[-1]["content"] async for h, _ in chat.send("매운 거", [], key)]
        assert seen[0] == "…" and seen[-1] == "떡볶이 어때요? 맵고 달아요." and len(seen) >= 3  # streamed
        history, latest = await last(chat.send("또", [], key))
        assert history[-1]["content"].startswith("조금만 천천히") and latest == Latest()
        # "다른 거" is also paced at the door; the answer it would replace stays shown.
        shown = [{"role": "user", "content": "매운 거"}, {"role": "assistant", "content": seen[-1]}]
        previous = Latest(turn_id=2, can_retry=True, can_vote=True)
        history, latest = await last(chat.retry(shown, key, previous))
        assert history[:2] == shown and history[-1]["content"].startswith("조금만 천천히") and latest == previous


async def test_a_forged_key_is_told_to_reload_and_nothing_is_stored(db: Path) -> None:
    async with service_on(db, FakeGenerator()) as service:
        chat = WebChat(service)
        history, _ = await last(chat.send("안녕", [], "short"))
        assert history[-1]["content"] == RELOAD_PAGE
        assert await chat.vote(True, None, Latest(turn_id=1, can_vote=True)) == RELOAD_PAGE
        key, history, latest = await chat.open("not a key")
        assert len(key) >= 32 and history == [] and latest == Latest()
    assert all_turns(db) == []
