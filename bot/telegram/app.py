"""The Telegram bot: wiring of settings, store, generator, conversation service and PTB Application; polling or
webhooks.

`build_application(settings, service)` is the PTB Application with every handler (tests drive it with a fake Bot API);
`run_bot(settings)` is `mechuri bot`: it upgrades the database, joins the replicas sharing it (bot/replicas.py) and
recovers turns that stopped processes left pending, loads the model, and polls (or, with `webhook=True`, receives
webhooks, bot/webhook.py) until SIGINT/SIGTERM. No secret reaches a log line, not even inside a traceback: not the
bot token, not the database password, not the webhook secret.
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
from telegram.ext import Application, ApplicationBuilder
from telegram.request import BaseRequest

from bot.redaction import redact_secrets_in_logs, redact_token_in_logs  # noqa: F401 (re-exported)
from bot.service.conversation import ConversationService
from bot.service.runtime import load_catalog, load_safety, start_generator
from bot.settings import Settings, SettingsError
from bot.store.database import database_problem
from bot.store.history import RecoveredTurn, Store, utcnow
from bot.store.replicas import Membership
from bot.telegram.gate import CappedGenerator
from bot.telegram.handlers import Handlers
from bot.telegram.webhook import AcknowledgingQueue, ScopedUpdates, WebhookError, delete_webhook, start_webhook

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
INTERRUPTED_NOTICE = "“{question}”에 답하다가 멈췄어요 🙏 다시 보내 주시면 바로 답할게요."
NOTICE_MAX_AGE_S = 3600  # an answer interrupted longer ago than this is not worth a message


def build_service(settings: Settings, store: Store, generator: Any, catalog: Any | None = None,
                  safety: Any | None = None) -> ConversationService:
    """The conversation service as the bot runs it: generations beyond the global cap wait instead of failing."""
    capped = CappedGenerator(generator, settings.max_concurrent)
    return ConversationService.from_settings(settings, store, capped, catalog, safety)


def build_application(
    settings: Settings, service: ConversationService, *, request: BaseRequest | None = None,
    get_updates_request: BaseRequest | None = None, webhook: bool = False,
) -> Application:
    """The PTB Application with Mechuri's handlers. `request`s replace the HTTP transport (tests). `webhook`: the
    update queue holds Telegram's 200 until a message's question is stored (bot/webhook.py)."""
    queue = AcknowledgingQueue() if webhook else None
    builder = (
        ApplicationBuilder()
        .token(settings.require_token())
        # Updates run concurrently, each in a TurnScope; the service and UserGate keep each user's turns in order.
        .concurrent_updates(ScopedUpdates(queue))
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
    handlers = Handlers(service, settings)
    handlers.register(app)
    app.bot_data.update(settings=settings, handlers=handlers)
    return app


async def set_commands(app: Application) -> None:
    """Register the command menu (setMyCommands); admins get /reload and /status in their private chats."""
    settings: Settings = app.bot_data["settings"]
    try:
        await app.bot.set_my_commands(COMMANDS)
    except TelegramError as exc:
        log.warning("could not register the command menu: %s", exc)
    for admin_id in settings.admin_ids:
        try:
            await app.bot.set_my_commands(ADMIN_COMMANDS, scope=BotCommandScopeChat(admin_id))
        except TelegramError as exc:  # an admin who never opened a chat with the bot: "chat not found"
            log.info("admin command menu not set for one admin: %s", exc)


async def load_generator(settings: Settings) -> Any:
    """The real generator: base model (+ the configured adapter) loaded off the event loop."""
    return await start_generator(settings)


def membership_for(settings: Settings, store: Store) -> Membership:
    return Membership(store, name=settings.replica_name, lease_s=settings.replica_lease_s,
                      lock_timeout_s=settings.user_lock_timeout_s)


async def tell_interrupted(app: Application, recovered: list[RecoveredTurn]) -> None:
    """Tell each user whose answer a stopped process left unfinished (recent ones only) to ask again."""
    handlers: Handlers = app.bot_data["handlers"]
    now = utcnow()
    for turn in recovered:
        created = turn.created_at if turn.created_at.tzinfo else turn.created_at.replace(tzinfo=now.tzinfo)
        if (now - created).total_seconds() > NOTICE_MAX_AGE_S:
            continue
        question = " ".join((turn.question or "").split())
        question = question if len(question) <= 40 else question[:39] + "…"
        if handlers.sender is not None:
            await handlers.sender.send_text(turn.chat_id, INTERRUPTED_NOTICE.format(question=question or "앞의 질문"))


async def serve(
    settings: Settings, stop: asyncio.Event, *, make_generator: GeneratorFactory = load_generator,
    ready: Callable[[Application], None] | None = None, webhook: bool = False,
) -> None:
    """Upgrade the schema, join the replicas, load the model, take updates until `stop` is set, then shut down."""
    config = settings.require_webhook() if webhook else None
    store = Store(settings.database_url)
    membership = membership_for(settings, store)
    generator: Any = None
    try:
        await store.upgrade()
        recovered = await membership.start()
        log.info("loading the model %s (%s)…", settings.model_base, settings.quantization)
        generator = await make_generator(settings)
        service = build_service(settings, store, generator, load_catalog(), await load_safety())
        if service.taste is not None:
            service.taste.preload()  # the statement reader (Kiwi) starts in the background
        app = build_application(settings, service, webhook=webhook)
        async with app:  # initialize (getMe) … shutdown
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
    finally:
        try:
            await membership.stop()  # no-op when it already left
        except Exception as exc:  # the database went away: the lease runs out by itself
            log.warning("could not leave the replicas cleanly: %s", type(exc).__name__)
        if generator is not None:
            await generator.close()
        await store.close()


def run_bot(settings: Settings, *, make_generator: GeneratorFactory = load_generator, webhook: bool = False) -> int:
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
