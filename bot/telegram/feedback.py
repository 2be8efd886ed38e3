"""The answer keyboard ("🔄 다른 거", 👍, 👎) and the handler for the vote buttons.

Callback data, at most 64 bytes (the longest, for the largest turn id a database can give, is 29):
- `retry:<turn>`: "다른 거" (bot/handlers.py).
- `vote:<turn>:up` / `vote:<turn>:down`: a 👍/👎 on that answer; the service checks that the turn is this user's in
  this chat, as for "다른 거". The latest press wins; the same one twice counts once.
"""

from __future__ import annotations

import re
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import ContextTypes

from bot.service.conversation import RetryRefused
from bot.store.feedback import VoteResult

MAX_CALLBACK_BYTES = 64
TURN_ID = r"[1-9][0-9]{0,18}"
MAX_TURN_ID = 2**63 - 1  # SQLite's largest rowid; PostgreSQL's INTEGER ids stop far below
VOTE_DATA = re.compile(rf"vote:({TURN_ID}):(up|down)")
RETRY_LABEL = "🔄 다른 거"
VOTE_LABELS = {"up": "👍", "down": "👎"}
CHOSEN_MARK = " ✓"

THANKS_UP = "고마워요! 다음 추천에 참고할게요."
THANKS_DOWN = "아쉬워요. '다른 거'를 누르면 다른 메뉴를 골라 드릴게요."
THANKS_DOWN_NO_RETRY = "아쉬워요. 알려 주셔서 고마워요. 다음 추천에 참고할게요."
ALREADY_COUNTED = "이미 반영했어요."
FEEDBACK_OFF = "지금은 평가를 받지 않고 있어요. 마음에 들지 않으면 새로 물어봐 주세요."


def turn_id_in(text: str) -> int | None:
    """A turn id matched by TURN_ID, or None past the largest id a database can hold."""
    value = int(text)
    return value if value <= MAX_TURN_ID else None


def parse_vote(data: str | None) -> tuple[int, bool] | None:
    """(turn id, up) from "vote:<id>:up|down", or None for anything forged, malformed or too long."""
    if not data or len(data.encode()) > MAX_CALLBACK_BYTES or not (found := VOTE_DATA.fullmatch(data)):
        return None
    turn_id = turn_id_in(found.group(1))
    return (turn_id, found.group(2) == "up") if turn_id is not None else None


def feedback_keyboard(
    turn_id: int, *, retry: bool, votes: bool, chosen: str | None = None
) -> InlineKeyboardMarkup | None:
    """One row: "다른 거" when it is still allowed, then 👍 and 👎 (the chosen one marked ✓); None when empty."""
    row = [InlineKeyboardButton(RETRY_LABEL, callback_data=f"retry:{turn_id}")] if retry else []
    if votes:
        row += [InlineKeyboardButton(label + (CHOSEN_MARK if vote == chosen else ""),
                                     callback_data=f"vote:{turn_id}:{vote}") for vote, label in VOTE_LABELS.items()]
    return InlineKeyboardMarkup([row]) if row else None


def vote_toast(result: VoteResult) -> str:
    if not result.changed:
        return ALREADY_COUNTED
    if result.vote == "up":
        return THANKS_UP
    return THANKS_DOWN if result.can_retry else THANKS_DOWN_NO_RETRY  # 👎 never regenerates by itself


class FeedbackHandlers:
    """Registered by bot.telegram.handlers.Handlers.register; uses its sender, service and settings."""

    def __init__(self, handlers: Any) -> None:
        self.h = handlers

    async def on_vote(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        from bot.telegram.handlers import BAD_BUTTON

        query = update.callback_query
        parsed = parse_vote(query.data)
        message = query.message if query.message is not None and query.message.is_accessible else None
        sender = self.h._sender()
        if parsed is None or not isinstance(message, Message):
            await sender.try_once(lambda: query.answer(BAD_BUTTON), what="answerCallbackQuery")
            return
        if not self.h.settings.feedback_buttons:  # a button from before the setting was turned off: store nothing
            await sender.try_once(lambda: query.answer(FEEDBACK_OFF), what="answerCallbackQuery")
            return
        turn_id, up = parsed
        try:
            result = await self.h.service.vote(message.chat.id, query.from_user.id, turn_id, up)
        except RetryRefused as refused:
            reason = refused.reason
            await sender.try_once(lambda: query.answer(reason), what="answerCallbackQuery")
            return
        await sender.try_once(lambda: query.answer(vote_toast(result)), what="answerCallbackQuery")
        keyboard = feedback_keyboard(turn_id, retry=result.can_retry, votes=True, chosen=result.vote)
        if message.reply_markup != keyboard:  # a double tap finds the ✓ already shown
            await sender.set_keyboard(message.chat.id, message.message_id, keyboard)
