"""Sending to Telegram without losing messages: splitting long answers, and the answers a busy Telegram gives.

Real Telegram answers a busy bot with 429 (RetryAfter), "message is not modified", "message is too long", "can't
parse entities" and time-outs. Flood control is PTB's `AIORateLimiter` (bot/telegram/app.py): it keeps the bot under
Telegram's rates and waits out a RetryAfter before trying again, a bounded number of times. `SafeSender` does the
rest: "not modified" counts as done, a text too long is split and resent, rejected formatting is resent as plain
text, and a time-out is tried again (the limiter retries only RetryAfter). Everything the bot sends to a chat goes
through it. Best-effort calls (previews, chat actions) bypass the limiter (`BEST_EFFORT`): a preview that meets flood
control is skipped, never waited for, and previews keep their own pace (one a second per chat at most).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import MessageLimit
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import AIORateLimiter, BaseRateLimiter

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_TEXT = MessageLimit.MAX_TEXT_LENGTH  # 4,096
BEST_EFFORT = "best-effort"  # rate_limit_args of a call not worth waiting for: a preview, "typing…"
MAX_RETRIES = 3  # a RetryAfter is waited out this many times, then the call fails


def retry_after_seconds(exc: RetryAfter) -> float:
    # PTB 22 returns int or timedelta depending on PTB_TIMEDELTA, and warns about the int form.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def is_not_modified(exc: TelegramError) -> bool:
    return isinstance(exc, BadRequest) and "message is not modified" in exc.message.lower()


def is_too_long(exc: TelegramError) -> bool:
    return isinstance(exc, BadRequest) and "too long" in exc.message.lower()


def is_bad_entities(exc: TelegramError) -> bool:
    return isinstance(exc, BadRequest) and "can't parse entities" in exc.message.lower()


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fitting_prefix(text: str, limit: int) -> int:
    """The longest prefix length (in characters) whose UTF-16 length is at most `limit`."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Cut text into parts of at most `limit` UTF-16 units (Telegram's measure), at paragraph, line or word ends.

    UTF-16 is the stricter count, so a part that fits here fits Telegram's 4,096-character limit too.
    """
    parts: list[str] = []
    rest = text.strip()
    while rest:
        cut = _fitting_prefix(rest, limit)
        if cut < len(rest):
            window = rest[:cut]
            for separator in ("\n\n", "\n", ". ", " "):
                at = window.rfind(separator)
                if at >= cut // 2:
                    cut = at + len(separator)
                    break
        part, rest = rest[:cut].strip(), rest[cut:].strip()
        if part:
            parts.append(part)
    return parts


class FloodControl(BaseRateLimiter[str]):
    """PTB's `AIORateLimiter` for every call but the best-effort ones, which go out once, as they are. `limiter`:
    the production default keeps Telegram's rates (30 messages a second, 20 a minute per group); tests pass one
    with the rates off and the same retries."""

    def __init__(self, limiter: AIORateLimiter | None = None) -> None:
        self.limiter = limiter or AIORateLimiter(max_retries=MAX_RETRIES)

    async def initialize(self) -> None:
        await self.limiter.initialize()

    async def shutdown(self) -> None:
        await self.limiter.shutdown()

    async def process_request(self, callback: Callable[..., Any], args: Any, kwargs: dict[str, Any], endpoint: str,
                              data: dict[str, Any], rate_limit_args: str | None) -> Any:
        if rate_limit_args == BEST_EFFORT:
            return await callback(*args, **kwargs)
        return await self.limiter.process_request(callback, args, kwargs, endpoint, data, None)


class SafeSender:
    """Bounded, polite retries around Bot calls. Never loses a message to a blip in the network."""

    def __init__(self, bot: Bot, *, max_attempts: int = 4, timeout_backoff_s: float = 0.25,
                 limit: int = MAX_TEXT) -> None:
        self.bot = bot
        self.max_attempts = max_attempts
        self.timeout_backoff_s = timeout_backoff_s
        self.limit = limit

    async def call(self, make_call: Callable[[], Awaitable[T]], *, what: str) -> T | None:
        """Run a Bot call; retry time-outs; "not modified" counts as done (None)."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await make_call()
            except BadRequest as exc:
                if is_not_modified(exc):
                    return None
                raise
            except (TimedOut, NetworkError) as exc:
                if attempt == self.max_attempts:
                    raise
                # A time-out may hide a request that got through; a rare duplicate beats a lost answer.
                log.info("%s: %s, retrying (attempt %d)", what, type(exc).__name__, attempt)
                await asyncio.sleep(self.timeout_backoff_s * attempt)
        raise AssertionError("unreachable")

    async def send_text(
        self, chat_id: int, text: str, *, reply_markup: InlineKeyboardMarkup | None = None,
        reply_to: int | None = None, parse_mode: str | None = None,
    ) -> list[Message]:
        """Send text of any length: split at 4,096; the keyboard goes on the last part; only the first part replies."""
        parts = split_text(text, self.limit) or ["…"]
        sent: list[Message] = []
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            sent += await self._send_part(
                chat_id, part, reply_markup=reply_markup if last else None,
                reply_to=reply_to if index == 0 else None, parse_mode=parse_mode,
            )
        return sent

    async def _send_part(
        self, chat_id: int, text: str, *, reply_markup: InlineKeyboardMarkup | None, reply_to: int | None,
        parse_mode: str | None,
    ) -> list[Message]:
        reply = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
        try:
            message = await self.call(
                lambda: self.bot.send_message(
                    chat_id, text, reply_markup=reply_markup, reply_parameters=reply, parse_mode=parse_mode
                ),
                what="sendMessage",
            )
        except BadRequest as exc:
            if is_bad_entities(exc) and parse_mode:
                log.warning("formatting rejected (%s); sending as plain text", exc.message)
                return await self._send_part(
                    chat_id, text, reply_markup=reply_markup, reply_to=reply_to, parse_mode=None
                )
            if is_too_long(exc) and len(text) > 1:
                # Telegram measured longer than we did (entities, exotic characters): halve and resend.
                halves = split_text(text, max(1, utf16_len(text) // 2))
                sent: list[Message] = []
                for index, half in enumerate(halves):
                    last = index == len(halves) - 1
                    sent += await self._send_part(
                        chat_id, half, reply_markup=reply_markup if last else None,
                        reply_to=reply_to if index == 0 else None, parse_mode=parse_mode,
                    )
                return sent
            raise
        return [message] if message is not None else []

    async def edit_text(
        self, chat_id: int, message_id: int, text: str, *, reply_markup: InlineKeyboardMarkup | None = None
    ) -> bool:
        """Edit a message's text; "not modified" counts as success. Raises on other failures."""
        await self.call(
            lambda: self.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id, reply_markup=reply_markup),
            what="editMessageText",
        )
        return True

    async def remove_keyboard(self, chat_id: int, message_id: int) -> bool:
        """Take the inline keyboard off a message. Best effort: a message that is gone or too old is logged, not fatal."""
        return await self.set_keyboard(chat_id, message_id, None)

    async def set_keyboard(self, chat_id: int, message_id: int, markup: InlineKeyboardMarkup | None) -> bool:
        """Replace a message's inline keyboard (None: remove it), best effort like `remove_keyboard`."""
        try:
            await self.call(
                lambda: self.bot.edit_message_reply_markup(chat_id=chat_id, message_id=message_id, reply_markup=markup),
                what="editMessageReplyMarkup",
            )
        except TelegramError as exc:
            log.info("could not change the keyboard of message %s: %s", message_id, exc)
            return False
        return True

    async def try_once(self, make_call: Callable[[], Awaitable[Any]], *, what: str) -> Any:
        """A best-effort call (answering a button, a chat action): one attempt, failures logged and swallowed."""
        try:
            return await make_call()
        except TelegramError as exc:
            log.debug("%s failed (ignored): %s", what, exc)
            return None
