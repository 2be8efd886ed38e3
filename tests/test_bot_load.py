"""200 users × 5 messages at once through the real Telegram path (PTB Application, handlers, service, store), on
SQLite and on PostgreSQL (with the shared user locks `mechuri bot` takes there): 0 lost, each user's order kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeGenerator
from replica_fixtures import answers_in, check_order
from tg_harness import telegram_bot, wait_until

USERS, PER_USER = 200, 5


def text(user: int, m: int) -> str:
    return f"u{user} m{m}"


def echo(prompt: str, seed: int) -> str:
    return f"[{prompt.rsplit('### 질문:', 1)[1].split(chr(10) * 2 + '### 답변:', 1)[0].strip()}] 라면 어때요?"


@pytest.mark.timeout(240)
async def test_two_hundred_users_at_once_lose_nothing_and_keep_order(database, tmp_path: Path) -> None:
    users = list(range(1, USERS + 1))
    async with telegram_bot(tmp_path, FakeGenerator(echo, chunk=10_000), db=database, replica=True) as h:
        assert (h.service.lines.shared is not None) == (database.kind == "postgresql")
        # Interleaved, as they would arrive: every user's first message, then every user's second, …
        await h.feed([h.api.message_update(u, u, text(u, m)) for m in range(PER_USER) for u in users])
        await wait_until(lambda: sum(len(answers_in(h.api, u)) for u in users) == USERS * PER_USER, timeout=180,
                         what="1000 answers")
        for user in users:
            assert answers_in(h.api, user) == [f"[{text(user, m)}] 라면 어때요?" for m in range(PER_USER)]
    problems: list[str] = []
    assert check_order(database, users, PER_USER, text, problems) == {
        "lost": 0, "out_of_order": 0, "double_answers": 0}, problems[:3]
