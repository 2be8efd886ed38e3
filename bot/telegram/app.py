"""The Telegram bot: the handlers registered in one list, the PTB Application, and `mechuri bot` (polling or
webhooks).

`build_application(settings, service)` is the PTB Application with every handler (tests drive it with a fake Bot API);
`run_bot(settings)` is `mechuri bot`: it upgrades the database, joins the replicas sharing it (bot/store/replicas.py)
and recovers turns that stopped processes left pending, loads the model, and polls (or, with `webhook=True`, receives
webhooks, bot/telegram/webhook.py) until SIGINT/SIGTERM. No secret reaches a log line, not even inside a traceback:
not the bot token, not the database password, not the webhook secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import BotCommand, BotCommandScopeChat, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseRateLimiter,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import BaseRequest

from bot.redaction import redact_secrets_in_logs
from bot.service.conversation import ConversationService
from bot.service.runtime import build_service, load_catalog, load_safety, start_generator
from bot.settings import Settings, SettingsError
from bot.store.database import Database, database_problem
from bot.store.history import RecoveredTurn, Store
from bot.store.replicas import Membership
from bot.store.schema import utcnow
from bot.telegram import handlers, taste
from bot.telegram import replies as tg
from bot.telegram.delivery import Deps
from bot.telegram.sending import FloodControl, SafeSender
from bot.telegram.webhook import AcknowledgingQueue, ConcurrentUpdates, WebhookError, delete_webhook, start_webhook

log = logging.getLogger(__name__)

COMMANDS = [
    BotCommand("start", "인사와 예시 질문"),
    BotCommand("help", "도움말"),
    BotCommand("reset", "새 대화 시작"),
    BotCommand("taste", "내 입맛 기록 보기·고치기"),
    BotCommand("forget", "내 대화 기록 삭제"),
]
ADMIN_COMMANDS = [*COMMANDS, BotCommand("reload", "어댑터 다시 불러오기 (관리자)"), BotCommand("status", "상태 (관리자)")]

GeneratorFactory = Callable[[Settings], Awaitable[Any]]
NOTICE_MAX_AGE_S = 3600  # an answer interrupted longer ago than this is not worth a message


def register(app: Application) -> None:
    """Every handler, in the order PTB tries them."""
    app.add_handler(TypeHandler(Update, handlers.check_access), group=-1)
    app.add_handlers([
        CommandHandler("start", handlers.start),
        CommandHandler("help", handlers.help_command),
        CommandHandler("reset", handlers.reset),
        CommandHandler("forget", handlers.forget),
        CommandHandler("reload", handlers.reload),
        CommandHandler("status", handlers.status),
        CommandHandler("taste", taste.command),
        CallbackQueryHandler(handlers.on_retry, pattern=r"^retry:"),
        CallbackQueryHandler(handlers.on_vote, pattern=r"^vote:"),
        CallbackQueryHandler(handlers.on_forget_choice, pattern=r"^forget:"),
        CallbackQueryHandler(taste.on_confirm, pattern=r"^tc:"),
        CallbackQueryHandler(taste.on_learn, pattern=r"^tl:"),
        CallbackQueryHandler(taste.on_edit, pattern=r"^tt:"),
        CallbackQueryHandler(handlers.on_stray_callback),
        MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND, handlers.on_text),
        MessageHandler(filters.UpdateType.MESSAGE & filters.COMMAND, handlers.on_unknown_command),
        MessageHandler(filters.UpdateType.MESSAGE & ~filters.TEXT & ~filters.StatusUpdate.ALL, handlers.on_non_text),
    ])
    app.add_error_handler(handlers.on_error)


def build_application(
    settings: Settings, service: ConversationService, *, request: BaseRequest | None = None,
    get_updates_request: BaseRequest | None = None, webhook: bool = False,
    rate_limiter: BaseRateLimiter[Any] | None = None,
) -> Application:
    """The PTB Application with Mechuri's handlers. `request`s replace the HTTP transport (tests). `webhook`: the
    update queue holds Telegram's 200 until a message's question is stored (bot/telegram/webhook.py)."""
    queue = AcknowledgingQueue() if webhook else None
    builder = (
        ApplicationBuilder()
        .token(settings.require_token())
        # Updates run concurrently; the users' lines (bot/service/ordering.py) keep each user's turns in order.
        .concurrent_updates(ConcurrentUpdates(queue))
        .rate_limiter(rate_limiter or FloodControl())
        .post_init(set_commands)
    )
    if queue is not None:
        builder = builder.update_queue(queue)
    if settings.telegram_base_url:
        builder = builder.base_url(settings.telegram_base_url)
    if settings.telegram_base_file_url:
        builder = builder.base_file_url(settings.telegram_base_file_url)
    if request is not None:
        builder = builder.request(request)
    if get_updates_request is not None:
        builder = builder.get_updates_request(get_updates_request)
    app = builder.build()
    app.bot_data["mechuri"] = Deps(service, settings, SafeSender(app.bot),
                                   acknowledge=queue.taken_in if queue is not None else None)
    register(app)
    return app


async def set_commands(app: Application) -> None:
    """Register the command menu (setMyCommands); admins get /reload and /status in their private chats."""
    settings: Settings = app.bot_data["mechuri"].settings
    try:
        await app.bot.set_my_commands(COMMANDS)
    except TelegramError as exc:
        log.warning("could not register the command menu: %s", exc)
    for admin_id in settings.admin_ids:
        try:
            await app.bot.set_my_commands(ADMIN_COMMANDS, scope=BotCommandScopeChat(admin_id))
        except TelegramError as exc:  # an admin who never opened a chat with the bot: "chat not found"
            log.info("admin command menu not set for one admin: %s", exc)


async def tell_interrupted(app: Application, recovered: list[RecoveredTurn]) -> None:
    """Tell each user whose answer a stopped process left unfinished (recent ones only) to ask again."""
    sender: SafeSender = app.bot_data["mechuri"].sender
    now = utcnow()
    for turn in recovered:
        created = turn.created_at if turn.created_at.tzinfo else turn.created_at.replace(tzinfo=now.tzinfo)
        if (now - created).total_seconds() > NOTICE_MAX_AGE_S:
            continue
        question = " ".join((turn.question or "").split())
        question = question if len(question) <= 40 else question[:39] + "…"
        await sender.send_text(turn.chat_id, tg.INTERRUPTED_NOTICE.format(question=question or "앞의 질문"))


def membership_for(settings: Settings, database: Database) -> Membership:
    return Membership(database, name=settings.replica_name, lease_s=settings.replica_lease_s,
                      lock_timeout_s=settings.user_lock_timeout_s)


async def serve(
    settings: Settings, stop: asyncio.Event, *, make_generator: GeneratorFactory = start_generator,
    ready: Callable[[Application], None] | None = None, webhook: bool = False,
) -> None:
    """Upgrade the schema, join the replicas, load the model, take updates until `stop` is set, then shut down."""
    config = settings.require_webhook() if webhook else None
    database = Database(settings.database_url)
    membership = membership_for(settings, database)
    generator: Any = None
    try:
        await database.upgrade()
        recovered = await membership.start()
        log.info("loading the model %s (%s)…", settings.model_base, settings.quantization)
        generator = await make_generator(settings)
        store = Store(database, replica_id=membership.replica_id, lease_s=settings.replica_lease_s)
        service = build_service(settings, store, generator, catalog=load_catalog(), safety=await load_safety(),
                                locks=membership.user_locks())
        if service.taste is not None:
            service.taste.preload()  # the statement reader (Kiwi) starts in the background
        app = build_application(settings, service, webhook=webhook)
        async with app:  # initialize (getMe) … shutdown
            await _run_app(app, membership, recovered, config, ready, stop)
    finally:
        try:
            await membership.stop()  # no-op when it already left
        except Exception as exc:  # the database went away: the lease runs out by itself
            log.warning("could not leave the replicas cleanly: %s", type(exc).__name__)
        if generator is not None:
            await generator.close()
        await database.close()


async def _run_app(app: Application, membership: Membership, recovered: list[RecoveredTurn], config: Any,
                   ready: Callable[[Application], None] | None, stop: asyncio.Event) -> None:
    if app.post_init:
        await app.post_init(app)
    await app.start()
    membership.on_recovered = lambda turns: tell_interrupted(app, turns)
    if recovered:
        await tell_interrupted(app, recovered)
    if config is not None:
        await start_webhook(app, config)
    else:
        await app.updater.start_polling(allowed_updates=Update.ALL_TYPES)
        log.info("@%s is polling for updates", app.bot.username)
    if ready is not None:
        ready(app)
    await stop.wait()
    log.info("stopping: finishing the answers in flight")
    await app.updater.stop()
    await app.stop()
    others = await membership.stop()
    if config is not None and others == 0:
        await delete_webhook(app)


def run_bot(settings: Settings, *, make_generator: GeneratorFactory = start_generator, webhook: bool = False) -> int:
    """`mechuri bot`: run until SIGINT/SIGTERM. `make_generator` is the seam for tests (a fake generator)."""
    settings.require_token()
    restore_logging = redact_secrets_in_logs(settings)
    # httpx logs each request line at INFO, and the request line holds the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop, make_generator=make_generator, webhook=webhook)

    from sqlalchemy.exc import SQLAlchemyError

    from model import ModelError

    try:
        asyncio.run(main())
    except InvalidToken:
        # PTB's message repeats the token; say what to do instead.
        log.error("Telegram rejected TELEGRAM_BOT_TOKEN: check the token from @BotFather in .env or the environment")
        return 2
    except SettingsError as exc:
        for problem in exc.problems:
            log.error("settings: %s", problem)
        return 2
    except WebhookError as exc:
        log.error("the webhook server did not start: %s", exc)
        return 1
    except ModelError as exc:  # the message names the cause and the fix
        log.error("the model could not be loaded: %s", exc)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        log.error("%s", database_problem(settings.database_url, exc))
        return 1
    finally:
        restore_logging()
    return 0
