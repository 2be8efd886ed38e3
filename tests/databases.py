"""The databases a test can run on: a migrated SQLite file, or a migrated database on the session's PostgreSQL server.

Both have `url` (the async URL the bot is configured with) and `rows(sql, *args)`, which reads committed rows through
a connection of its own, so a test sees only what the bot really committed. The SQL is SQLite's (`?` and `?1`
placeholders); on PostgreSQL the placeholders are translated, so one test body runs on both.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from bot.store.database import run_upgrade


class SqliteDatabase:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite+aiosqlite:///{path}"

    @classmethod
    def fresh(cls, tmp_path: Path, name: str = "history.db") -> SqliteDatabase:
        path = tmp_path / name
        run_upgrade(f"sqlite+aiosqlite:///{path}")
        return cls(path)

    def rows(self, sql: str, *args: Any) -> list[tuple]:
        with sqlite3.connect(self.path) as raw:
            return raw.execute(sql, args).fetchall()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"SqliteDatabase({self.path.name})"


class PostgresDatabase:
    kind = "postgresql"

    def __init__(self, server: Any, name: str) -> None:
        self.server = server
        self.name = name
        self.url = server.url(name)
        self._connection: Any = None

    def rows(self, sql: str, *args: Any) -> list[tuple]:
        if sql.lstrip().upper().startswith("PRAGMA FOREIGN_KEY_CHECK"):
            return []  # PostgreSQL checks every foreign key on write: no row can break one afterwards
        if self._connection is None:
            from psycopg.types.json import set_json_loads

            self._connection = self.server.connect(self.name)
            set_json_loads(lambda raw: raw if isinstance(raw, str) else bytes(raw).decode(), self._connection)
        statement, params = _translate(sql, args)
        with self._connection.cursor() as cursor:
            cursor.execute(statement, params)
            return [tuple(row) for row in cursor.fetchall()]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.name})"


def _translate(sql: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    """SQLite placeholders to psycopg's: `?1` → `%(p1)s` (numbered), `?` → `%s`."""
    sql = sql.replace("%", "%%")
    if re.search(r"\?\d", sql):
        return re.sub(r"\?(\d+)", r"%(p\1)s", sql), {f"p{i + 1}": value for i, value in enumerate(args)}
    return sql.replace("?", "%s"), args


def url_of(db: Any) -> str:
    """The async URL of a test database, or of a bare SQLite path (the older helpers pass paths)."""
    return f"sqlite+aiosqlite:///{db}" if isinstance(db, Path) else db.url


def as_database(db: Any) -> Any:
    return SqliteDatabase(db) if isinstance(db, Path) else db
