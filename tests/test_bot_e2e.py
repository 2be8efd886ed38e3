"""`run_bot` and `mechuri bot` end to end, in a subprocess, against the fake Bot API over HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bot_fixtures import all_turns, fresh_db
from fake_bot_api import FakeBotAPI, FakeBotServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "424242:E2E-secret-token"
ADMIN = 900
RUN_WITH_FAKE_GENERATOR = """
import sys
sys.path.insert(0, "tests")
from fakes import FakeGenerator
from bot.telegram.app import run_bot
from bot.settings import load_settings
import logging
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")

async def make_generator(settings):
    return FakeGenerator(["칼국수 어때요? 비 오는 날엔 뜨끈한 국물이죠.", "그럼 수제비는요?"], chunk=5, delay=0.01)

sys.exit(run_bot(load_settings(env_file=None), make_generator=make_generator))
"""


class BotProcess:
    """The bot in a subprocess; its log goes to a file so a failure can show it."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as sink:
            self.process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=sink)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                state = f"exited {self.process.returncode}" if self.process.returncode is not None else "timed out"
                raise AssertionError(f"{state} waiting for {what}; log tail:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> str:
        """SIGINT, as Ctrl+C would; returns the whole log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.log.read_text()


def keyboard_messages(api: FakeBotAPI, chat_id: int) -> list[dict]:
    return [m for m in api.chat_messages(chat_id) if "reply_markup" in m]


def bot_env(server: FakeBotServer, db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MECHURI_") and k != "TELEGRAM_BOT_TOKEN"}
    env.update({
        "TELEGRAM_BOT_TOKEN": TOKEN, "MECHURI_TELEGRAM_BASE_URL": server.base_url,
        "MECHURI_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "MECHURI_ADMIN_IDS": str(ADMIN),
        "MECHURI_USER_COOLDOWN_S": "0", "PYTHONUNBUFFERED": "1", **extra,
    })
    return env


def test_run_bot_serves_a_whole_conversation_over_http(tmp_path: Path) -> None:
    db = fresh_db(tmp_path)
    with sqlite3.connect(db) as raw:  # a turn left pending by a "crashed" earlier run
        raw.execute("INSERT INTO users (id, created_at, last_seen_at) VALUES (5, '2026-01-01', '2026-01-01')")
        raw.execute("INSERT INTO conversations (id, user_id, chat_id, opened_at) VALUES (1, 5, 5, '2026-01-01')")
        raw.execute("INSERT INTO turns (conversation_id, role, text, status, attempts, created_at) "
                    "VALUES (1, 'assistant', '', 'pending', 1, '2026-01-01')")
    api = FakeBotAPI()
    with FakeBotServer(api) as server:
        bot = BotProcess([sys.executable, "-c", RUN_WITH_FAKE_GENERATOR], ROOT, bot_env(server, db), tmp_path / "log")
        try:
            bot.wait_for(lambda: bool(api.calls_to("getUpdates")), "polling to start")
            api.push_update(api.message_update(1, 11, "/start"))
            api.push_update(api.message_update(1, 11, "비 오는 날 뭐 먹지"))
            bot.wait_for(lambda: len(keyboard_messages(api, 1)) == 1, "the first answer")
            first = keyboard_messages(api, 1)[0]
            data = first["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
            api.push_update(api.callback_update(1, 11, first["message_id"], data))
            bot.wait_for(lambda: len(api.chat_messages(1)) == 3 and len(keyboard_messages(api, 1)) == 1, "the retry")
        finally:
            log = bot.stop()
    assert bot.process.returncode == 0, log
    texts = [m["text"] for m in api.chat_messages(1)]
    assert "매운 요리 추천해줘" in texts[0]
    assert texts[1:] == ["칼국수 어때요? 비 오는 날엔 뜨끈한 국물이죠.", "그럼 수제비는요?"]
    assert keyboard_messages(api, 1)[0]["text"] == "그럼 수제비는요?"
    assert api.calls_to("sendMessageDraft") and api.calls_to("setMyCommands")
    assert [t[1:4] for t in all_turns(db)] == [
        ("assistant", "", "failed"),  # recovered at start-up
        ("user", "비 오는 날 뭐 먹지", "ok"),
        ("assistant", "칼국수 어때요? 비 오는 날엔 뜨끈한 국물이죠.", "rejected"),
        ("assistant", "그럼 수제비는요?", "ok"),
    ]
    assert "sendMessage" in log  # debug logging was on, so the request lines were there to leak
    assert TOKEN not in log and TOKEN.split(":")[1] not in log


def test_a_rejected_token_is_reported_without_the_token(tmp_path: Path) -> None:
    db = fresh_db(tmp_path)
    api = FakeBotAPI()
    api.fail("getMe", "unauthorized")
    with FakeBotServer(api) as server:
        bot = BotProcess([sys.executable, "-c", RUN_WITH_FAKE_GENERATOR], ROOT, bot_env(server, db), tmp_path / "log")
        bot.process.wait(timeout=60)
        log = bot.stop()
    assert bot.process.returncode == 2, log
    assert "TELEGRAM_BOT_TOKEN" in log and TOKEN not in log and TOKEN.split(":")[1] not in log


def bot_answers_and_reloads(tmp_path: Path, model_env: dict[str, str], adapter: Path, name: str,
                            wait_s: float = 30.0) -> tuple[list[str], list[tuple], str]:
    """`mechuri bot` on a model: a user's question, an admin's /reload of `adapter` (as `name`) and of a broken
    adapter, then /status. Returns the admin's messages, the stored turns and the bot's log."""
    db = fresh_db(tmp_path)
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    shutil.copytree(adapter, adapters / name)  # a symlink out of the folder would be refused
    (adapters / "broken").mkdir()
    (adapters / "broken" / "adapter_config.json").write_text("{ not json")
    api = FakeBotAPI()
    env = {**model_env, "MECHURI_ADAPTERS_DIR": str(adapters), "MECHURI_MAX_NEW_TOKENS": "24", "HF_HUB_OFFLINE": "1"}

    def admin_texts() -> list[str]:
        return [m["text"] for m in api.chat_messages(ADMIN)]

    with FakeBotServer(api) as server:
        bot = BotProcess([str(ROOT / ".venv" / "bin" / "mechuri"), "bot"], tmp_path, bot_env(server, db, **env),
                         tmp_path / "log")
        try:
            bot.wait_for(lambda: bool(api.calls_to("getUpdates")), "polling to start", timeout=120)
            api.push_update(api.message_update(1, 11, "매운 요리 추천해줘"))
            bot.wait_for(lambda: len(keyboard_messages(api, 1)) == 1, "the model's answer", timeout=wait_s)
            for count, adapter_name in ((2, name), (4, "broken")):
                api.push_update(api.message_update(ADMIN, ADMIN, f"/reload {adapter_name}"))
                bot.wait_for(lambda count=count: len(admin_texts()) == count, f"the reload report for {adapter_name}",
                             timeout=wait_s)
            api.push_update(api.message_update(ADMIN, ADMIN, "/status"))
            bot.wait_for(lambda: len(admin_texts()) == 5, "the status")
        finally:
            log = bot.stop()
    assert bot.process.returncode == 0, log
    return admin_texts(), all_turns(db), log


@pytest.mark.timeout(180)
def test_mechuri_bot_on_the_tiny_model_answers_and_reloads(
    tmp_path: Path, tiny_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    reports, turns, log = bot_answers_and_reloads(
        tmp_path, {"MECHURI_MODEL_BASE": str(tiny_model_dir), "MECHURI_QUANTIZATION": "none"}, tiny_adapter_dir, "spicy")
    assert "준비 완료" in reports[1] and "불러오지 못했어요" in reports[3] and "'spicy'" in reports[3], reports
    assert "어댑터: spicy" in reports[4] and "양자화: none" in reports[4], reports[4]
    assert [t[1] for t in turns] == ["user", "assistant"] and turns[1][3] == "ok"
    assert TOKEN not in log
