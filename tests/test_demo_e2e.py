"""The newcomer's path, end to end: build a demo model (reduced budget), pipe a session into `mechuri chat`."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from model.food.dishes import DishCatalog

MARKER = "메추리> "


def chat(lines: str, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for key in [k for k in env if k.startswith("MECHURI_")]:
        del env[key]
    return subprocess.run(
        [sys.executable, "-m", "mechuri", "chat", "--demo-quick", "--seed", "7", *extra], input=lines, capture_output=True, text=True,
        env=env, cwd=home, timeout=900,
    )


def answers(stdout: str) -> list[str]:
    return [line.removeprefix(MARKER) for line in stdout.splitlines() if line.startswith(MARKER)]


def hangul_share(text: str) -> float:
    letters = [c for c in text if not c.isspace()]
    return sum(1 for c in letters if "가" <= c <= "힣") / max(len(letters), 1)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("newcomer")


SESSION = "비 오는 날 뭐 먹지\n다른 거\n해장 추천\n다른 거\n"


def test_demo_chat_answers_retries_and_remembers(home: Path) -> None:
    first = chat(SESSION, home)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "SMALL DEMO MODEL" in first.stderr and "KoAlpaca-Polyglot-5.8B" in first.stderr
    said = answers(first.stdout)
    assert len(said) == 4, first.stdout
    assert all(hangul_share(a) > 0.6 for a in said), said
    catalog = DishCatalog.load()
    dishes = [set(catalog.names_in(a)) for a in said]
    pairs = [(dishes[0], dishes[1]), (dishes[2], dishes[3])]
    # "다른 거" never brings a turned-down dish back...
    assert all(not (rejected & retried) for rejected, retried in pairs), said
    # ...and the answers are food recommendations: a named dish, then a different named dish on "다른 거".
    assert any(rejected and retried for rejected, retried in pairs), said

    db = home / "data" / "mechuri" / "demo.db"
    with sqlite3.connect(db) as raw:
        turns = raw.execute("SELECT conversation_id, role, status, seed FROM turns ORDER BY id").fetchall()
    assert [(r, s) for _, r, s, _ in turns] == [("user", "ok"), ("assistant", "rejected"), ("assistant", "ok")] * 2
    assert turns[1][3] != turns[2][3] and turns[4][3] != turns[5][3]  # a new seed for each retry

    # A second run (a "restart") continues the same conversation from the same file.
    second = chat("매운 요리 추천해줘\n", home)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "building the demo model" not in second.stderr  # cached, not rebuilt
    assert len(answers(second.stdout)) == 1
    with sqlite3.connect(db) as raw:
        later = raw.execute("SELECT conversation_id, role FROM turns ORDER BY id").fetchall()
    assert later[: len(turns)] == [(c, r) for c, r, _, _ in turns]
    assert len(later) == len(turns) + 2 and {c for c, _ in later} == {turns[0][0]}
    assert re.search(r"demo\.db", second.stderr)

    # The same script with the same --seed on a fresh history file gives the same answers: sessions are reproducible.
    again = chat(SESSION, home, "--database-url", f"sqlite+aiosqlite:///{home / 'again.db'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert answers(again.stdout) == said
