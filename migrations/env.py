"""Alembic environment, async template.

Called three ways: `alembic upgrade head` from the repository root (URL from alembic.ini, else MECHURI_DATABASE_URL,
else the default), `bot.store.database.run_upgrade(url)` (URL set on the Config), or with a live synchronous connection in
`config.attributes["connection"]` (used as is, so an in-memory database or an open transaction can be migrated).
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from bot.store.schema import Base

DEFAULT_URL = "sqlite+aiosqlite:///mechuri.db"

config = context.config
if config.config_file_name is not None:
    # Only when run by the alembic command: the app keeps its own logging.
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ.get("MECHURI_DATABASE_URL") or DEFAULT_URL


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(), target_metadata=target_metadata, literal_binds=True,
        dialect_opts={"paramstyle": "named"}, render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # Batch mode lets later migrations alter columns on SQLite, which cannot ALTER most things in place.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    section = config.get_section(config.config_ini_section, {})
    section["sqlalchemy.url"] = database_url()
    engine = async_engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    # asyncio.run fails inside a running loop: async callers go through asyncio.to_thread (see Store.upgrade).
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
