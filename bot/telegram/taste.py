"""Telegram handlers for taste: `/taste` (the profile, edited with inline buttons) and the 예/아니요 buttons that
confirm a statement ("새우 알레르기를 기억해 둘까요?").

Callback data, at most 64 bytes, always checked for ownership:
- `tc:y:<turn>` / `tc:n:<turn>`: confirm or decline the statement in that user turn; the service checks that the
  turn is this user's in this chat, as for "다른 거".
- `tt:<op>:<arg>:<user>`: a /taste edit (a: toggle the allergen at ALLERGEN_ORDER[arg], d: toggle diet arg,
  x: remove item id arg, v: show section arg); only <user> may press it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from bot.service.conversation import TasteRefused
from bot.taste import replies as taste_text
from bot.taste.profile import ALLERGEN_ORDER, DIETS, TasteItem, TasteProfile

log = logging.getLogger(__name__)

CONFIRM_DATA = re.compile(r"tc:([yn]):([1-9][0-9]{0,17})")
EDIT_DATA = re.compile(r"tt:([adxv]):([0-9a-z]{1,18}):([1-9][0-9]{0,19})")
MAX_CALLBACK_BYTES = 64
MAX_REMOVE_BUTTONS = 20
SECTIONS = {"m": "main", "a": "allergy", "d": "diet"}
ALLERGY_PROMPT = "알레르기가 있는 재료를 눌러 켜고 끄세요. 켠 재료가 든 메뉴는 절대 추천하지 않아요."
DIET_PROMPT = "식단을 눌러 켜고 끄세요. 맞지 않는 메뉴는 되도록 피해서 추천해요."
ITEM_GONE = "이미 지워진 항목이에요."
BUTTONS_HINT = "아래 버튼으로 알레르기와 식단을 고르고, 싫어하는 것과 좋아하는 것을 지울 수 있어요."


def confirm_keyboard(question_turn_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("예", callback_data=f"tc:y:{question_turn_id}"),
                                  InlineKeyboardButton("아니요", callback_data=f"tc:n:{question_turn_id}")]])


def parse_confirm(data: str | None) -> tuple[bool, int] | None:
    if not data or len(data.encode()) > MAX_CALLBACK_BYTES or not (found := CONFIRM_DATA.fullmatch(data)):
        return None
    return found.group(1) == "y", int(found.group(2))


def parse_edit(data: str | None) -> tuple[str, str, int] | None:
    if not data or len(data.encode()) > MAX_CALLBACK_BYTES or not (found := EDIT_DATA.fullmatch(data)):
        return None
    return found.group(1), found.group(2), int(found.group(3))


def view(profile: TasteProfile, ids: dict[TasteItem, int], user_id: int, section: str) -> tuple[str, Any]:
    """The /taste message for one section: its text and its inline keyboard."""
    def button(label: str, op: str, arg: object) -> InlineKeyboardButton:
        return InlineKeyboardButton(label, callback_data=f"tt:{op}:{arg}:{user_id}")

    back = [button("← 돌아가기", "v", "m")]
    if section == "allergy":
        mine = set(profile.allergies)
        buttons = [button(f"✅ {a}" if a in mine else a, "a", i) for i, a in enumerate(ALLERGEN_ORDER)]
        rows = [buttons[i:i + 4] for i in range(0, len(buttons), 4)]
        return f"{taste_text.profile_text(profile)}\n\n{ALLERGY_PROMPT}", InlineKeyboardMarkup([*rows, back])
    if section == "diet":
        mine = set(profile.diets)
        rows = [[button(f"✅ {d.label}" if code in mine else d.label, "d", code)] for code, d in DIETS.items()]
        return f"{taste_text.profile_text(profile)}\n\n{DIET_PROMPT}", InlineKeyboardMarkup([*rows, back])
    rows = [[button("🚫 알레르기 고르기", "v", "a"), button("🥗 식단 고르기", "v", "d")]]
    removable = [i for i in profile.items if i.kind in ("dislike", "like")][:MAX_REMOVE_BUTTONS]
    title = {"dislike": "싫어하는 것", "like": "좋아하는 것"}
    rows += [[button(f"❌ {title[i.kind]}: {i.label} 지우기", "x", ids[i])] for i in removable]
    return f"{taste_text.profile_text(profile)}\n\n{BUTTONS_HINT}", InlineKeyboardMarkup(rows)


class TasteHandlers:
    """Registered by bot.telegram.handlers.Handlers.register; uses its sending, gate and answer delivery."""

    def __init__(self, handlers: Any) -> None:
        self.h = handlers
        self.service = handlers.service

    def register(self, app: Application) -> None:
        app.add_handler(CommandHandler("taste", self.command))
        app.add_handler(CallbackQueryHandler(self.on_confirm, pattern=r"^tc:"))
        app.add_handler(CallbackQueryHandler(self.on_edit, pattern=r"^tt:"))

    async def _view(self, user_id: int, section: str) -> tuple[str, Any]:
        rows = await self.service.taste.store.items(user_id)
        profile = TasteProfile(tuple(item for _, item in rows))
        return view(profile, {item: row_id for row_id, item in rows}, user_id, section)

    async def command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if self.service.taste is None:
            await self.h._reply(update.effective_message, taste_text.TASTE_UNAVAILABLE)
            return
        text, keyboard = await self._view(update.effective_user.id, "main")
        await self.h._reply(update.effective_message, text, keyboard)

    async def on_confirm(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        from bot.telegram.handlers import BAD_BUTTON

        query = update.callback_query
        parsed = parse_confirm(query.data)
        message = query.message if query.message is not None and query.message.is_accessible else None
        if parsed is None or not isinstance(message, Message) or self.service.taste is None:
            await self.h._sender().try_once(lambda: query.answer(BAD_BUTTON), what="answerCallbackQuery")
            return
        await self.h._sender().try_once(query.answer, what="answerCallbackQuery")
        accept, turn_id = parsed
        chat, user_id = message.chat, query.from_user.id

        async def settled(text: str) -> None:  # the question turns into what was remembered, before the answer
            await self.h._sender().edit_text(chat.id, message.message_id, text)

        async def run(on_partial: Any) -> Any:
            choice = await self.service.settle_taste(chat.id, user_id, turn_id, accept, on_settled=settled,
                                                     on_partial=on_partial)
            return choice.answer

        try:
            await self.h._answer(chat, user_id, None, run)
        except TasteRefused as refused:
            await self.h._send(chat.id, refused.reason, reply_to=message.message_id)

    async def on_edit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        from bot.telegram.handlers import BAD_BUTTON, NOT_YOURS

        query = update.callback_query
        parsed = parse_edit(query.data)
        message = query.message if query.message is not None and query.message.is_accessible else None
        sender = self.h._sender()
        if parsed is None or not isinstance(message, Message) or self.service.taste is None:
            await sender.try_once(lambda: query.answer(BAD_BUTTON), what="answerCallbackQuery")
            return
        op, arg, owner = parsed
        user_id = query.from_user.id
        if owner != user_id:
            await sender.try_once(lambda: query.answer(NOT_YOURS), what="answerCallbackQuery")
            return
        toast, section = await self._apply(user_id, op, arg)
        if section is None:
            await sender.try_once(lambda: query.answer(toast or BAD_BUTTON), what="answerCallbackQuery")
            return
        await sender.try_once(lambda: query.answer(toast), what="answerCallbackQuery")
        text, keyboard = await self._view(user_id, section)
        await sender.edit_text(message.chat.id, message.message_id, text, reply_markup=keyboard)

    async def _apply(self, user_id: int, op: str, arg: str) -> tuple[str | None, str | None]:
        """Do one edit. Returns (a short toast, the section to show next); section None: nothing was changed."""
        desk = self.service.taste
        if op == "v":
            return None, SECTIONS.get(arg)
        if op == "a" and arg.isdigit():
            now = await desk.toggle_allergy(user_id, int(arg))
            if now is None:
                return None, None
            name = ALLERGEN_ORDER[int(arg)]
            return (f"{name} 알레르기를 기억했어요" if now else f"{name} 알레르기를 지웠어요"), "allergy"
        if op == "d":
            now = await desk.toggle_diet(user_id, arg)
            if now is None:
                return None, None
            return (f"식단: {DIETS[arg].label} 켬" if now else f"식단: {DIETS[arg].label} 끔"), "diet"
        if op == "x" and arg.isdigit():
            removed = await desk.remove(user_id, int(arg))
            return (f"{removed.label} 지웠어요" if removed is not None else ITEM_GONE), "main"
        return None, None
