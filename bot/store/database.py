"""Reaching the database: URLs, engines, Alembic, and `Database`, the executor every query of the bot runs on.

The configured URL is an async one (`sqlite+aiosqlite://`, `postgresql+asyncpg://`): Alembic's async env.py migrates
through that driver, and the store runs its transactions through the sync driver of the same database (`sync_url`,
docs/decisions.md). A URL is never shown with its password: `mask_url` is what logs, errors and the CLI print.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import sessionmaker

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_DB_THREADS = 4

# The async URL names the driver Alembic's async env uses; the store runs the same database through the sync driver.
_SYNC_DRIVERS = {"+aiosqlite": "+pysqlite", "+asyncpg": "+psycopg", "+aiomysql": "+pymysql", "+asyncmy": "+pymysql"}


def sync_url(database_url: str) -> str:
    for async_driver, sync_driver in _SYNC_DRIVERS.items():
        database_url = database_url.replace(async_driver, sync_driver, 1)
    return database_url


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgresql", "postgres"))


def mask_url(database_url: str) -> str:
    """The URL as it may be shown: the password replaced by ***."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not a URL SQLAlchemy can parse: hide whatever sits between "user:" and "@".
        scheme, sep, rest = database_url.partition("://")
        credentials, at, host = rest.rpartition("@")
        if not (sep and at and ":" in credentials):
            return database_url
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def database_problem(database_url: str, exc: BaseException) -> str:
    """One line for a database that cannot be reached or migrated: where (masked), why, and what to check."""
    reason = getattr(exc, "orig", None) or exc
    text = " ".join(str(reason).split("\n")[0].split()) or type(reason).__name__
    return (f"the database {mask_url(database_url)} is not usable: {type(reason).__name__}: {text}. Check "
            f"MECHURI_DATABASE_URL (host, port, user, password, database name) and that the server is running")


def url_secrets(database_url: str) -> list[str]:
    """The URL's password, as written in the URL and decoded, for scrubbing from log lines."""
    try:
        password = make_url(database_url).password
    except (ArgumentError, ValueError):
        return []
    if not password:
        return []
    return list(dict.fromkeys([password, quote(password, safe=""), quote(password)]))


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; the busy timeout makes concurrent writers wait instead of failing
    # with "database is locked"; SQLite leaves foreign keys off unless asked. synchronous=NORMAL in WAL mode keeps
    # every commit through a process crash (kill -9); only a power cut can lose the last commits.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(database_url: str, *, echo: bool = False) -> Engine:
    is_sqlite = database_url.startswith("sqlite")
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000} if is_sqlite else {}
    # Every Store job ends its own transaction, so the pool's extra rollback on each return is wasted work.
    # pool_pre_ping: a PostgreSQL server restarted under a running bot leaves dead connections in the pool.
    engine = create_engine(sync_url(database_url), echo=echo, connect_args=connect_args, pool_reset_on_return=None,
                           pool_pre_ping=not is_sqlite)
    if is_sqlite:
        event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def migrations_dir() -> Path:
    import migrations

    # An editable install made before migrations/ had its __init__.py maps it as a namespace (no __file__).
    if migrations.__file__:
        return Path(migrations.__file__).resolve().parent
    return Path(next(iter(migrations.__path__))).resolve()


def alembic_config(database_url: str) -> Any:
    """An Alembic Config that works without alembic.ini, e.g. from an installed wheel."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def run_upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking. Alembic's async env.py calls asyncio.run, so inside a running loop call this via asyncio.to_thread."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def run_downgrade(database_url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


class Database:
    """The executor: each job is one whole transaction on a dedicated database thread.

    An async driver (aiosqlite) instead hops to its thread and back for every cursor call: about 20 hops a message,
    most of the bot's overhead (docs/benchmarks.md). On SQLite jobs run in order on one thread, which is also what
    its single writer wants; on PostgreSQL a few threads overlap the round trips (users' turns are ordered by the
    per-user lines and locks, not by the job queue). A cancelled caller does not cancel its job: a transaction that
    started always runs to its end.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_postgres = is_postgres(url)
        self.engine = make_engine(url, echo=echo)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # One-statement jobs need no BEGIN/COMMIT round trips: on PostgreSQL they run in autocommit mode.
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.is_postgres \
            else self.engine
        self._thread = ThreadPoolExecutor(max_workers=POSTGRES_DB_THREADS if self.is_postgres else 1,
                                          thread_name_prefix="mechuri-db")
        self._closed = False

    async def run(self, job: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `job(*args, **kwargs)` on the database thread and wait for it."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(job, *args, **kwargs))

    def submit(self, job: Callable[..., T], *args: Any) -> Future[T]:
        """Queue a job without waiting for it (from sync code, e.g. a lock release in a `finally`)."""
        return self._thread.submit(job, *args)

    def execute_count(self, statement: Any) -> int:
        """On the database thread: run one statement in autocommit mode; the number of rows it touched."""
        with self.autocommit.begin() as db:
            return db.execute(statement).rowcount or 0

    async def upgrade(self, revision: str = "head") -> None:
        await asyncio.to_thread(run_upgrade, self.url, revision)

    async def close(self) -> None:
        if self._closed:  # front ends close on every exit path; a second close is a no-op
            return
        self._closed = True
        await self.run(self.engine.dispose)
        self._thread.shutdown(wait=True)
