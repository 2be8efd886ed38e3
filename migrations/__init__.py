"""Alembic migrations for the history store. A package so that it ships in the wheel; `bot.store.database` finds it here."""
