"""The Telegram bot: wiring of settings, store, generator, conversation service and PTB Application, and polling.

`build_application(settings, service)` is the PTB Application with every handler (tests drive it with a fake Bot API);
`run_bot(settings)` is `mechuri bot`: it upgrades the database, recovers turns an earlier run left pending, loads the
model, and polls until SIGINT/SIGTERM. The bot token never reaches a log line, not even inside a traceback.
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

from bot.conversation import ConversationService
from bot.handlers import Handlers
from bot.runtime import load_catalog, start_generator
from bot.settings import Settings, SettingsError
from bot.storage import Store
from bot.telegram_gate import CappedGenerator

log = logging.getLogger(__name__)

COMMANDS = [
    BotCommand("start", "인사와 예시 질문"),
    BotCommand("help", "도움말"),
    BotCommand("reset", "새 대화 시작"),
    BotCommand("forget", "내 대화 기록 삭제"),
]
ADMIN_COMMANDS = [*COMMANDS, BotCommand("reload", "어댑터 다시 불러오기 (관리자)"), BotCommand("status", "상태 (관리자)")]

GeneratorFactory = Callable[[Settings], Awaitable[Any]]


def build_service(settings: Settings, store: Store, generator: Any, catalog: Any | None = None) -> ConversationService:
    """The conversation service as the bot runs it: generations beyond the global cap wait instead of failing."""
    return ConversationService.from_settings(settings, store, CappedGenerator(generator, settings.max_concurrent), catalog)


def build_application(
    settings: Settings, service: ConversationService, *, request: BaseRequest | None = None,
    get_updates_request: BaseRequest | None = None,
) -> Application:
    """The PTB Application with Mechuri's handlers. `request`s replace the HTTP transport (tests)."""
    builder = (
        ApplicationBuilder()
        .token(settings.require_token())
        .concurrent_updates(True)  # the service and UserGate keep each user's turns in order
        .post_init(set_commands)
    )
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


async def serve(
    settings: Settings, stop: asyncio.Event, *, make_generator: GeneratorFactory = load_generator,
    ready: Callable[[Application], None] | None = None,
) -> None:
    """Upgrade the schema, recover, load the model, poll until `stop` is set, then shut everything down."""
    store = Store(settings.database_url)
    generator: Any = None
    try:
        await store.upgrade()
        await store.recover()
        log.info("loading the model %s (%s)…", settings.model_base, settings.quantization)
        generator = await make_generator(settings)
        service = build_service(settings, store, generator, load_catalog())
        app = build_application(settings, service)
        async with app:  # initialize (getMe) … shutdown
            if app.post_init:
                await app.post_init(app)
            await app.start()
            await app.updater.start_polling(allowed_updates=Update.ALL_TYPES)
            log.info("@%s is polling for updates", app.bot.username)
            if ready is not None:
                ready(app)
            await stop.wait()
            log.info("stopping: finishing the answers in flight")
            await app.updater.stop()
            await app.stop()
    finally:
        if generator is not None:
            await generator.close()
        await store.close()


def run_bot(settings: Settings, *, make_generator: GeneratorFactory = load_generator) -> int:
    """`mechuri bot`: run until SIGINT/SIGTERM. `make_generator` is the seam for tests (a fake generator)."""
    token = settings.require_token()
    restore_logging = redact_token_in_logs(token)
    # httpx logs each request line at INFO, and the request line holds the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop, make_generator=make_generator)

    from model import ModelError

    try:
        asyncio.run(main())
    except InvalidToken:
        # PTB's message repeats the token; say what to do instead.
        log.error("Telegram rejected TELEGRAM_BOT_TOKEN: check the token from @BotFather in .env or the environment")
        return 2
    except ModelError as exc:  # the message names the cause and the fix
        log.error("the model could not be loaded: %s", exc)
        return 1
    except SettingsError as exc:  # a setting only the loaded model can check (its context length)
        log.error("%s", exc)
        return 2
    finally:
        restore_logging()
    return 0


def redact_token_in_logs(token: str) -> Callable[[], None]:
    """Replace the token in every log record (message, arguments and traceback) with "<token>". Returns an undo."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        if token in message:
            record.msg, record.args = message.replace(token, "<token>"), None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if token in text:
                record.exc_text = text.replace(token, "<token>")
        return record

    logging.setLogRecordFactory(factory)
    return lambda: logging.setLogRecordFactory(previous)
