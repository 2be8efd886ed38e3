"""The `mechuri` command. Each command group lives with its package and registers itself here.

Heavy libraries (torch, transformers, telegram) are imported inside the command functions, never at module
import time, so `mechuri --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (module, attribute): each `register(subparsers)` adds its commands and sets `func(args) -> int`.
COMMAND_GROUPS: tuple[str, ...] = (
    "mechuri.model_commands",
    "mechuri.train_commands",
    "mechuri.demo_commands",
    "mechuri.bot_commands",
    "mechuri.web_commands",
    "mechuri.dataset_commands",
    "mechuri.feedback_commands",  # adds `feedback` to dataset_builder's `dataset` group
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mechuri",
        description="메추리 (Mechuri): a Korean menu-recommendation chatbot on KoAlpaca with QLoRA.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("중단했어요 (interrupted).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
