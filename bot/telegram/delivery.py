"""Delivering answers: each user's answers in the order the messages came, shown while they are generated (drafts
in private chats, a throttled edited message in groups), then the final message with its keyboard.

`deliver` is the one path every answer takes in the Telegram front end: it takes the user's place in line at the
door (bot/service/ordering.py; a message too soon or past the user's queue gets a polite refusal instead), runs the
service call with a live preview, sends the final text, and leaves the line only then, so the next answer of the
same user goes out after this one. The preview is a courtesy, the final message is the product: a preview that fails
(flood control, a deleted message, an old client) is dropped quietly, and the final text always goes through
`SafeSender`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from telegram import Chat, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import RetryAfter, TelegramError
from telegram.ext import ContextTypes

from bot.service import replies
from bot.service.contract import Answer, ConversationBusy, DeltaCallback
from bot.service.conversation import ConversationService
from bot.service.ordering import Place, Refused
from bot.settings import Settings
from bot.telegram.keyboards import answer_keyboard, confirm_keyboard, learn_keyboard
from bot.telegram.sending import BEST_EFFORT, SafeSender, retry_after_seconds, split_text

log = logging.getLogger(__name__)

TYPING_EVERY_S = 4.5  # Telegram shows "typing…" for about 5 s per chat action
PREVIEW_SUFFIX = " …"
MAX_PREVIEW_FAILURES = 3
GROUP_TYPES = (ChatType.GROUP, ChatType.SUPERGROUP)

Run = Callable[[DeltaCallback, Place], Awaitable[Answer | None]]  # None: nothing to deliver (a taste choice alone)


@dataclass
class Deps:
    """What every handler needs, kept in `application.bot_data` (see `deps`)."""

    service: ConversationService
    settings: Settings
    sender: SafeSender
    acknowledge: Callable[[object], None] | None = None  # webhooks: tell Telegram an update's question is stored
    draft_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))  # sendMessageDraft ids > 0


def deps(context: ContextTypes.DEFAULT_TYPE) -> Deps:
    return context.bot_data["mechuri"]


async def reply(d: Deps, message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Answer a message in its chat; in groups as a reply, so people see whom the bot answers."""
    reply_to = message.message_id if message.chat.type in GROUP_TYPES else None
    await d.sender.send_text(message.chat.id, text, reply_markup=markup, reply_to=reply_to)


async def toast(context: ContextTypes.DEFAULT_TYPE, update: Update, text: str | None = None) -> None:
    """Answer a button press (the client stops its spinner), with a short toast when `text` is given."""
    query = update.callback_query
    await deps(context).sender.try_once(lambda: query.answer(text), what="answerCallbackQuery")


def button_message(update: Update) -> Message | None:
    """The message a pressed button sits on, if the bot can still edit it."""
    message = update.callback_query.message
    return message if isinstance(message, Message) and message.is_accessible else None


async def deliver(d: Deps, chat: Chat, user_id: int, reply_to: int | None, run: Run) -> Answer | None:
    """Run a service call in the user's line, with a live preview; deliver its answer. Returns None when nothing was
    answered (refused at the door, busy, or a taste choice without a question)."""
    try:
        place = d.service.lines.admit(chat.id, user_id)
    except Refused as refused:
        await d.sender.send_text(chat.id, refused.reason, reply_to=reply_to)
        return None
    with place:
        stream = AnswerStream(d.sender, chat.id, use_draft=chat.type == ChatType.PRIVATE,
                              draft_id=next(d.draft_ids), interval_s=d.settings.stream_edit_interval_s,
                              reply_to=reply_to)
        try:
            async with typing(d.sender, chat.id):  # enters without suspending: `run` still starts in arrival order
                answer = await run(stream.update, place)
        except ConversationBusy:
            await stream.abandon()
            await d.sender.send_text(chat.id, replies.BUSY, reply_to=reply_to)
            return None
        except BaseException:
            await stream.abandon()
            raise
        if answer is None:
            await stream.abandon()
            return None
        text = f"{answer.notice}\n\n{answer.text}" if answer.notice else answer.text
        await stream.finish(text, answer_keyboard(answer, votes=d.settings.feedback_buttons))
        if answer.confirm:  # a taste said with the question: answered at once, "기억해 둘까요?" beside it
            keyboard = (learn_keyboard(answer.learn_id) if answer.learn_id
                        else confirm_keyboard(answer.question_turn_id, unsure=bool(answer.unsure)))
            await d.sender.send_text(chat.id, answer.confirm, reply_to=reply_to, reply_markup=keyboard)
        return answer


@contextlib.asynccontextmanager
async def typing(sender: SafeSender, chat_id: int) -> AsyncIterator[None]:
    """Keep "typing…" showing in the chat while the body runs. Never delays or fails the body."""

    async def keep_typing() -> None:
        while True:
            if await sender.try_once(
                lambda: sender.bot.send_chat_action(chat_id, ChatAction.TYPING, rate_limit_args=BEST_EFFORT),
                what="sendChatAction",
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
                await self.sender.bot.send_message_draft(self.chat_id, self.draft_id, text,
                                                         rate_limit_args=BEST_EFFORT)
            elif self.preview_message_id is None:
                reply = ReplyParameters(self.reply_to, allow_sending_without_reply=True) if self.reply_to else None
                message = await self.sender.bot.send_message(self.chat_id, text, reply_parameters=reply,
                                                             rate_limit_args=BEST_EFFORT)
                self.preview_message_id = message.message_id
            else:
                await self.sender.bot.edit_message_text(text, chat_id=self.chat_id, message_id=self.preview_message_id,
                                                       rate_limit_args=BEST_EFFORT)
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
