"""Showing an answer while it is generated: drafts in private chats, a throttled edited message in groups.

The preview is a courtesy, the final message is the product: a preview that fails (flood control, a deleted
message, an old client) is dropped quietly, and `finish()` always delivers the whole answer through `SafeSender`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from telegram import InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import RetryAfter, TelegramError

from bot.telegram.sending import SafeSender, retry_after_seconds, split_text

log = logging.getLogger(__name__)

TYPING_EVERY_S = 4.5  # Telegram shows "typing…" for about 5 s per chat action
PREVIEW_SUFFIX = " …"
MAX_PREVIEW_FAILURES = 3


@contextlib.asynccontextmanager
async def typing(sender: SafeSender, chat_id: int) -> AsyncIterator[None]:
    """Keep "typing…" showing in the chat while the body runs. Never delays or fails the body."""

    async def keep_typing() -> None:
        while True:
            if await sender.try_once(
                lambda: sender.bot.send_chat_action(chat_id, ChatAction.TYPING), what="sendChatAction"
            ) is None:
                return  # the chat refuses chat actions; don't keep asking
            await asyncio.sleep(TYPING_EVERY_S)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()


class AnswerStream:
    """The `on_partial` callback for ConversationService plus the final delivery.

    `update(text)` only records the newest text and wakes a background task, so a slow or rate-limited preview never
    holds up generation. Previews are at least `interval_s` apart and skip unchanged text.
    """

    def __init__(
        self, sender: SafeSender, chat_id: int, *, use_draft: bool, draft_id: int, interval_s: float,
        reply_to: int | None = None,
    ) -> None:
        if use_draft and draft_id == 0:
            raise ValueError("draft_id must be non-zero (Bot API sendMessageDraft)")
        self.sender = sender
        self.chat_id = chat_id
        self.use_draft = use_draft
        self.draft_id = draft_id
        self.interval_s = interval_s
        self.reply_to = reply_to
        self.preview_message_id: int | None = None  # the group preview message, once sent
        self.previews = 0
        self._latest = ""
        self._shown = ""
        self._next_at = 0.0
        self._failures = 0
        self._closed = False
        self._pushing = False
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def update(self, text: str) -> None:
        self._latest = text
        if self._closed or self._failures >= MAX_PREVIEW_FAILURES:
            return
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            delay = self._next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            preview = _preview_text(self._latest)
            if self._closed or not preview or preview == self._shown:
                continue
            self._pushing = True
            try:
                await self._push(preview)
            finally:
                self._pushing = False
            self._next_at = max(self._next_at, time.monotonic() + self.interval_s)

    async def _push(self, text: str) -> None:
        try:
            if self.use_draft:
                await self.sender.bot.send_message_draft(self.chat_id, self.draft_id, text)
            elif self.preview_message_id is None:
                reply = ReplyParameters(self.reply_to, allow_sending_without_reply=True) if self.reply_to else None
                message = await self.sender.bot.send_message(self.chat_id, text, reply_parameters=reply)
                self.preview_message_id = message.message_id
            else:
                await self.sender.bot.edit_message_text(text, chat_id=self.chat_id, message_id=self.preview_message_id)
        except RetryAfter as exc:
            # Flood control on a preview: skip this one and keep quiet until Telegram allows it.
            self._next_at = time.monotonic() + retry_after_seconds(exc)
            return
        except TelegramError as exc:
            self._failures += 1
            log.debug("preview failed (%d): %s", self._failures, exc)
            # A Bot API server without sendMessageDraft (older local servers), or a hiccup: edit a message instead.
            self.use_draft = False
            return
        self._shown = text
        self.previews += 1

    async def _stop(self) -> None:
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if self._pushing:
            # Let a preview already on the wire land first, so it cannot overwrite the final text afterwards.
            self._wake.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(worker), timeout=30)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker

    async def finish(self, text: str, reply_markup: InlineKeyboardMarkup | None = None) -> int | None:
        """Deliver the final answer (split if long; the keyboard on the last part); returns the last message's id.

        The group preview becomes the answer's first part; if it cannot be edited, the answer is sent anew.
        """
        await self._stop()
        if self.preview_message_id is None:
            return _last_id(
                await self.sender.send_text(self.chat_id, text, reply_markup=reply_markup, reply_to=self.reply_to)
            )
        parts = split_text(text, self.sender.limit) or ["…"]
        try:
            await self.sender.edit_text(
                self.chat_id, self.preview_message_id, parts[0], reply_markup=reply_markup if len(parts) == 1 else None
            )
        except TelegramError as exc:
            log.info("could not turn the preview into the answer (%s); sending it anew", exc)
            await self.abandon()
            return _last_id(
                await self.sender.send_text(self.chat_id, text, reply_markup=reply_markup, reply_to=self.reply_to)
            )
        if len(parts) == 1:
            return self.preview_message_id
        return _last_id(await self.sender.send_text(self.chat_id, "\n".join(parts[1:]), reply_markup=reply_markup))

    async def abandon(self) -> None:
        """No answer will follow (busy, error): stop previews and take a half-written group preview away."""
        await self._stop()
        if self.preview_message_id is not None:
            message_id, self.preview_message_id = self.preview_message_id, None
            await self.sender.try_once(
                lambda: self.sender.bot.delete_message(self.chat_id, message_id), what="deleteMessage"
            )


def _preview_text(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    parts = split_text(text + PREVIEW_SUFFIX)
    return parts[0]


def _last_id(messages: list[Message]) -> int | None:
    return messages[-1].message_id if messages else None
