"""Telegram handlers: small async functions that check who is asking, call the conversation service, and answer.
They are registered in one list, in bot/telegram/app.py; what they share is `Deps` (bot/telegram/delivery.py).

Ordering matters: with concurrent updates, a handler takes its user's place in line (in `deliver`) and calls the
service before its first real await, so a user's messages are stored, generated and delivered in the order sent.
"""

from __future__ import annotations

import logging
import re
from functools import partial

from telegram import Message, Update
from telegram.constants import MessageEntityType
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.service import replies
from bot.service.contract import DeltaCallback, RetryRefused
from bot.service.ordering import Place
from bot.telegram import replies as tg
from bot.telegram.delivery import GROUP_TYPES, button_message, deliver, deps, reply, toast
from bot.telegram.keyboards import (
    feedback_keyboard,
    forget_keyboard,
    learn_keyboard,
    parse_forget,
    parse_retry,
    parse_vote,
)

log = logging.getLogger(__name__)


def addressed_text(message: Message, username: str, bot_id: int) -> str | None:
    """The text meant for the bot: all of it in private chats; in groups only a mention or a reply to the bot."""
    text = message.text or ""
    if message.chat.type not in GROUP_TYPES:
        return text
    mention = f"@{username}".lower()
    mentioned = any(
        value.lower() == mention for value in message.parse_entities([MessageEntityType.MENTION]).values()
    )
    replied = message.reply_to_message is not None and getattr(message.reply_to_message.from_user, "id", 0) == bot_id
    if not (mentioned or replied):
        return None
    return " ".join(re.sub(re.escape(f"@{username}"), " ", text, flags=re.IGNORECASE).split())


def _command_is_ours(message: Message, username: str) -> bool:
    command = message.text.split(maxsplit=1)[0] if message.text else ""
    _, _, target = command.partition("@")
    return target.lower() == username.lower() if target else message.chat.type not in GROUP_TYPES


def _addressed(message: Message, context: ContextTypes.DEFAULT_TYPE) -> bool:
    if message.chat.type not in GROUP_TYPES:
        return True
    if (message.text or "").startswith("/"):
        return _command_is_ours(message, context.bot.username)
    return addressed_text(message, context.bot.username, context.bot.id) is not None


# --- access -------------------------------------------------------------------------------------------------------

async def check_access(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d, user, chat = deps(context), update.effective_user, update.effective_chat
    if user is None or user.is_bot:
        raise ApplicationHandlerStop  # channel posts, other bots: not ours to answer
    if d.settings.is_allowed(user.id) or (chat is not None and chat.id in d.settings.allowed_ids):
        return
    log.info("refused a user outside MECHURI_ALLOWED_IDS")
    if update.callback_query is not None:
        await toast(context, update, tg.NOT_ALLOWED)
    elif update.message is not None and chat is not None and _addressed(update.message, context):
        await reply(d, update.message, tg.NOT_ALLOWED)
    raise ApplicationHandlerStop


# --- commands -----------------------------------------------------------------------------------------------------

async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await reply(deps(context), update.effective_message, tg.GREETING)


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d = deps(context)
    feedback = tg.FEEDBACK_HELP if d.settings.feedback_buttons else ""
    await reply(d, update.effective_message, tg.HELP.format(username=context.bot.username, feedback=feedback))


async def reset(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d = deps(context)
    await d.service.reset(update.effective_chat.id, update.effective_user.id)
    await reply(d, update.effective_message, replies.RESET_DONE)


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await reply(deps(context), update.effective_message, replies.FORGET_ASK, forget_keyboard(update.effective_user.id))


async def reload(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d, message = deps(context), update.effective_message
    if not d.settings.is_admin(update.effective_user.id):
        await reply(d, message, replies.ADMIN_ONLY)
        return
    name = " ".join(context.args or ()).strip() or (d.settings.adapter or "")
    if not name:
        await reply(d, message, replies.RELOAD_USAGE)
        return
    await reply(d, message, replies.reload_started(name))

    async def reload_and_report() -> None:  # loading takes seconds; the bot keeps answering meanwhile
        await reply(d, message, await d.service.reload_report(name))

    context.application.create_task(reload_and_report(), update=update)


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d = deps(context)
    if not d.settings.is_admin(update.effective_user.id):
        await reply(d, update.effective_message, replies.ADMIN_ONLY)
        return
    await reply(d, update.effective_message, replies.format_status(d.service.status()))


async def on_unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if _command_is_ours(message, context.bot.username):
        await reply(deps(context), message, replies.HELP_HINT)


# --- messages -----------------------------------------------------------------------------------------------------

async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d, message, user = deps(context), update.effective_message, update.effective_user
    text = addressed_text(message, context.bot.username, context.bot.id)
    if text is None:
        return
    if not text:
        await reply(d, message, tg.EMPTY_MENTION)
        return
    chat_id, user_id, name = message.chat.id, user.id, user.full_name
    reply_to = message.message_id if message.chat.type in GROUP_TYPES else None  # in groups, say whom we answer
    on_stored = partial(d.acknowledge, update) if d.acknowledge is not None else None

    async def run(on_partial: DeltaCallback, place: Place):
        return await d.service.reply(chat_id, user_id, text, on_partial=on_partial, user_name=name, place=place,
                                     on_stored=on_stored)

    await deliver(d, message.chat, user_id, reply_to, run)


async def on_non_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    replied_to = getattr(message.reply_to_message, "from_user", None)
    if message.chat.type in GROUP_TYPES and getattr(replied_to, "id", None) != context.bot.id:
        return  # in groups, only a photo or sticker sent in reply to the bot is for the bot
    await reply(deps(context), message, tg.NON_TEXT)


# --- buttons ------------------------------------------------------------------------------------------------------

async def on_retry(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d, query = deps(context), update.callback_query
    turn_id, message = parse_retry(query.data), button_message(update)
    if turn_id is None or message is None:
        await toast(context, update, tg.BAD_BUTTON)
        return
    await toast(context, update)
    chat, user_id = message.chat, query.from_user.id

    async def run(on_partial: DeltaCallback, place: Place):
        return await d.service.retry(chat.id, user_id, turn_id, on_partial=on_partial, place=place)

    try:
        answer = await deliver(d, chat, user_id, None, run)
    except RetryRefused as refused:
        await d.sender.send_text(chat.id, refused.reason, reply_to=message.message_id)
        return
    if answer is not None:
        await d.sender.remove_keyboard(chat.id, message.message_id)


async def on_vote(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d, query = deps(context), update.callback_query
    parsed, message = parse_vote(query.data), button_message(update)
    if parsed is None or message is None:
        await toast(context, update, tg.BAD_BUTTON)
        return
    if not d.settings.feedback_buttons:  # a button from before the setting was turned off: store nothing
        await toast(context, update, tg.FEEDBACK_OFF)
        return
    turn_id, up = parsed
    try:
        result = await d.service.vote(message.chat.id, query.from_user.id, turn_id, up)
    except RetryRefused as refused:
        await toast(context, update, refused.reason)
        return
    if not result.changed:
        thanks = tg.ALREADY_COUNTED
    elif result.vote == "up":
        thanks = tg.THANKS_UP
    else:  # 👎 never regenerates by itself
        thanks = tg.THANKS_DOWN if result.can_retry else tg.THANKS_DOWN_NO_RETRY
    await toast(context, update, thanks)
    keyboard = feedback_keyboard(turn_id, retry=result.can_retry, votes=True, chosen=result.vote)
    if message.reply_markup != keyboard:  # a double tap finds the ✓ already shown
        await d.sender.set_keyboard(message.chat.id, message.message_id, keyboard)
    if result.changed and result.vote == "down":  # turn-downs may now share a taste: ask about it, once
        learned = await d.service.learned_question(query.from_user.id)
        if learned is not None:
            await d.sender.send_text(message.chat.id, learned[1], reply_markup=learn_keyboard(learned[0]))


async def on_forget_choice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    d, query = deps(context), update.callback_query
    parsed, message = parse_forget(query.data), button_message(update)
    if parsed is None or message is None or parsed[1] != query.from_user.id:
        await toast(context, update, tg.NOT_YOURS if parsed else tg.BAD_BUTTON)
        return
    await toast(context, update)
    if parsed[0]:
        done = replies.forgotten(await d.service.forget(message.chat.id, query.from_user.id))
    else:
        done = replies.FORGET_CANCELLED
    await d.sender.edit_text(message.chat.id, message.message_id, done)


async def on_stray_callback(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await toast(context, update, tg.BAD_BUTTON)


# --- errors -------------------------------------------------------------------------------------------------------

async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    error = context.error
    log.error("handling an update failed: %s: %s", type(error).__name__, error, exc_info=error)
    chat = update.effective_chat if isinstance(update, Update) else None
    if chat is not None:
        await deps(context).sender.try_once(lambda: context.bot.send_message(chat.id, tg.SORRY), what="sendMessage")
