"""The history store on real SQLite files: migrations, WAL, reopening, recovery."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from bot.storage import Base, Store, alembic_config, run_downgrade, run_upgrade

REPO = Path(__file__).resolve().parents[1]
TABLES = {"users", "conversations", "turns"}


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} - {"alembic_version"}


def indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}


def test_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_upgrade(url_of(db))
    assert tables(db) == TABLES
    assert {"ix_conversations_user_chat_open", "uq_conversations_one_open", "ix_turns_conversation_id"} <= indexes(db)
    run_downgrade(url_of(db), "base")
    assert tables(db) == set()
    run_upgrade(url_of(db))
    assert tables(db) == TABLES


def test_migrations_match_the_models(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_upgrade(url_of(db))
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


def test_env_py_migrates_a_connection_it_is_given() -> None:
    # An in-memory database exists only on its connection: env.py must use the one handed to it.
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        config = alembic_config("sqlite://")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        assert TABLES <= set(inspect(connection).get_table_names())
    engine.dispose()


def test_alembic_ini_works_from_the_repo_root(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    env = {**os.environ, "MECHURI_DATABASE_URL": url_of(db)}
    alembic = Path(sys.executable).with_name("alembic")
    done = subprocess.run([str(alembic), "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert tables(db) == TABLES


async def test_store_upgrade_inside_a_running_loop_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with Store(url_of(db)) as store:
        await store.upgrade()
        await store.add_question(1, 7, "점심 뭐 먹지?")
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT count(*) FROM turns").fetchone()[0] == 1


async def test_data_survives_reopening_and_times_are_utc(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with Store(url_of(db)) as store:
        await store.upgrade()
        question = await store.add_question(5, 9, "저녁 추천", user_name="하늘")
        answer = await store.start_answer(question, seed=42, params={"temperature": 0.7}, adapter_name="v1",
                                          adapter_version="abc")
        await store.finish_answer(answer.id, status="ok", text="비빔밥", prompt_tokens=10, new_tokens=3)
    async with Store(url_of(db)) as store:
        await store.upgrade()  # a second upgrade is a no-op
        conversation = await store.open_conversation(5, 9)
        assert conversation is not None
        turns = await store.conversation_turns(conversation.id)
    assert [(t.role, t.text, t.status) for t in turns] == [("user", "저녁 추천", "ok"), ("assistant", "비빔밥", "ok")]
    assert turns[1].seed == 42 and turns[1].params == {"temperature": 0.7} and turns[1].reply_to == turns[0].id
    # SQLite gives naive datetimes back; they hold UTC.
    created = turns[0].created_at
    assert created.tzinfo is None
    assert abs(created.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_recover_marks_pending_turns_failed(tmp_path: Path) -> None:
    async with Store(url_of(tmp_path / "p.db")) as store:
        await store.upgrade()
        question = await store.add_question(1, 1, "야식?")
        await store.start_answer(question, seed=1, params={}, adapter_name=None, adapter_version=None)
        assert await store.count_turns("pending") == 1
        assert await store.recover() == 1
        assert await store.count_turns("pending") == 0
        assert await store.count_turns("failed") == 1
        assert await store.recover() == 0


async def test_one_open_conversation_per_chat_and_user(tmp_path: Path) -> None:
    async with Store(url_of(tmp_path / "c.db")) as store:
        await store.upgrade()
        a = await store.add_question(1, 1, "a")
        b = await store.add_question(1, 1, "b")
        other_chat = await store.add_question(2, 1, "c")
        assert a.conversation_id == b.conversation_id != other_chat.conversation_id
        assert await store.close_conversation(1, 1)
        assert not await store.close_conversation(1, 1)
        c = await store.add_question(1, 1, "d")
        assert c.conversation_id not in (a.conversation_id, other_chat.conversation_id)


async def test_closing_twice_is_harmless(tmp_path) -> None:
    from bot.storage import Store

    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'twice.db'}")
    await store.upgrade()
    await store.add_question(1, 1, "저녁 뭐 먹지")
    await store.close()
    await store.close()
