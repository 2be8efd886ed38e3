"""`mechuri chat`, `mechuri bot` and `mechuri db …`. Heavy modules are imported inside the commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

LOCAL_ID = 0  # bot.terminal.chat.LOCAL_USER_ID, repeated so that `mechuri --help` does not import SQLAlchemy


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    """Settings from .env and the environment, with the command-line flags on top; None after printing problems."""
    from bot.settings import SettingsError, load_settings

    overrides = {k: v for k, v in extra.items() if v is not None}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"설정 오류 (settings): {problem}", file=sys.stderr)
        return None
    from bot.redaction import redact_secrets_in_logs

    redact_secrets_in_logs(settings)  # for the rest of the command: no log line shows the DB password or a token
    return settings


DEMO_BANNER = """\
────────────────────────────────────────────────────────────────────
 메추리 데모 — a SMALL DEMO MODEL trained in minutes on our bundled data.
 Its answers show how the product works (history, '다른 거', /reset), not
 how good KoAlpaca-Polyglot-5.8B is. To run the real model (GPU):
   mechuri chat --model beomi/KoAlpaca-Polyglot-5.8B --adapter adapters/NAME
 and the Telegram bot: TELEGRAM_BOT_TOKEN=... mechuri bot   (see README)
 Type a question, '다른 거' for another dish, /reset, /quit.
────────────────────────────────────────────────────────────────────"""


def _prepare_demo(args: argparse.Namespace) -> None:
    """Build (or reuse) the cached demo model and point the chat at it, with its history in the user data folder."""
    from pathlib import Path

    from platformdirs import user_data_dir

    from bot.store.database import mask_url
    from model import QUICK_RECIPE, DemoRecipe, build_demo_model, demo_dir

    recipe = QUICK_RECIPE if args.demo_quick else DemoRecipe()
    path = demo_dir(recipe)
    if not (path / "demo.json").exists():
        print(f"데모 모델을 처음 한 번 만들어요 (building the demo model once, a few minutes on CPU): {path}",
              file=sys.stderr)
    args.model = str(build_demo_model(path, recipe=recipe, progress=True))
    args.quantization = "none"
    args.adapter = None
    if not args.database_url:
        data_dir = Path(user_data_dir("mechuri"))
        data_dir.mkdir(parents=True, exist_ok=True)
        args.database_url = f"sqlite+aiosqlite:///{data_dir / 'demo.db'}"
    # The demo model has a 512-token context and short answers, and samples best a little cooler than KoAlpaca.
    args.max_new_tokens = args.max_new_tokens or 96
    from model.demo.build import DEMO_SAMPLING

    for key, value in DEMO_SAMPLING.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    print(DEMO_BANNER, file=sys.stderr)
    print(f"(history: {mask_url(args.database_url)})", file=sys.stderr)


def chat_command(args: argparse.Namespace) -> int:
    if args.demo or args.demo_quick:
        _prepare_demo(args)
    settings = _settings(
        args, model_base=args.model, quantization=args.quantization, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, repetition_penalty=args.repetition_penalty,
    )
    if settings is None:
        return 2
    from bot.settings import SettingsError
    from bot.terminal import chat
    from model import ModelError

    try:
        return asyncio.run(chat.chat_main(settings, args))
    except ModelError as exc:  # the model or adapter could not load: the message says why and what to do
        print(f"모델 오류 (model): {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:  # a setting that only the loaded model can check (its context length)
        print(f"설정 오류 (settings): {exc}", file=sys.stderr)
        return 2


def bot_command(args: argparse.Namespace) -> int:
    from bot.settings import SettingsError

    settings = _settings(args, webhook_listen=args.listen, webhook_port=args.port)
    if settings is None:
        return 2
    try:
        settings.require_token()
        if args.webhook:
            settings.require_webhook()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"설정 오류 (settings): {problem}", file=sys.stderr)
        return 2
    from bot.telegram.app import run_bot

    return int(run_bot(settings, webhook=args.webhook) or 0)


def db_command(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.store.database import database_problem, mask_url, run_downgrade, run_upgrade

    settings = _settings(args)
    if settings is None:
        return 2
    migrate = run_upgrade if args.db_command == "upgrade" else run_downgrade
    try:
        migrate(settings.database_url, args.revision)
    except (SQLAlchemyError, OSError) as exc:
        print(f"데이터베이스 오류 (database): {database_problem(settings.database_url, exc)}", file=sys.stderr)
        return 1
    print(f"database at {args.revision}: {mask_url(settings.database_url)}")
    return 0


def _database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="SQLAlchemy async URL (default: MECHURI_DATABASE_URL, "
                                               "else sqlite+aiosqlite:///mechuri.db)")


def register(subparsers: Any) -> None:
    chat = subparsers.add_parser(
        "chat", help="talk to 메추리 in the terminal (stdin lines; '다른 거', /reset, /forget, /quit)",
        description="Talk to 메추리 in the terminal. Each stdin line is a message; works with piped input.",
    )
    chat.add_argument("--demo", action="store_true",
                      help="use the small offline demo model (built on first use, cached) and a local history file")
    chat.add_argument("--demo-quick", action="store_true", help=argparse.SUPPRESS)  # a tiny demo, for tests
    chat.add_argument("--model", help="base model: a local folder or a hub id (default: MECHURI_MODEL_BASE)")
    chat.add_argument("--adapter", help="LoRA adapter: a folder, or a name inside MECHURI_ADAPTERS_DIR")
    chat.add_argument("--quantization", choices=["4bit", "8bit", "none", "int8", "int4", "gguf"],
                      help="default: MECHURI_QUANTIZATION (int8/int4: torch on CPU; gguf: llama.cpp on a "
                           "`mechuri convert-gguf` folder)")
    chat.add_argument("--device", help="cpu, cuda, cuda:1, … (default: cuda when available)")
    _database_flag(chat)
    chat.add_argument("--user-id", type=int, default=LOCAL_ID, help="whose history to use (default: %(default)s)")
    chat.add_argument("--chat-id", type=int, default=LOCAL_ID, help=argparse.SUPPRESS)
    sampling = chat.add_argument_group("sampling (defaults from MECHURI_* settings)")
    sampling.add_argument("--seed", type=int, help="draw every sampling seed from this one, so a scripted session "
                                                   "gives the same answers again (default: fresh random seeds)")
    sampling.add_argument("--max-new-tokens", type=int)
    sampling.add_argument("--temperature", type=float, help="0 means greedy")
    sampling.add_argument("--top-p", type=float)
    sampling.add_argument("--top-k", type=int)
    sampling.add_argument("--repetition-penalty", type=float)
    chat.set_defaults(func=chat_command)

    bot = subparsers.add_parser("bot", help="run the Telegram bot (needs TELEGRAM_BOT_TOKEN)",
                                description="Run the Telegram bot; settings come from .env and the environment.")
    _database_flag(bot)
    bot.add_argument("--webhook", action="store_true",
                     help="receive updates by webhook (MECHURI_WEBHOOK_URL, _SECRET, …) instead of polling; "
                          "needed to run several replicas")
    bot.add_argument("--listen", help="webhook: address to listen on (default: MECHURI_WEBHOOK_LISTEN, 127.0.0.1)")
    bot.add_argument("--port", type=int, help="webhook: port to listen on (default: MECHURI_WEBHOOK_PORT, 8080)")
    bot.set_defaults(func=bot_command)

    db = subparsers.add_parser("db", help="migrate the history database (Alembic)")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", help="migrate up (default: to the newest schema)")
    upgrade.add_argument("revision", nargs="?", default="head")
    _database_flag(upgrade)
    upgrade.set_defaults(func=db_command)
    downgrade = db_commands.add_parser("downgrade", help="migrate down to REVISION ('base' drops every table)")
    downgrade.add_argument("revision", metavar="REVISION")
    _database_flag(downgrade)
    downgrade.set_defaults(func=db_command)
