"""Secrets never reach a log line: the bot token, the database password and the webhook secret are scrubbed from
every record (message, arguments and traceback) by a log-record factory, installed by each command."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot.settings import Settings
from bot.store.database import url_secrets


def redact_secrets_in_logs(settings: Settings) -> Callable[[], None]:
    """Scrub the bot token, the database password and the webhook secret from every log record. Returns an undo."""
    secrets: dict[str, str] = {}
    if settings.telegram_bot_token is not None and settings.telegram_bot_token.get_secret_value().strip():
        secrets[settings.telegram_bot_token.get_secret_value().strip()] = "<token>"
    for password in url_secrets(settings.database_url):
        secrets[password] = "***"
    if settings.webhook_secret is not None and settings.webhook_secret.get_secret_value().strip():
        secrets[settings.webhook_secret.get_secret_value().strip()] = "<webhook secret>"
    return redact_in_logs(secrets)


def redact_in_logs(secrets: dict[str, str]) -> Callable[[], None]:
    """Replace each secret (key) with its stand-in (value) in every log record: message, arguments, traceback."""
    previous = logging.getLogRecordFactory()
    # Longest first, so a secret that contains another is replaced whole.
    found = sorted((s for s in secrets if s), key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in found:
            text = text.replace(secret, secrets[secret])
        return text

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        if any(secret in message for secret in found):
            record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if any(secret in text for secret in found):
                record.exc_text = scrub(text)
        return record

    logging.setLogRecordFactory(factory)
    return lambda: logging.setLogRecordFactory(previous)
