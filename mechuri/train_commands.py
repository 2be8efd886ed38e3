"""`mechuri train` and `mechuri eval`. Heavy imports happen inside the commands, so `mechuri --help` stays fast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mechuri.model_commands import DEFAULT_BASE


def register(subparsers: argparse._SubParsersAction) -> None:
    add_train(subparsers)
    add_eval(subparsers)


def add_train(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="fine-tune a KoAlpaca base with (Q)LoRA: SFT on Alpaca JSONL, or DPO/KTO on user feedback",
        description="--method sft (default): supervised fine-tuning with LoRA on Alpaca rows (instruction, input, "
                    "output); the loss covers the answer and its EOS only. --method dpo|kto: preference training "
                    "(TRL) on `mechuri dataset feedback` exports, usually starting from the served adapter "
                    "(--init-adapter), which then is also the frozen reference. Writes the adapter, loss.png, "
                    "metrics.json and a model card.")
    train.add_argument("--method", choices=("sft", "dpo", "kto"), default="sft",
                       help="sft: Alpaca rows; dpo: {prompt, chosen, rejected} pairs; kto: {prompt, completion, "
                            "label} rows (DPO pairs are also read, as one kept and one turned-down row)")
    train.add_argument("--data", required=True, help="training data: Alpaca JSONL (sft) or preference JSONL (dpo/kto)")
    train.add_argument("--init-adapter", default=None, metavar="PATH",
                       help="dpo/kto: the adapter to start from and to use, frozen, as the reference (usually the "
                            "served SFT adapter; its own LoRA shape is kept, --lora-* apply only without it); omitted: a "
                            "fresh LoRA on the base, with the base as reference")
    train.add_argument("--beta", type=float, default=0.1,
                       help="dpo/kto: how far from the reference the policy may move (TRL's beta, default 0.1)")
    train.add_argument("--sft-weight", type=float, default=0.0,
                       help="dpo: add the chosen answers' SFT loss with this weight (RPO; TRL loss_type sigmoid+sft), "
                            "which keeps the policy close to answers users kept; default 0 = plain DPO")
    train.add_argument("--base", default=DEFAULT_BASE, help=f"base model: hub id or local folder (default {DEFAULT_BASE})")
    train.add_argument("--out", required=True, type=Path, help="adapter folder to write, e.g. adapters/NAME")
    train.add_argument("--eval-data", default=None,
                       help="held-out rows in the --data format: eval loss (and reward accuracy) during and after")
    add_schedule_options(train)
    add_model_options(train)
    add_run_options(train)
    train.set_defaults(func=cmd_train)


def add_schedule_options(train: argparse.ArgumentParser) -> None:
    """How long, how fast and how often: steps, batches, learning rate, logging, evaluation, checkpoints."""
    length = train.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=None, help="optimizer steps to train")
    length.add_argument("--epochs", type=float, default=None, help="passes over the data (default 3)")
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-4 for sft, 5e-5 for dpo/kto)")
    train.add_argument("--lr-scheduler", default="linear", help="linear, cosine, constant, … (transformers names)")
    train.add_argument("--warmup-steps", type=int, default=0)
    train.add_argument("--logging-steps", type=int, default=10)
    train.add_argument("--eval-steps", type=int, default=None, help="default: 5 × --logging-steps")
    train.add_argument("--save-steps", type=int, default=200, help="checkpoint interval (one is also saved at the end)")


def add_model_options(train: argparse.ArgumentParser) -> None:
    """What is trained, and how it sits in memory: LoRA, quantization, checkpointing, lengths, optimizer."""
    train.add_argument("--lora-targets", choices=("qkv", "all-linear"), default="qkv",
                       help="qkv: r 8, alpha 32, dropout 0.05 on query_key_value (the common KoAlpaca recipe); "
                            "all-linear: r 64, alpha 16, dropout 0.1 on every linear layer (the QLoRA paper)")
    train.add_argument("--lora-r", type=int, default=None, help="override the preset's rank")
    train.add_argument("--lora-alpha", type=int, default=None, help="override the preset's alpha")
    train.add_argument("--lora-dropout", type=float, default=None, help="override the preset's dropout")
    train.add_argument("--target-modules", default=None, help="comma-separated module names, overrides the preset")
    train.add_argument("--quantization", choices=("4bit", "8bit", "none"), default="4bit",
                       help="4bit = QLoRA (NF4, double quantization, bf16 compute); default 4bit")
    train.add_argument("--gradient-checkpointing", action="store_true",
                       help="trade ~30%% speed for much less activation memory")
    train.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                       help="shuffle freely instead of batching rows of similar length (more padding)")
    train.add_argument("--max-length", type=int, default=1024, help="rows longer than this (in tokens) are dropped")
    train.add_argument("--optim", default=None, help="default: paged_adamw_8bit on CUDA, adamw_torch on CPU")


def add_run_options(train: argparse.ArgumentParser) -> None:
    """Seed, resume or overwrite, device, progress bar."""
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                       help="continue from a checkpoint folder, or the latest one in OUT/checkpoints")
    train.add_argument("--overwrite", action="store_true", help="replace an adapter already in --out")
    train.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when present)")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "eval", help="eval loss, perplexity and generation checks on held-out rows",
        description="Evaluate an adapter on held-out Alpaca rows: answer-only loss and perplexity, then generation "
                    "checks through the serving path with a fixed seed per question.")
    ev.add_argument("--base", default=DEFAULT_BASE, help="base model: hub id or local folder")
    ev.add_argument("--adapter", default=None, help="the adapter to evaluate (default: the bare base)")
    ev.add_argument("--data", required=True, help="held-out Alpaca JSONL")
    compare = ev.add_mutually_exclusive_group()
    compare.add_argument("--compare-adapter", default=None, metavar="B", help="a second adapter, side by side")
    compare.add_argument("--compare-base", action="store_true", help="the bare base, side by side")
    compare.add_argument("--compare-model", default=None, metavar="BASE_B",
                         help="a second base model (e.g. an older demo model), side by side")
    ev.add_argument("--retry", action="store_true",
                    help="also a '다른 거' answer per question (the first answer's dishes turned down), counted apart")
    ev.add_argument("--corpus", nargs="+", default=None, metavar="FILE",
                    help="training files (JSONL or text) for the 'only training words' column (default: the "
                         "model's own training_words.txt, which the demo model has)")
    ev.add_argument("--prefs", default=None, metavar="HELD_OUT.jsonl",
                    help="held-out preference pairs (DPO format; KTO rows that share a prompt are paired): how often "
                         "each model prefers the kept answer, by its own log-probs and by the DPO implicit reward "
                         "(vs the base, and vs the compare side B)")
    ev.add_argument("--beta", type=float, default=0.1, help="β of the DPO implicit reward for --prefs")
    ev.add_argument("--limit", type=int, default=None, help="only the first N rows")
    ev.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write all numbers and answers here")
    ev.add_argument("--quantization", choices=("4bit", "8bit", "none"), default="none")
    ev.add_argument("--device", default=None)
    ev.add_argument("--seed", type=int, default=0, help="question i is sampled with seed SEED + i")
    ev.add_argument("--max-new-tokens", type=int, default=128)
    ev.add_argument("--temperature", type=float, default=0.7, help="0 means greedy")
    ev.add_argument("--top-p", type=float, default=0.9)
    ev.add_argument("--repetition-penalty", type=float, default=1.1)
    ev.add_argument("--batch-size", type=int, default=8, help="batch size for the loss")
    ev.add_argument("--max-length", type=int, default=1024)
    ev.set_defaults(func=cmd_eval)


def cmd_train(args: argparse.Namespace) -> int:
    from model.types import ModelError

    if args.method == "sft":
        from model.training.config import TrainConfig
        from model.training.sft import train

        if args.init_adapter:
            print("error: --init-adapter is for --method dpo or kto: SFT starts a fresh LoRA on --base",
                  file=sys.stderr)
            return 2
        make, run, extra = TrainConfig, train, {"lr": 1e-4 if args.lr is None else args.lr}
    else:
        from model.training.config import DEFAULT_PREF_LR, PrefTrainConfig
        from model.training.preference import train_preferences

        make, run = PrefTrainConfig, train_preferences
        extra = {"lr": DEFAULT_PREF_LR if args.lr is None else args.lr, "method": args.method,
                 "init_adapter": args.init_adapter, "beta": args.beta, "sft_weight": args.sft_weight}
    config = make(
        data=args.data, base=args.base, out=str(args.out), eval_data=args.eval_data, batch_size=args.batch_size,
        grad_accum=args.grad_accum, max_steps=args.max_steps, epochs=args.epochs,
        logging_steps=args.logging_steps, eval_steps=args.eval_steps, save_steps=args.save_steps,
        lora_targets=args.lora_targets, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=[m.strip() for m in args.target_modules.split(",") if m.strip()] if args.target_modules else None,
        quantization=args.quantization, gradient_checkpointing=args.gradient_checkpointing,
        group_by_length=args.group_by_length, seed=args.seed, resume=args.resume, max_length=args.max_length,
        optim=args.optim, lr_scheduler=args.lr_scheduler, warmup_steps=args.warmup_steps, device=args.device,
        progress=args.progress, overwrite=args.overwrite, **extra,
    )
    try:
        run(config)
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from model.eval.evaluate import EvalConfig, format_table, run_eval
    from model.types import ModelError

    config = EvalConfig(
        base=args.base, data=args.data, adapter=args.adapter, compare_adapter=args.compare_adapter,
        compare_base=args.compare_base, limit=args.limit, quantization=args.quantization, device=args.device,
        seed=args.seed, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, batch_size=args.batch_size, max_length=args.max_length,
        json_out=args.json_out, compare_model=args.compare_model, retry=args.retry, corpus=args.corpus,
        prefs=args.prefs, beta=args.beta,
    )
    try:
        reports, data = run_eval(config)
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(data.summary())
    for line in data.details():
        print(line)
    if reports and reports[0].prefs is not None:
        print(f"--prefs {reports[0].prefs.source}")
    print(format_table(reports))
    if config.json_out:
        print(f"wrote {config.json_out}")
    return 0
