"""Helpers shared by the bot tests: a migrated SQLite file, a service on it, and raw reads through sqlite3."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fakes import FakeGenerator

from bot.conversation import ConversationService
from bot.settings import GenerationDefaults
from bot.storage import Store, run_upgrade


def fresh_db(tmp_path: Path, name: str = "history.db") -> Path:
    path = tmp_path / name
    run_upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@asynccontextmanager
async def service_on(db: Path, gen: FakeGenerator, **kwargs: Any) -> AsyncIterator[ConversationService]:
    store = Store(f"sqlite+aiosqlite:///{db}")
    try:
        yield ConversationService(store, gen, generation=GenerationDefaults(max_new_tokens=64), **kwargs)
    finally:
        await store.close()


def rows(db: Path, sql: str, *args: Any) -> list[tuple]:
    """Read through a separate sqlite3 connection: only committed rows are visible there."""
    with sqlite3.connect(db) as raw:
        return raw.execute(sql, args).fetchall()


def all_turns(db: Path) -> list[tuple]:
    return rows(db, "SELECT id, role, text, status, seed, reply_to FROM turns ORDER BY id")
