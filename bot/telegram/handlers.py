"""Telegram handlers: small async functions that check who is asking, call the conversation service, and answer.

Ordering matters: with concurrent updates, a handler takes its user's ticket and calls the service before its first
real await, so a user's messages are stored, generated and delivered in the order they were sent.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Chat, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatType, MessageEntityType
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.korean import with_particle
from bot.service.conversation import Answer, ConversationBusy, ConversationService, DeltaCallback, RetryRefused
from bot.settings import Settings
from bot.telegram.delivery import AnswerStream, typing
from bot.telegram.feedback import MAX_CALLBACK_BYTES, TURN_ID, FeedbackHandlers, feedback_keyboard, turn_id_in
from bot.telegram.gate import Ticket, UserGate, UserGateRefused
from bot.telegram.sending import SafeSender
from bot.telegram.taste import TasteHandlers, confirm_keyboard
from model import AdapterError

log = logging.getLogger(__name__)

GREETING = (
    "안녕하세요! 메뉴 고민을 덜어 드리는 메추리예요 🐦\n"
    "오늘 뭐 먹을지 편하게 물어보세요. 이렇게요:\n"
    "• 매운 요리 추천해줘\n"
    "• 비 오는 날 뭐 먹지\n"
    "• 혼자 먹기 좋은 저녁 메뉴 알려줘\n\n"
    "추천이 마음에 안 들면 🔄 다른 거 를 눌러 주세요. 도움말은 /help 예요."
)
HELP = (
    "메추리는 먹고 싶은 분위기를 말하면 메뉴를 골라 드려요.\n\n"
    "/start 인사와 예시 질문\n/help 이 도움말\n/reset 새 대화 시작 (이전 이야기는 참고하지 않아요)\n"
    "/taste 내 입맛(알레르기·식단·싫어하는 것) 보기와 고치기\n"
    "/forget 저장된 내 대화 기록과 입맛 기록 모두 삭제\n\n"
    "\"나 새우 알레르기 있어\", \"오이 싫어해\"처럼 말해 주시면 기억해 둘지 여쭤보고, 다음 추천부터 반영해요.\n"
    "{feedback}단체방에서는 @{username} 을 붙이거나 제 메시지에 답장으로 물어봐 주세요."
)
FEEDBACK_HELP = "답변 아래 👍/👎를 눌러 주시면 더 좋은 추천을 고르는 데 참고해요.\n"
HELP_HINT = "그 명령은 몰라요. 쓸 수 있는 명령은 /help 에서 볼 수 있어요."
NOT_ALLOWED = "죄송해요, 이 봇은 초대받은 분들만 쓸 수 있어요."
ADMIN_ONLY = "관리자만 쓸 수 있는 명령이에요."
NON_TEXT = "사진이나 스티커, 음성은 아직 볼 줄 몰라요. 먹고 싶은 걸 글로 적어 주시면 메뉴를 골라 드릴게요 🍚"
EMPTY_MENTION = "네, 부르셨어요? 어떤 음식이 당기는지 말씀해 주세요."
BUSY = "지금 주문이 밀려 있어요 🙏 질문은 받아 두었어요. 잠시 후에 다시 보내 주세요."
RESET_DONE = "새 대화를 시작했어요. 이전 이야기는 빼고 처음부터 추천해 드릴게요."
FORGET_ASK = "지금까지 저장된 내 대화 기록과 입맛 기록을 모두 지울까요? 지우면 되돌릴 수 없어요."
FORGET_CANCELLED = "취소했어요. 기록은 그대로 있어요."
NOT_YOURS = "본인만 누를 수 있는 버튼이에요."
BAD_BUTTON = "이 버튼은 처리할 수 없어요. 새로 질문해 주세요."
SORRY = "앗, 문제가 생겼어요. 잠시 후 다시 시도해 주세요."
RELOAD_BROKEN = "어댑터 폴더가 비어 있거나 손상됐거나, 이 모델용이 아니에요. 자세한 내용은 서버 로그에 남겼어요."
RELOAD_ERROR = "불러오는 중에 예상하지 못한 문제가 생겼어요. 자세한 내용은 서버 로그에 남겼어요."
RETRY_DATA = re.compile(rf"retry:({TURN_ID})")
FORGET_DATA = re.compile(r"forget:(yes|no):([1-9][0-9]{0,19})")
GROUP_TYPES = (ChatType.GROUP, ChatType.SUPERGROUP)

Run = Callable[[DeltaCallback], Awaitable[Answer | None]]  # None: nothing to deliver (a taste choice alone)


def answer_keyboard(answer: Answer, *, votes: bool = True) -> InlineKeyboardMarkup | None:
    if answer.status == "ok":  # a refused premise gets no "다른 거" (it would only refuse again), nor 👍/👎
        return feedback_keyboard(answer.turn_id, retry=answer.can_retry, votes=votes and answer.can_vote)
    if answer.status == "ask":  # a taste statement to confirm before it is remembered
        return confirm_keyboard(answer.question_turn_id)
    return None


def parse_retry(data: str | None) -> int | None:
    """The turn id in "retry:<id>", or None for anything forged, malformed or too long."""
    if not data or len(data.encode()) > MAX_CALLBACK_BYTES:
        return None
    found = RETRY_DATA.fullmatch(data)
    return turn_id_in(found.group(1)) if found else None


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


class Handlers:
    def __init__(self, service: ConversationService, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.gate = UserGate(cooldown_s=settings.user_cooldown_s)
        self.sender: SafeSender | None = None
        self.feedback = FeedbackHandlers(self)
        self._draft_ids = itertools.count(1)  # sendMessageDraft needs a non-zero id per draft

    def register(self, app: Application) -> None:
        self.sender = SafeSender(app.bot)
        app.add_handler(TypeHandler(Update, self.check_access), group=-1)
        app.add_handler(CommandHandler("start", self.start))
        app.add_handler(CommandHandler("help", self.help))
        app.add_handler(CommandHandler("reset", self.reset))
        app.add_handler(CommandHandler("forget", self.forget))
        app.add_handler(CommandHandler("reload", self.reload))
        app.add_handler(CommandHandler("status", self.status))
        app.add_handler(CallbackQueryHandler(self.on_retry, pattern=r"^retry:"))
        app.add_handler(CallbackQueryHandler(self.feedback.on_vote, pattern=r"^vote:"))  # 👍/👎 (telegram_feedback)
        app.add_handler(CallbackQueryHandler(self.on_forget_choice, pattern=r"^forget:"))
        TasteHandlers(self).register(app)  # /taste and its buttons, the 예/아니요 of a taste statement
        app.add_handler(CallbackQueryHandler(self.on_stray_callback))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND, self.on_text))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.COMMAND, self.on_unknown_command))
        app.add_handler(
            MessageHandler(filters.UpdateType.MESSAGE & ~filters.TEXT & ~filters.StatusUpdate.ALL, self.on_non_text)
        )
        app.add_error_handler(self.on_error)

    # --- access ---------------------------------------------------------------------------------------------------

    async def check_access(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user, chat = update.effective_user, update.effective_chat
        if user is None or user.is_bot:
            raise ApplicationHandlerStop  # channel posts, other bots: not ours to answer
        if self.settings.is_allowed(user.id) or (chat is not None and chat.id in self.settings.allowed_ids):
            return
        log.info("refused a user outside MECHURI_ALLOWED_IDS")
        if update.callback_query is not None:
            await self._sender().try_once(lambda: update.callback_query.answer(NOT_ALLOWED), what="answerCallbackQuery")
        elif update.message is not None and chat is not None and self._addressed(update.message, context):
            await self._reply(update.message, NOT_ALLOWED)
        raise ApplicationHandlerStop

    def _addressed(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> bool:
        if message.chat.type not in GROUP_TYPES:
            return True
        if (message.text or "").startswith("/"):
            return _command_is_ours(message, context.bot.username)
        return addressed_text(message, context.bot.username, context.bot.id) is not None

    # --- commands -------------------------------------------------------------------------------------------------

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update.effective_message, GREETING)

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        feedback = FEEDBACK_HELP if self.settings.feedback_buttons else ""
        await self._reply(update.effective_message, HELP.format(username=context.bot.username, feedback=feedback))

    async def reset(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.service.reset(update.effective_chat.id, update.effective_user.id)
        await self._reply(update.effective_message, RESET_DONE)

    async def forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user_id = update.effective_user.id
        keyboard = InlineKeyboardMarkup([[
            InlineKeyboardButton("삭제", callback_data=f"forget:yes:{user_id}"),
            InlineKeyboardButton("취소", callback_data=f"forget:no:{user_id}"),
        ]])
        await self._reply(update.effective_message, FORGET_ASK, keyboard)

    async def reload(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if not self.settings.is_admin(update.effective_user.id):
            await self._reply(message, ADMIN_ONLY)
            return
        name = " ".join(context.args or ()).strip() or (self.settings.adapter or "")
        if not name:
            await self._reply(message, "불러올 어댑터 이름을 적어 주세요: /reload <이름> (MECHURI_ADAPTERS_DIR 안의 폴더)")
            return
        await self._reply(message, f"어댑터 {with_particle(_quoted(name), '을')} 불러오는 중이에요…")
        # Loading takes seconds; the bot keeps answering meanwhile and reports when it is done.
        context.application.create_task(self._reload_and_report(message, name), update=update)

    async def _reload_and_report(self, message: Message, name: str) -> None:
        before, version = self._adapter_label()
        started = time.monotonic()
        try:
            info = await self.service.reload_adapter(name)
        except Exception as exc:  # the admin is told why, whatever it was; the old adapter keeps serving
            log.warning("adapter reload of %r failed: %s", name, exc)  # the log keeps the paths and details
            reason = getattr(exc, "reason", None) or (RELOAD_BROKEN if isinstance(exc, AdapterError) else RELOAD_ERROR)
            kept = f"지금 쓰던 {with_particle(before, '을')} 계속 써요" + (f" (버전 {version})." if version else ".")
            await self._reply(message, f"어댑터 {with_particle(_quoted(name), '을')} 불러오지 못했어요. {kept}\n"
                                       f"이유: {reason}")
            return
        await self._reply(
            message, f"어댑터 '{info.name}' 준비 완료 ✅ 불러오는 데 {time.monotonic() - started:.2f}초 (버전 {info.version})"
        )

    def _adapter_label(self) -> tuple[str, str | None]:
        """What serves now, for a sentence: ("'v2'", version) or ("기본 모델", None)."""
        try:
            adapter = self.service.status().get("generator", {}).get("adapter") or {}
        except Exception:
            return "이전 어댑터", None
        return (f"'{adapter['name']}'", adapter.get("version")) if adapter.get("name") else ("기본 모델", None)

    async def status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.settings.is_admin(update.effective_user.id):
            await self._reply(update.effective_message, ADMIN_ONLY)
            return
        await self._reply(update.effective_message, format_status(self.service.status(), self.gate.waiting))

    # --- messages -------------------------------------------------------------------------------------------------

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        text = addressed_text(message, context.bot.username, context.bot.id)
        if text is None:
            return
        if not text:
            await self._reply(message, EMPTY_MENTION)
            return
        chat_id, user_id, name = message.chat.id, user.id, user.full_name
        reply_to = message.message_id if message.chat.type in GROUP_TYPES else None  # in groups, say whom we answer
        await self._answer(
            message.chat, user_id, reply_to,
            lambda on_partial: self.service.reply(chat_id, user_id, text, on_partial=on_partial, user_name=name),
        )

    async def on_non_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        replied_to = getattr(message.reply_to_message, "from_user", None)
        if message.chat.type in GROUP_TYPES and getattr(replied_to, "id", None) != context.bot.id:
            return  # in groups, only a photo or sticker sent in reply to the bot is for the bot
        await self._reply(message, NON_TEXT)

    async def on_unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if _command_is_ours(message, context.bot.username):
            await self._reply(message, HELP_HINT)

    async def _answer(self, chat: Chat, user_id: int, reply_to: int | None, run: Run) -> Answer | None:
        """Generate with a live preview, then deliver in the user's order. Returns None when nothing was answered."""
        try:
            ticket = self.gate.enter(chat.id, user_id)
        except UserGateRefused as refused:
            await self._send(chat.id, refused.reason, reply_to=reply_to)
            return None
        try:
            return await self._generate_and_deliver(chat, reply_to, ticket, run)
        finally:
            ticket.done()

    async def _generate_and_deliver(self, chat: Chat, reply_to: int | None, ticket: Ticket, run: Run) -> Answer | None:
        sender = self._sender()
        stream = AnswerStream(
            sender, chat.id, use_draft=chat.type == ChatType.PRIVATE, draft_id=next(self._draft_ids),
            interval_s=self.settings.stream_edit_interval_s, reply_to=reply_to,
        )
        try:
            async with typing(sender, chat.id):  # enters without suspending: `run` still starts in arrival order
                answer = await run(stream.update)
        except ConversationBusy:
            await stream.abandon()
            await ticket.wait_previous()
            await self._send(chat.id, BUSY, reply_to=reply_to)
            return None
        except BaseException:
            await stream.abandon()
            raise
        if answer is None:
            await stream.abandon()
            return None
        await ticket.wait_previous()
        text = f"{answer.notice}\n\n{answer.text}" if answer.notice else answer.text
        await stream.finish(text, answer_keyboard(answer, votes=self.settings.feedback_buttons))
        return answer

    # --- callbacks ------------------------------------------------------------------------------------------------

    async def on_retry(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        turn_id = parse_retry(query.data)
        message = query.message if query.message is not None and query.message.is_accessible else None
        if turn_id is None or not isinstance(message, Message):
            await self._sender().try_once(lambda: query.answer(BAD_BUTTON), what="answerCallbackQuery")
            return
        await self._sender().try_once(query.answer, what="answerCallbackQuery")
        chat, user_id = message.chat, query.from_user.id
        try:
            answer = await self._answer(
                chat, user_id, None,
                lambda on_partial: self.service.retry(chat.id, user_id, turn_id, on_partial=on_partial),
            )
        except RetryRefused as refused:
            await self._send(chat.id, refused.reason, reply_to=message.message_id)
            return
        if answer is not None:
            await self._sender().remove_keyboard(chat.id, message.message_id)

    async def on_forget_choice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        found = FORGET_DATA.fullmatch(query.data or "")
        message = query.message if query.message is not None and query.message.is_accessible else None
        if found is None or not isinstance(message, Message) or int(found.group(2)) != query.from_user.id:
            await self._sender().try_once(lambda: query.answer(NOT_YOURS if found else BAD_BUTTON), what="answer")
            return
        await self._sender().try_once(query.answer, what="answerCallbackQuery")
        if found.group(1) == "yes":
            deleted = await self.service.forget(message.chat.id, query.from_user.id)
            done = f"저장된 기록 {deleted}개를 모두 지웠어요. 언제든 다시 물어보세요."
        else:
            done = FORGET_CANCELLED
        await self._sender().edit_text(message.chat.id, message.message_id, done)

    async def on_stray_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._sender().try_once(lambda: update.callback_query.answer(BAD_BUTTON), what="answerCallbackQuery")

    # --- errors and sending ---------------------------------------------------------------------------------------

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        log.error("handling an update failed: %s: %s", type(error).__name__, error, exc_info=error)
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is not None:
            await self._sender().try_once(lambda: context.bot.send_message(chat.id, SORRY), what="sendMessage")

    def _sender(self) -> SafeSender:
        if self.sender is None:
            raise RuntimeError("Handlers.register(app) must run before handlers are called")
        return self.sender

    async def _send(self, chat_id: int, text: str, *, reply_to: int | None = None) -> None:
        await self._sender().send_text(chat_id, text, reply_to=reply_to)

    async def _reply(self, message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        reply_to = message.message_id if message.chat.type in GROUP_TYPES else None
        await self._sender().send_text(message.chat.id, text, reply_markup=markup, reply_to=reply_to)


def _quoted(name: str) -> str:
    return f"'{name[:40]}'"


def format_status(status: dict[str, Any], waiting_messages: int) -> str:
    generator = status.get("generator", {})
    adapter = generator.get("adapter") or {}
    adapter_text = f"{adapter['name']} (버전 {adapter.get('version')})" if adapter.get("name") else "없음 (기본 모델)"
    uptime = int(status.get("uptime_s", 0))
    hours, rest = divmod(uptime, 3600)
    return "\n".join([
        "📊 메추리 상태",
        f"모델: {generator.get('base', '?')}",
        f"어댑터: {adapter_text}",
        f"양자화: {generator.get('quantization', '?')} · {generator.get('device', '?')} · {generator.get('dtype', '?')}",
        f"대기열: {generator.get('queue_length', '?')} (생성 중 {generator.get('running', '?')}, "
        f"최대 배치 {generator.get('max_batch_size', '?')})",
        f"답변 중: {status.get('in_flight', '?')} · 대기 중인 메시지: {waiting_messages} · "
        f"지금까지 답한 수: {status.get('answered', '?')}",
        f"가동 시간: {hours}시간 {rest // 60}분 {rest % 60}초",
    ])
