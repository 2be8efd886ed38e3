"""The history store on real SQLite files and a real PostgreSQL server: migrations, WAL, reopening, recovery."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import BACKENDS
from sqlalchemy import create_engine, inspect

from bot.store.database import alembic_config, run_downgrade, run_upgrade, sync_url
from bot.store.history import QuestionGone, Store
from bot.store.schema import Base

REPO = Path(__file__).resolve().parents[1]
TABLES = {"users", "conversations", "turns", "replicas", "user_locks", "taste_items", "recommended_dishes",
          "taste_questions"}


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} - {"alembic_version"}


def indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}


@pytest.fixture(params=BACKENDS)
def empty_url(request, tmp_path: Path):
    """An empty database (no tables), on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield url_of(tmp_path / "m.db")
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


def table_names(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_every_revision_upgrades_and_downgrades(empty_url: str) -> None:
    steps = revisions()
    assert steps[0] == "0001" and "0004" in steps
    previous = "base"
    for revision in steps:
        run_upgrade(empty_url, revision)
        assert current_revision(empty_url) == revision
        run_downgrade(empty_url, previous)
        assert current_revision(empty_url) == (None if previous == "base" else previous)
        run_upgrade(empty_url, revision)
        previous = revision
    assert table_names(empty_url) >= TABLES
    run_downgrade(empty_url, "base")
    assert table_names(empty_url) == set()


def test_0004_keeps_the_turns_it_finds(empty_url: str) -> None:
    run_upgrade(empty_url, "0001")
    engine = create_engine(sync_url(empty_url))
    with engine.begin() as db:
        db.exec_driver_sql("INSERT INTO users (id, created_at, last_seen_at) VALUES (5, '2026-01-01', '2026-01-01')")
        db.exec_driver_sql("INSERT INTO conversations (id, user_id, chat_id, opened_at) VALUES (1, 5, 5, '2026-01-01')")
        db.exec_driver_sql("INSERT INTO turns (id, conversation_id, role, text, status, attempts, created_at) "
                           "VALUES (1, 1, 'user', '비 오는 날 뭐 먹지', 'ok', 1, '2026-01-01')")
    run_upgrade(empty_url, "0004")
    with engine.connect() as db:
        assert db.exec_driver_sql("SELECT id, text, replica_id FROM turns").all() == [(1, "비 오는 날 뭐 먹지", None)]
    engine.dispose()


def test_0003_keeps_the_turns_and_accepts_only_up_or_down_votes(empty_url: str) -> None:
    run_upgrade(empty_url, "0002")
    engine = create_engine(sync_url(empty_url))
    with engine.begin() as db:
        db.exec_driver_sql("INSERT INTO users (id, created_at, last_seen_at) VALUES (5, '2026-01-01', '2026-01-01')")
        db.exec_driver_sql("INSERT INTO conversations (id, user_id, chat_id, opened_at) VALUES (1, 5, 5, '2026-01-01')")
        db.exec_driver_sql("INSERT INTO turns (id, conversation_id, role, text, status, attempts, created_at) "
                           "VALUES (1, 1, 'assistant', '김치찌개 어때요?', 'rejected', 1, '2026-01-01')")
    run_upgrade(empty_url, "0003")
    with engine.connect() as db:
        rows = db.exec_driver_sql("SELECT id, text, status, prompt, completion, vote FROM turns").all()
    assert rows == [(1, "김치찌개 어때요?", "rejected", None, None, None)]
    with engine.begin() as db:
        db.exec_driver_sql("UPDATE turns SET vote = 'up' WHERE id = 1")
    with pytest.raises(Exception, match=r"(?i)check"), engine.begin() as db:
        db.exec_driver_sql("UPDATE turns SET vote = 'meh' WHERE id = 1")
    engine.dispose()


def test_migrations_match_the_models(empty_url: str) -> None:
    run_upgrade(empty_url)
    engine = create_engine(sync_url(empty_url))
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


async def test_data_survives_reopening_and_times_are_utc(database) -> None:
    async with Store(database.url) as store:
        question = await store.add_question(5, 9, "저녁 추천", user_name="하늘")
        _, answer, _ = await store.begin_answer(question, seed=42, params={"temperature": 0.7}, adapter_name="v1",
                                                adapter_version="abc")
        await store.finish_answer(answer.id, status="ok", text="비빔밥", prompt_tokens=10, new_tokens=3)
    async with Store(database.url) as store:
        await store.upgrade()  # a second upgrade is a no-op
        [(conversation_id,)] = database.rows("SELECT id FROM conversations WHERE chat_id = 5 AND user_id = 9 "
                                             "AND closed_at IS NULL")
        turns = await store.conversation_turns(conversation_id)
    assert [(t.role, t.text, t.status) for t in turns] == [("user", "저녁 추천", "ok"), ("assistant", "비빔밥", "ok")]
    assert turns[1].seed == 42 and turns[1].params == {"temperature": 0.7} and turns[1].reply_to == turns[0].id
    created = turns[0].created_at
    if database.kind == "sqlite":  # SQLite gives naive datetimes back; they hold UTC
        assert created.tzinfo is None
        created = created.replace(tzinfo=UTC)
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)


def count(database, status: str) -> int:
    return database.rows("SELECT count(*) FROM turns WHERE status = ?", status)[0][0]


async def test_recover_marks_pending_turns_failed(database) -> None:
    async with Store(database.url) as store:
        question = await store.add_question(1, 1, "야식?")
        await store.begin_answer(question, seed=1, params={}, adapter_name=None, adapter_version=None)
        assert count(database, "pending") == 1
        assert await store.recover() == 1
        assert count(database, "pending") == 0
        assert count(database, "failed") == 1
        assert await store.recover() == 0


async def test_one_open_conversation_per_chat_and_user(database) -> None:
    async with Store(database.url) as store:
        a = await store.add_question(1, 1, "a")
        b = await store.add_question(1, 1, "b")
        other_chat = await store.add_question(2, 1, "c")
        assert a.conversation_id == b.conversation_id != other_chat.conversation_id
        assert await store.close_conversation(1, 1)
        assert not await store.close_conversation(1, 1)
        c = await store.add_question(1, 1, "d")
        assert c.conversation_id not in (a.conversation_id, other_chat.conversation_id)


async def test_first_questions_from_two_processes_at_once_share_one_conversation(database) -> None:
    # Two stores stand for two bot processes: both find no user and no open conversation, both try to create them.
    stores = [Store(database.url) for _ in range(2)]
    try:
        for round_ in range(5):
            user = 100 + round_
            first, second = await asyncio.gather(*(s.add_question(1, user, f"질문 {i}") for i, s in enumerate(stores)))
            assert first.conversation_id == second.conversation_id
    finally:
        for store in stores:
            await store.close()
    assert database.rows("SELECT count(*) FROM conversations") == [(5,)]
    assert database.rows("SELECT count(*) FROM users") == [(5,)]


async def test_an_answer_to_a_deleted_question_says_so(database) -> None:
    async with Store(database.url) as store:
        question = await store.add_question(1, 1, "곧 지워질 질문")
        await store.forget_user(1)
        with pytest.raises(QuestionGone):
            await store.begin_answer(question, seed=1, params={}, adapter_name=None, adapter_version=None)
        with pytest.raises(QuestionGone):
            await store.begin_answer(question, seed=1, params={}, adapter_name=None, adapter_version=None,
                                     history_limit=0)
    assert database.rows("SELECT count(*) FROM turns") == [(0,)]


async def test_closing_twice_is_harmless(tmp_path) -> None:
    from bot.store.history import Store

    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'twice.db'}")
    await store.upgrade()
    await store.add_question(1, 1, "저녁 뭐 먹지")
    await store.close()
    await store.close()
