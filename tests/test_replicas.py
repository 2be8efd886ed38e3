"""Two `mechuri bot --webhook` processes on one real PostgreSQL database, updates POSTed to both in turn.

What a user must not notice: 50 users × 5 messages split across the replicas are all answered, in the order sent,
each exactly once; "다른 거" pressed on both replicas at once runs once; a replica killed with -9 in the middle of an
answer loses nothing stored, and the other replica recovers its pending turn and tells the user. The last replica
to stop removes the webhook. No log line holds a secret.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fake_bot_api import FakeBotAPI, FakeBotServer
from replica_fixtures import (
    HANG,
    KEYBOARD,
    ROOT,
    SECRET,
    TOKEN,
    ReplicaProcess,
    answers_in,
    check_order,
    send_users,
    wait_until,
)

from bot.service.replies import REFUSED_STALE, REFUSED_STATUS
from bot.store.history import INTERRUPTED


def text(user: int, m: int) -> str:
    return f"u{user} m{m}"


@pytest.mark.timeout(240)
def test_two_replicas_keep_every_users_order(postgres_db, tmp_path: Path) -> None:
    api = FakeBotAPI()
    users, per_user = list(range(1, 51)), 5
    with FakeBotServer(api) as server:
        replicas = [ReplicaProcess(i, postgres_db.url, server.base_url, tmp_path) for i in range(2)]
        try:
            for replica in replicas:
                replica.wait_ready()
            assert len(api.calls_to("setWebhook")) == 2  # each replica registers the same public URL and secret
            assert api.webhook["url"] == "http://127.0.0.1:9/telegram" and api.webhook["secret_token"] == SECRET

            # 1. 50 users × 5 messages, each user's messages alternating between the replicas.
            send_users(api, replicas, users, per_user, text)
            total = len(users) * per_user
            wait_until(lambda: sum(len(answers_in(api, u)) for u in users) == total, "250 answers",
                       replicas=replicas)
            problems: list[str] = []
            counts = check_order(postgres_db, users, per_user, text, problems)
            assert counts == {"lost": 0, "out_of_order": 0, "double_answers": 0}, problems[:5]
            for user in users:
                assert answers_in(api, user) == [f"[{text(user, m)}] 국밥 어때요?" for m in range(per_user)]
            assert postgres_db.rows("SELECT count(*) FROM turns WHERE status <> 'ok'") == [(0,)]

            # 2. "다른 거" on the last answer, pressed on both replicas at once: one new answer, one polite refusal.
            pressed = users[:5]
            for user in pressed:
                last = [m for m in api.chat_messages(user) if KEYBOARD in m][-1]
                data = last[KEYBOARD]["inline_keyboard"][0][0]["callback_data"]
                update = api.callback_update(user, user, last["message_id"], data)
                posts = [threading.Thread(target=api.deliver, args=(update,), kwargs={"url": r.url}) for r in replicas]
                for post in posts:
                    post.start()
                for post in posts:
                    post.join()
            wait_until(lambda: all(len(api.chat_messages(u)) == per_user + 2 for u in pressed),
                       "a retry and a refusal in each chat", replicas=replicas)
            for user in pressed:
                new_texts = [m["text"] for m in api.chat_messages(user)[per_user:]]
                assert sum(t in (REFUSED_STATUS, REFUSED_STALE) for t in new_texts) == 1, new_texts
                assert answers_in(api, user)[-1].startswith(f"[{text(user, per_user - 1)}\n\n### 맥락: 이미 거절한 메뉴")
            retried = postgres_db.rows(
                "SELECT c.user_id, count(*), sum(CASE WHEN a.status = 'rejected' THEN 1 ELSE 0 END) FROM turns a "
                "JOIN conversations c ON c.id = a.conversation_id WHERE a.role = 'assistant' AND c.user_id <= 5 "
                "GROUP BY c.user_id ORDER BY c.user_id")
            assert retried == [(u, per_user + 1, 1) for u in pressed]  # one generation per double press

            # 3. Replica 0 is killed with -9 in the middle of an answer.
            victim, survivor = replicas
            stuck = 999
            status, _ = api.deliver(api.message_update(stuck, stuck, f"{HANG} 주세요"), url=victim.url)
            assert status == 200  # acknowledged: the question is stored
            victim.wait_for_line("GENERATING")
            victim.kill()
            wait_until(lambda: any("멈췄어요" in m["text"] for m in api.chat_messages(stuck)),
                       "the survivor telling the user", timeout=30, replicas=replicas)
            assert postgres_db.rows(
                "SELECT t.role, t.status, t.error FROM turns t JOIN conversations c ON c.id = t.conversation_id "
                "WHERE c.user_id = ?1 ORDER BY t.id", stuck) == [("user", "ok", None), ("assistant", "failed", INTERRUPTED)]
            assert api.deliver(api.message_update(stuck, stuck, "다시 물어볼게요"), url=survivor.url)[0] == 200
            wait_until(lambda: answers_in(api, stuck) == ["[다시 물어볼게요] 국밥 어때요?"], "the survivor's answer",
                       replicas=replicas)
            # Nothing stored before the kill was lost.
            assert postgres_db.rows("SELECT count(*) FROM turns WHERE role = 'user'") == [(total + 2,)]
            assert check_order(postgres_db, users, per_user, text)["lost"] == 0
        finally:
            codes = [replica.stop() for replica in replicas]
    assert codes[1] == 0
    assert api.webhook is None  # the survivor was the last replica alive: it removed the webhook
    for replica in replicas:
        log = replica.log_text()
        assert "setWebhook" in log  # debug logging was on: the request lines were there to leak
        for secret in (TOKEN, TOKEN.split(":")[1], SECRET, postgres_db.server.password):
            assert secret not in log, f"replica {replica.index} logged a secret"


@pytest.mark.timeout(180)
def test_the_replica_benchmark_runs_and_checks_what_it_claims(postgres_server) -> None:
    # postgres_server: skip (or, under MECHURI_REQUIRE_POSTGRES=1, fail) where no server can start; the bench
    # starts its own.
    done = subprocess.run([sys.executable, "bench/replicas.py", "--users", "4", "--per-user", "2", "--sequential", "4",
                           "--no-single"], cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| 2 |"))
    assert "| 4 × 2 | 8 / 8 |" in row and row.endswith("| 0 | 0 / 0 | 0 |"), row
