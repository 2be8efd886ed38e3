"""A database URL is never shown with its password: not by `mechuri db`, not in logs (debug included), not in
errors, not in the settings' repr. And a database that cannot be reached gets one clear line, not a traceback."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import load_settings
from bot.store.database import mask_url, url_secrets
from bot.telegram.app import run_bot

ROOT = Path(__file__).resolve().parent.parent


def mechuri(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mechuri", "-v", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_mask_url_hides_the_password_and_nothing_else() -> None:
    assert mask_url("postgresql+asyncpg://bot:p%40ss@db.example:5432/mechuri?ssl=require") == \
        "postgresql+asyncpg://bot:***@db.example:5432/mechuri?ssl=require"
    assert mask_url("sqlite+aiosqlite:///mechuri.db") == "sqlite+aiosqlite:///mechuri.db"
    assert mask_url("not a url://bot:hunter2@host") == "not a url://bot:***@host"
    assert set(url_secrets("postgresql+asyncpg://bot:p%40ss@h/db")) == {"p@ss", "p%40ss"}


def test_settings_repr_masks_the_database_password() -> None:
    settings = load_settings(env_file=None, database_url="postgresql+asyncpg://bot:hunter2@h/db",
                             webhook_secret="w-secret", telegram_bot_token="1:tok")
    shown = repr(settings) + str(settings)
    assert "hunter2" not in shown and "w-secret" not in shown and "1:tok" not in shown
    assert "postgresql+asyncpg://bot:***@h/db" in shown
    assert settings.database_url.endswith("bot:hunter2@h/db")  # the value itself is whole


def test_mechuri_db_upgrade_shows_the_url_masked(postgres_server, tmp_path: Path) -> None:
    name = postgres_server.create_database()
    url = postgres_server.url(name)
    try:
        done = mechuri("db", "upgrade", "--database-url", url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"database at head: {mask_url(url)}" in done.stdout
        assert "Running upgrade" in done.stderr  # Alembic's log was on, and at debug level
        assert postgres_server.password not in done.stdout + done.stderr
        down = mechuri("db", "downgrade", "base", "--database-url", url, cwd=tmp_path)
        assert down.returncode == 0 and postgres_server.password not in down.stdout + down.stderr
    finally:
        postgres_server.drop_database(name)


@pytest.mark.parametrize("problem", ["wrong password", "nothing listening"])
def test_an_unusable_database_gets_one_line_without_the_password(postgres_server, tmp_path: Path,
                                                                problem: str) -> None:
    wrong = "Wr0ng-pa55word"
    if problem == "wrong password":
        url = f"postgresql+asyncpg://mechuri:{wrong}@127.0.0.1:{postgres_server.port}/postgres"
    else:
        url = f"postgresql+asyncpg://mechuri:{wrong}@127.0.0.1:9/postgres"
    done = mechuri("db", "upgrade", "--database-url", url, cwd=tmp_path)
    assert done.returncode == 1
    assert "데이터베이스 오류" in done.stderr and "MECHURI_DATABASE_URL" in done.stderr
    assert "mechuri:***@127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr and wrong not in done.stdout + done.stderr


def test_the_bot_reports_an_unusable_database_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    wrong = "An0ther-pa55word"
    settings = load_settings(env_file=None, telegram_bot_token="123:abc",
                             database_url=f"postgresql+asyncpg://mechuri:{wrong}@127.0.0.1:9/postgres")

    async def never(_settings):  # the database fails first
        raise AssertionError("the model must not load before the database works")

    with caplog.at_level(logging.DEBUG):
        assert run_bot(settings, make_generator=never) == 1
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "is not usable" in logged and "mechuri:***@127.0.0.1:9/postgres" in logged
    assert wrong not in logged
