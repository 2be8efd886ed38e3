"""Telegram handlers for taste: `/taste` (the profile, edited with inline buttons) and the 예/아니요 buttons that
confirm a statement ("새우 알레르기를 기억해 둘까요?"). Callback data formats: bot/telegram/keyboards.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import ContextTypes

from bot.service.contract import DeltaCallback, TasteRefused
from bot.service.ordering import Place
from bot.service.taste import TasteDesk
from bot.taste import replies as taste_replies
from bot.taste.profile import ALLERGEN_ORDER, DIETS, TasteItem, TasteProfile
from bot.telegram import replies as tg
from bot.telegram.delivery import button_message, deliver, deps, reply, toast
from bot.telegram.keyboards import parse_confirm, parse_edit, parse_learn

log = logging.getLogger(__name__)

MAX_REMOVE_BUTTONS = 20
SECTIONS = {"m": "main", "a": "allergy", "d": "diet"}


def view(profile: TasteProfile, ids: dict[TasteItem, int], user_id: int, section: str) -> tuple[str, Any]:
    """The /taste message for one section: its text and its inline keyboard."""
    def button(label: str, op: str, arg: object) -> InlineKeyboardButton:
        return InlineKeyboardButton(label, callback_data=f"tt:{op}:{arg}:{user_id}")

    back = [button("← 돌아가기", "v", "m")]
    if section == "allergy":
        mine = set(profile.allergies)
        buttons = [button(f"✅ {a}" if a in mine else a, "a", i) for i, a in enumerate(ALLERGEN_ORDER)]
        rows = [buttons[i:i + 4] for i in range(0, len(buttons), 4)]
        return f"{taste_replies.profile_text(profile)}\n\n{tg.ALLERGY_PROMPT}", InlineKeyboardMarkup([*rows, back])
    if section == "diet":
        mine = set(profile.diets)
        rows = [[button(f"✅ {d.label}" if code in mine else d.label, "d", code)] for code, d in DIETS.items()]
        return f"{taste_replies.profile_text(profile)}\n\n{tg.DIET_PROMPT}", InlineKeyboardMarkup([*rows, back])
    rows = [[button("🚫 알레르기 고르기", "v", "a"), button("🥗 식단 고르기", "v", "d")]]
    removable = [i for i in profile.items if i.kind in ("dislike", "like")][:MAX_REMOVE_BUTTONS]
    title = {"dislike": "싫어하는 것", "like": "좋아하는 것"}
    rows += [[button(f"❌ {title[i.kind]}: {i.label} 지우기", "x", ids[i])] for i in removable]
    return f"{taste_replies.profile_text(profile)}\n\n{tg.BUTTONS_HINT}", InlineKeyboardMarkup(rows)


async def _view(desk: TasteDesk, user_id: int, section: str) -> tuple[str, Any]:
    rows = await desk.store.items(user_id)
    profile = TasteProfile(tuple(item for _, item in rows))
    return view(profile, {item: row_id for row_id, item in rows}, user_id, section)


async def command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d = deps(context)
    if d.service.taste is None:
        await reply(d, update.effective_message, taste_replies.TASTE_UNAVAILABLE)
        return
    text, keyboard = await _view(d.service.taste, update.effective_user.id, "main")
    await reply(d, update.effective_message, text, keyboard)


async def _taste_button(update: Update, context: ContextTypes.DEFAULT_TYPE,
                        parse: Callable[[str | None], Any]) -> tuple[Any, Any, Any] | None:
    """(deps, the parsed button, its message) for a well-formed press with taste on, after the toast; else the
    "bad button" toast and None."""
    d, query = deps(context), update.callback_query
    parsed, message = parse(query.data), button_message(update)
    if parsed is None or message is None or d.service.taste is None:
        await toast(context, update, tg.BAD_BUTTON)
        return None
    await toast(context, update)
    return d, parsed, message


async def on_confirm(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if (pressed := await _taste_button(update, context, parse_confirm)) is None:
        return
    d, (choice, turn_id), message = pressed
    query = update.callback_query
    accept, unsure_as = choice != "n", "dislike" if choice == "d" else "allergy"
    chat, user_id = message.chat, query.from_user.id

    async def settled(text: str) -> None:  # the question turns into what was remembered, before the answer
        await d.sender.edit_text(chat.id, message.message_id, text)

    async def run(on_partial: DeltaCallback, place: Place):
        settled_choice = await d.service.settle_taste(chat.id, user_id, turn_id, accept, on_settled=settled,
                                                      on_partial=on_partial, place=place, unsure_as=unsure_as)
        return settled_choice.answer

    try:
        await deliver(d, chat, user_id, None, run)
    except TasteRefused as refused:
        await d.sender.send_text(chat.id, refused.reason, reply_to=message.message_id)


async def on_learn(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """예/아니요 to "국물 요리는 별로세요? 앞으로 덜 추천할까요?": the question turns into what was done."""
    if (pressed := await _taste_button(update, context, parse_learn)) is None:
        return
    d, (accept, question_id), message = pressed
    try:
        text = await d.service.settle_learned(update.callback_query.from_user.id, question_id, accept)
    except TasteRefused as refused:
        await d.sender.send_text(message.chat.id, refused.reason, reply_to=message.message_id)
        return
    await d.sender.edit_text(message.chat.id, message.message_id, text)


async def on_edit(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d, query = deps(context), update.callback_query
    parsed, message, desk = parse_edit(query.data), button_message(update), d.service.taste
    if parsed is None or message is None or desk is None:
        await toast(context, update, tg.BAD_BUTTON)
        return
    op, arg, owner = parsed
    user_id = query.from_user.id
    if owner != user_id:
        await toast(context, update, tg.NOT_YOURS)
        return
    said, section = await _apply(desk, user_id, op, arg)
    if section is None:
        await toast(context, update, said or tg.BAD_BUTTON)
        return
    await toast(context, update, said)
    text, keyboard = await _view(desk, user_id, section)
    await d.sender.edit_text(message.chat.id, message.message_id, text, reply_markup=keyboard)


async def _apply(desk: TasteDesk, user_id: int, op: str, arg: str) -> tuple[str | None, str | None]:
    """Do one edit. Returns (a short toast, the section to show next); section None: nothing was changed."""
    if op == "v":
        return None, SECTIONS.get(arg)
    if op == "a" and arg.isdigit():
        now = await desk.toggle_allergy(user_id, int(arg))
        if now is None:
            return None, None
        name = ALLERGEN_ORDER[int(arg)]
        return taste_replies.allergy_switched(name, now), "allergy"
    if op == "d":
        now = await desk.toggle_diet(user_id, arg)
        if now is None:
            return None, None
        return taste_replies.diet_switched(DIETS[arg].label, now), "diet"
    if op == "x" and arg.isdigit():
        removed = await desk.remove(user_id, int(arg))
        return (taste_replies.item_removed(removed.label) if removed is not None else tg.ITEM_GONE), "main"
    return None, None
