"""`mechuri web`: the Gradio page (bot/web/). Heavy modules are imported inside the command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from mechuri.bot_commands import _prepare_demo, _settings

DEMO_NOTE = "작은 데모 모델이에요: 답은 제품이 어떻게 움직이는지 보여 줄 뿐, KoAlpaca의 실력이 아니에요."


def web_command(args: argparse.Namespace) -> int:
    demo = args.demo or args.demo_quick
    if demo:
        _prepare_demo(args)
    settings = _settings(
        args, model_base=args.model, quantization=args.quantization, max_new_tokens=args.max_new_tokens,
        temperature=getattr(args, "temperature", None), top_p=getattr(args, "top_p", None),
        repetition_penalty=getattr(args, "repetition_penalty", None),
    )
    if settings is None:
        return 2
    from bot.settings import SettingsError
    from bot.web.server import web_main
    from model import ModelError

    try:
        return asyncio.run(web_main(settings, host=args.host, port=args.port, demo=demo, adapter=args.adapter,
                                    device=args.device, banner=DEMO_NOTE if demo else None))
    except ModelError as exc:
        print(f"모델 오류 (model): {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"설정 오류 (settings): {problem}", file=sys.stderr)
        return 2


def register(subparsers: Any) -> None:
    web = subparsers.add_parser(
        "web", help="serve 메추리 as a web page (Gradio) on the same service as the bot",
        description="Serve the 메추리 web page. It listens on 127.0.0.1; another --host needs MECHURI_WEB_AUTH "
                    "(user:password,...); logins named in MECHURI_WEB_ADMINS see the admin area.",
    )
    web.add_argument("--demo", action="store_true",
                     help="use the small offline demo model (built on first use, cached) and a local history file")
    web.add_argument("--demo-quick", action="store_true", help=argparse.SUPPRESS)  # a tiny demo, for tests
    web.add_argument("--model", help="base model: a local folder or a hub id (default: MECHURI_MODEL_BASE)")
    web.add_argument("--adapter", help="LoRA adapter: a folder, or a name inside MECHURI_ADAPTERS_DIR")
    web.add_argument("--quantization", choices=["4bit", "8bit", "none"], help="default: MECHURI_QUANTIZATION")
    web.add_argument("--device", help="cpu, cuda, cuda:1, … (default: cuda when available)")
    web.add_argument("--database-url", help="SQLAlchemy async URL (default: MECHURI_DATABASE_URL)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; any other "
                                                          "needs MECHURI_WEB_AUTH)")
    web.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    web.add_argument("--max-new-tokens", type=int, help=argparse.SUPPRESS)
    web.set_defaults(func=web_command)
