"""Bot replicas as real processes: `run_bot(webhook=True)` with a fake generator, sharing one database and one fake
Bot API (tests/fake_bot_api.py). Used by tests/test_replicas.py and bench/replicas.py.

The fake generator answers "[question] 국밥 어때요?", so an answer names its question and order can be checked from
the chat alone. A question containing "멈춰" hangs its generation after printing GENERATING on stdout: the moment
to kill the replica with -9.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fake_bot_api import FakeBotAPI

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "424242:REPLICA-secret-token"
SECRET = "replica-WEBHOOK_secret-0123"
HANG = "멈춰"
KEYBOARD = "reply_markup"

REPLICA_SCRIPT = """
import asyncio, logging, sys
sys.path.insert(0, {tests!r})
from fakes import FakeGenerator
from bot.telegram.app import run_bot
from bot.settings import load_settings

logging.basicConfig(level=logging.{level}, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def question_of(prompt):
    return prompt.rsplit("### 질문:", 1)[1].split("\\n\\n### 답변:", 1)[0].strip()


class Generator(FakeGenerator):
    def stream(self, req):
        if {hang!r} in question_of(req.prompt):
            print("GENERATING", flush=True)
            self.block = asyncio.Event()  # never set: the replica is killed here
        return super().stream(req)


async def make_generator(settings):
    return Generator(lambda prompt, seed: f"[{{question_of(prompt)}}] 국밥 어때요?", delay={delay})

sys.exit(run_bot(load_settings(env_file=None), make_generator=make_generator, webhook=True))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ReplicaProcess:
    """One `mechuri bot --webhook` process (through run_bot, with the fake generator). Its log goes to a file."""

    def __init__(self, index: int, database_url: str, bot_api_url: str, workdir: Path, *, lease_s: float = 3.0,
                 delay: float = 0.002, log_level: str = "DEBUG") -> None:
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/telegram"
        self.log = workdir / f"replica{index}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MECHURI_") and k != "TELEGRAM_BOT_TOKEN"}
        env.update({
            "TELEGRAM_BOT_TOKEN": TOKEN, "MECHURI_TELEGRAM_BASE_URL": bot_api_url,
            "MECHURI_DATABASE_URL": database_url, "MECHURI_USER_COOLDOWN_S": "0",
            # The public URL a load balancer would serve; the tests POST to each replica's own port instead.
            "MECHURI_WEBHOOK_URL": "http://127.0.0.1:9/telegram", "MECHURI_WEBHOOK_PORT": str(self.port),
            "MECHURI_WEBHOOK_SECRET": SECRET, "MECHURI_REPLICA_NAME": f"replica-{index}",
            "MECHURI_REPLICA_LEASE_S": str(lease_s), "PYTHONUNBUFFERED": "1",
        })
        script = REPLICA_SCRIPT.format(tests=str(ROOT / "tests"), hang=HANG, delay=delay, level=log_level)
        with self.log.open("w") as sink:
            self.process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                                            stdout=subprocess.PIPE, stderr=sink, text=True)

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"replica {self.index} did not start; log tail:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def wait_for_line(self, expected: str, timeout: float = 30.0) -> None:
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not found or found[0].strip() != expected:
            raise AssertionError(f"replica {self.index} never printed {expected}; log:\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0,
               replicas: list[ReplicaProcess] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- replica {r.index}:\n{r.log_text()[-2000:]}" for r in replicas)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(0.02)


def answers_in(api: FakeBotAPI, chat_id: int) -> list[str]:
    return [m["text"] for m in api.chat_messages(chat_id) if KEYBOARD in m]


def send_users(api: FakeBotAPI, replicas: list[ReplicaProcess], users: list[int], per_user: int,
               text: Callable[[int, int], str]) -> list[float]:
    """Each user sends `per_user` messages one after another (the next once the previous was acknowledged), to the
    replicas in turn; users send at once. Returns each POST's time to its 200, in seconds."""
    acks: list[float] = []
    failures: list[str] = []

    def one_user(user: int) -> None:
        for m in range(per_user):
            replica = replicas[(user + m) % len(replicas)]
            started = time.perf_counter()
            status, body = api.deliver(api.message_update(user, user, text(user, m)), url=replica.url)
            acks.append(time.perf_counter() - started)
            if status != 200:
                failures.append(f"user {user} message {m}: HTTP {status} {body[:200]!r}")

    threads = [threading.Thread(target=one_user, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise AssertionError("webhook POSTs failed: " + "; ".join(failures[:5]))
    return acks


def check_order(db: Any, users: list[int], per_user: int, text: Callable[[int, int], str],
                problems: list[str] | None = None) -> dict[str, int]:
    """From the database: every question stored, answered exactly once (ok), in the order sent. `problems` collects
    a line per user that is out of order."""
    found = db.rows(
        "SELECT c.user_id, q.id, q.text, count(a.id), sum(CASE WHEN a.status = 'ok' THEN 1 ELSE 0 END), min(a.id) "
        "FROM turns q JOIN conversations c ON c.id = q.conversation_id LEFT JOIN turns a ON a.reply_to = q.id "
        "WHERE q.role = 'user' GROUP BY c.user_id, q.id, q.text ORDER BY q.id"
    )
    by_user: dict[int, list[tuple[Any, ...]]] = {}
    for row in found:
        by_user.setdefault(row[0], []).append(row)
    lost = out_of_order = doubled = 0
    for user in users:
        mine = by_user.get(user, [])
        expected = [text(user, m) for m in range(per_user)]
        lost += per_user - sum(1 for row in mine if row[4] == 1)
        doubled += sum(1 for row in mine if row[3] > 1)
        answer_ids = [row[5] or 0 for row in mine]
        if [row[2] for row in mine] != expected or answer_ids != sorted(answer_ids):
            out_of_order += 1
            if problems is not None:
                problems.append(f"user {user}: questions {[(row[1], row[2]) for row in mine]}, answers {answer_ids}")
    return {"lost": lost, "out_of_order": out_of_order, "double_answers": doubled}
