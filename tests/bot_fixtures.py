"""Helpers shared by the bot tests: a migrated database (SQLite file or PostgreSQL), a service on it, and raw reads
through a connection of their own. `db` is a test database (tests/databases.py) or, in older tests, a SQLite path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from databases import as_database, url_of
from fakes import FakeGenerator

from bot.service.conversation import ConversationService
from bot.settings import GenerationDefaults
from bot.store.database import run_upgrade
from bot.store.history import Store


def fresh_db(tmp_path: Path, name: str = "history.db") -> Path:
    path = tmp_path / name
    run_upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@asynccontextmanager
async def service_on(db: Any, gen: FakeGenerator, **kwargs: Any) -> AsyncIterator[ConversationService]:
    store = Store(url_of(db))
    try:
        yield ConversationService(store, gen, generation=GenerationDefaults(max_new_tokens=64), **kwargs)
    finally:
        await store.close()


def rows(db: Any, sql: str, *args: Any) -> list[tuple]:
    """Read through a separate connection: only committed rows are visible there."""
    return as_database(db).rows(sql, *args)


def all_turns(db: Any) -> list[tuple]:
    return rows(db, "SELECT id, role, text, status, seed, reply_to FROM turns ORDER BY id")
