"""`mechuri dataset feedback`: preference rows (DPO/KTO JSONL) from users' feedback in the history database.

The `dataset` group belongs to dataset_builder (which knows nothing of the bot); this module adds one command to it.
Only argparse here: SQLAlchemy and the export are imported when the command runs, so `mechuri --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD, e.g. 2026-12-01)") from None


def feedback_command(args: argparse.Namespace) -> int:
    if args.min_pairs < 1:
        print(f"error: --min-pairs must be at least 1, got {args.min_pairs}", file=sys.stderr)
        return 2
    if args.eval_out is not None:
        if not 0 < args.eval_fraction < 1:
            print(f"error: --eval-fraction must be between 0 and 1, got {args.eval_fraction}", file=sys.stderr)
            return 2
        if args.eval_out.resolve() == args.out.resolve():
            print("error: --eval-out must be another file than --out", file=sys.stderr)
            return 2
    from mechuri.bot_commands import _settings

    settings = _settings(args)  # --database-url, else MECHURI_DATABASE_URL, as the other bot commands
    if settings is None:
        return 2
    from bot.feedback.export import ExportOptions, FeedbackExportError, export_feedback

    options = ExportOptions(format=args.format, since=args.since, adapter_version=args.adapter_version,
                            min_pairs=args.min_pairs, eval_fraction=args.eval_fraction)
    try:
        report = export_feedback(settings.database_url, args.out, eval_out=args.eval_out, options=options)
    except FeedbackExportError as exc:
        print(f"데이터베이스 오류 (database): {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the output file cannot be written
        print(f"error: cannot write the output: {exc.strerror or exc}: {exc.filename or args.out}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def register(subparsers: Any) -> None:
    dataset = subparsers.choices.get("dataset")
    commands = getattr(dataset, "commands", None)
    if commands is None:  # no `dataset` group (dataset_builder not installed): nothing to add to
        return
    f = commands.add_parser(
        "feedback", help="preference rows (TRL DPO/KTO JSONL) from 👍/👎 and \"다른 거\" in the history database",
        description="Export users' feedback as TRL preference data: DPO (prompt/chosen/rejected) or KTO "
                    "(prompt/completion/label). Turned down: \"다른 거\" or 👎. Chosen: 👍, or the last answer the "
                    "user moved on from. No user ids or names are written. The database is only read.",
    )
    f.add_argument("--database-url", help="SQLAlchemy URL of the history (default: MECHURI_DATABASE_URL, "
                                          "else sqlite+aiosqlite:///mechuri.db)")
    f.add_argument("--out", type=Path, required=True, help="JSONL to write (replaced)")
    f.add_argument("--format", choices=("dpo", "kto"), default="dpo", help="default: %(default)s")
    f.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="only answers created on or after this day (UTC)")
    f.add_argument("--adapter-version", metavar="V", help="only answers written by this adapter version")
    f.add_argument("--min-pairs", type=int, default=1, metavar="N",
                   help="only prompts with at least N DPO pairs (KTO: N labelled answers); default %(default)s")
    f.add_argument("--eval-out", type=Path, help="hold out a share of the prompts in this JSONL")
    f.add_argument("--eval-fraction", type=float, default=0.1,
                   help="share of prompts held out with --eval-out, split by a hash of the prompt "
                        "(default %(default)s)")
    f.set_defaults(func=feedback_command)
