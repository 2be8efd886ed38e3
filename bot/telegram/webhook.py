"""Webhooks: Telegram POSTs each update to us, so several replicas can serve one bot (polling allows one process).

python-telegram-bot runs the HTTP server (`Updater.start_webhook`, tornado): it checks the
`X-Telegram-Bot-Api-Secret-Token` header on every request (403 otherwise, nothing processed), refuses a body that is
not a JSON update, and calls setWebhook with our public URL and secret. Two things are ours:

- `AcknowledgingQueue`: PTB answers 200 as soon as an update is queued. For a text message we hold that answer until
  its question is committed (or its handling ended, or ACK_TIMEOUT_S passed). A replica killed right after the 200
  has then lost nothing Telegram will not resend, and the next message of the user, which Telegram sends after this
  one was acknowledged, is stored after it: turn ids follow the order the user sent, whichever replica got them.
- `ConcurrentUpdates`: the update processor (PTB's concurrent updates) that releases an update's held 200 once its
  handling ended, whatever happened, if the question's commit did not release it first (the text handler passes
  `AcknowledgingQueue.taken_in` to the service as `on_stored`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from telegram import Update
from telegram.ext import Application, SimpleUpdateProcessor

from bot.settings import WebhookConfig

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 10.0  # Telegram gives up on a webhook request after about a minute, then sends the update again
MAX_CONCURRENT_UPDATES = 256  # PTB's own default for concurrent_updates(True)


class WebhookError(Exception):
    """The webhook server could not start; the message names the cause and the fix."""


def _waits_for_intake(update: Any) -> bool:
    """Plain text messages are stored as questions at once; commands and buttons have nothing to store first."""
    message = getattr(update, "message", None)
    text = getattr(message, "text", None)
    return bool(text) and not text.startswith("/")


class AcknowledgingQueue(asyncio.Queue):
    """The update queue the webhook server puts into: `put` returns (Telegram gets its 200) once the update's
    question is stored. Polling does not use it."""

    def __init__(self, ack_timeout_s: float = ACK_TIMEOUT_S) -> None:
        super().__init__()
        self.ack_timeout_s = ack_timeout_s
        self._waiting: dict[int, asyncio.Future[None]] = {}

    async def put(self, item: Any) -> None:
        if not _waits_for_intake(item):
            await super().put(item)
            return
        taken = asyncio.get_running_loop().create_future()
        self._waiting[id(item)] = taken
        try:
            await super().put(item)
            await asyncio.wait_for(asyncio.shield(taken), self.ack_timeout_s)
        except TimeoutError:
            log.warning("update %s not stored within %.0f s; acknowledged anyway", item.update_id, self.ack_timeout_s)
        finally:
            self._waiting.pop(id(item), None)

    def taken_in(self, item: Any) -> None:
        """The update's question is stored (or its handling ended): let Telegram have its 200."""
        taken = self._waiting.get(id(item))
        if taken is not None and not taken.done():
            taken.set_result(None)


class ConcurrentUpdates(SimpleUpdateProcessor):
    """Concurrent updates; with webhooks, an update's held 200 goes out at the latest when its handling ends."""

    def __init__(self, queue: AcknowledgingQueue | None = None,
                 max_concurrent_updates: int = MAX_CONCURRENT_UPDATES) -> None:
        super().__init__(max_concurrent_updates)
        self.queue = queue

    async def do_process_update(self, update: object, coroutine: Any) -> None:
        try:
            await coroutine
        finally:
            if self.queue is not None:
                self.queue.taken_in(update)


async def start_webhook(app: Application, config: WebhookConfig) -> None:
    """setWebhook (our public URL, the secret, every update type) and start listening."""
    try:
        await app.updater.start_webhook(
            listen=config.listen, port=config.port, url_path=config.path, webhook_url=config.url,
            secret_token=config.secret, allowed_updates=Update.ALL_TYPES, max_connections=config.max_connections,
            drop_pending_updates=False, bootstrap_retries=3,
        )
    except OSError as exc:
        raise WebhookError(f"could not listen on {config.listen}:{config.port} ({exc.strerror or exc}): set "
                           f"MECHURI_WEBHOOK_LISTEN / MECHURI_WEBHOOK_PORT to a free address") from exc
    log.info("@%s receives updates at %s (listening on %s:%d%s)", app.bot.username, config.url, config.listen,
             config.port, config.path)


async def delete_webhook(app: Application) -> None:
    """The last replica to stop removes the webhook, so Telegram keeps the updates until a bot is back."""
    from telegram.error import TelegramError

    try:
        await app.bot.delete_webhook(drop_pending_updates=False)
        log.info("webhook deleted (no other replica is running); Telegram keeps new updates until one starts")
    except TelegramError as exc:
        log.warning("could not delete the webhook: %s", exc)
