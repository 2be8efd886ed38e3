"""`mechuri dataset ...`: generate / filter / stats / export.

Only argparse is imported here; each command imports its module (and openai, kiwipiepy, datasets) when it runs, so
`mechuri --help` stays fast. Also runnable alone: `python -m mechuri.dataset_commands generate ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from dataset_builder.generate import GenerateConfig, GenerateError, generate

    # Options left out are absent from `args` (argparse.SUPPRESS), so GenerateConfig's defaults are the only ones.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(GenerateConfig) if hasattr(args, f.name)}
    cfg = GenerateConfig(**given, progress=not args.no_progress, filter=_filter_config(args))
    try:
        report = asyncio.run(generate(cfg))
    except GenerateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0 if report.rows_total >= cfg.num else 3


def _filter_config(args: argparse.Namespace):
    from dataset_builder.filter import FilterConfig
    from dataset_builder.slots import DEFAULT_CATALOG

    return FilterConfig(mode=args.mode, threshold=args.threshold, catalog=args.catalog or DEFAULT_CATALOG)


def _missing(paths: list[Path]) -> int:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _filter(args: argparse.Namespace) -> int:
    from dataset_builder.filter import run

    return _missing([args.input, *args.reference]) or run(args)


def _stats(args: argparse.Namespace) -> int:
    from dataset_builder.similarity import make_tokenizer
    from dataset_builder.stats import render

    if _missing([args.file]):
        return 1
    print(render(args.file, make_tokenizer(args.tokenizer), args.catalog, args.top_pairs))
    return 0


def _export(args: argparse.Namespace) -> int:
    from dataset_builder.export import export_alpaca

    if _missing(args.inputs):
        return 1
    if args.eval_out and not 0 < args.eval_fraction < 1:
        print(f"error: --eval-fraction must be between 0 and 1, got {args.eval_fraction}", file=sys.stderr)
        return 2
    report = export_alpaca(
        args.inputs, args.out, eval_out=args.eval_out, eval_fraction=args.eval_fraction, seed=args.seed
    )
    for bad in report.bad_lines:
        print(f"bad line {bad}", file=sys.stderr)
    print(f"{report.train_rows} rows -> {args.out}", end="")
    print(f", {report.eval_rows} rows -> {args.eval_out}" if args.eval_out else "", end="")
    print(f" ({report.duplicates} duplicate questions written once, {len(report.bad_lines)} bad lines skipped)")
    if args.push_to_hub:
        from dataset_builder.hub import push_to_hub  # `datasets` takes ~1 s to import: only when pushing

        push_to_hub(args.push_to_hub, args.out, args.eval_out, private=args.private)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


def _add_similarity_args(p: argparse.ArgumentParser) -> None:
    modes = p.add_mutually_exclusive_group()
    modes.add_argument(
        "--mode",
        choices=("slots", "kiwi", "char"),
        default="slots",
        help="near-duplicate decision: slots (default: same question type and slots, then ROUGE-L on the rest), "
        "kiwi (ROUGE-L on kiwipiepy content morphemes) or char (ROUGE-L on characters)",
    )
    modes.add_argument(
        "--tokenizer",
        choices=("kiwi", "char"),
        dest="mode",
        help="plain ROUGE-L on kiwi morphemes or characters; the same as --mode kiwi / --mode char",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="drop a row if ROUGE-L F1 > this (default 0.7): in slots mode on what is left once the slots match, "
        "in kiwi/char mode on the whole question",
    )
    p.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="dish catalog CSV for slots mode (default: data/dishes.csv of this checkout)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    dataset = subparsers.add_parser("dataset", help="build the training dataset (Self-Instruct, filter, stats)")
    commands = dataset.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    dataset.commands = commands  # public: another package may add a `mechuri dataset` command (feedback_commands.py)
    dataset.set_defaults(func=lambda args: dataset.print_help() or 2)
    _add_generate(commands)
    _add_filter(commands)
    _add_stats(commands)
    _add_export(commands)


def _add_generate(commands: argparse._SubParsersAction) -> None:
    g = commands.add_parser("generate", help="generate Alpaca rows from seed tasks with an OpenAI-compatible API",
                            argument_default=argparse.SUPPRESS)
    g.add_argument("--out", dest="output", metavar="OUT", type=Path, required=True,
                   help="Alpaca JSONL to append to (resumes if it exists)")
    g.add_argument("--num", type=int, required=True, help="stop when the output holds this many rows")
    g.add_argument("--seed-tasks", dest="seed_file", metavar="SEED_TASKS", type=Path)
    g.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL") or argparse.SUPPRESS,
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default $OPENAI_BASE_URL or OpenAI)",
    )
    g.add_argument("--model")
    g.add_argument("--concurrency", type=int, help="requests in flight at once")
    g.add_argument("--tasks-per-request", type=int, help="new rows asked for per request")
    g.add_argument("--seed-examples", dest="num_seed_examples", metavar="SEED_EXAMPLES", type=int,
                   help="k seed tasks shown per prompt")
    g.add_argument("--machine-examples", dest="num_machine_examples", metavar="MACHINE_EXAMPLES", type=int,
                   help="m generated rows shown per prompt")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--max-tokens", type=int, help="completion token limit per request")
    g.add_argument("--timeout", dest="request_timeout", metavar="TIMEOUT", type=float, help="seconds per request")
    g.add_argument("--max-retries", type=int,
                   help="retries on timeouts, connection errors, 429 and 5xx (the openai client's, which honours "
                   "Retry-After)")
    g.add_argument("--retry-base-delay", type=float, help="first backoff in seconds, doubled each retry")
    g.add_argument("--retry-max-delay", type=float, help="cap on one backoff, Retry-After included")
    g.add_argument("--max-requests", type=int, help="request budget for this run (default: as many as needed)")
    g.add_argument("--price-in", type=float, help="USD per 1M prompt tokens (overrides the built-in table)")
    g.add_argument("--price-out", type=float, help="USD per 1M completion tokens")
    g.add_argument("--random-seed", type=int, help="seed for example sampling")
    g.add_argument("--no-progress", action="store_true", default=False, help="no progress bar")
    _add_similarity_args(g)
    g.set_defaults(func=_generate)


def _add_filter(commands: argparse._SubParsersAction) -> None:
    f = commands.add_parser("filter", help="drop short, off-topic, non-Korean and near-duplicate rows")
    f.add_argument("--in", dest="input", required=True, type=Path, help="Alpaca (or seed-task) JSONL")
    f.add_argument("--out", required=True, type=Path, help="kept rows, Alpaca JSONL")
    f.add_argument(
        "--dropped", type=Path, help="dropped rows, each with reason, score, nearest kept row and slots compared"
    )
    f.add_argument(
        "--reference",
        type=Path,
        action="append",
        default=[],
        help="rows to compare against but not write, e.g. the seed tasks (repeatable)",
    )
    f.add_argument(
        "--explain",
        action="store_true",
        help="print each near-duplicate drop: both questions, the score, and the slots compared",
    )
    _add_similarity_args(f)
    f.set_defaults(func=_filter)


def _add_stats(commands: argparse._SubParsersAction) -> None:
    s = commands.add_parser("stats", help="counts, lengths, similar pairs, situation and dish coverage")
    s.add_argument("file", type=Path)
    s.add_argument("--catalog", type=Path, default=Path("data/dishes.csv"), help="dish catalog CSV, if present")
    s.add_argument("--tokenizer", choices=("kiwi", "char"), default="kiwi")
    s.add_argument("--top-pairs", type=int, default=10)
    s.set_defaults(func=_stats)


def _add_export(commands: argparse._SubParsersAction) -> None:
    e = commands.add_parser("export", help="merge and write Alpaca JSONL for training (optionally push to the Hub)")
    e.add_argument("--in", dest="inputs", type=Path, action="append", required=True, help="input JSONL (repeatable)")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--eval-out", type=Path, help="also hold out a random eval split here")
    e.add_argument("--eval-fraction", type=float, default=0.05)
    e.add_argument("--seed", type=int, default=0, help="seed for the eval split")
    e.add_argument("--push-to-hub", metavar="REPO", help="upload as a Hub dataset repo, e.g. me/mechuri-menu")
    e.add_argument("--private", action="store_true", help="with --push-to-hub: make the repo private")
    e.set_defaults(func=_export)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechuri.dataset_commands")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dataset", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
