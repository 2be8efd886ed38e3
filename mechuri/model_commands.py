"""`mechuri generate` and `mechuri tiny`: try a model from the command line. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path

DEFAULT_BASE = "beomi/KoAlpaca-Polyglot-5.8B"


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """The sampling flags shared by every command that generates."""
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random, printed)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 means greedy")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=0, help="0 means off")
    parser.add_argument("--repetition-penalty", type=float, default=1.1)


def add_model_flags(parser: argparse.ArgumentParser, *, model_required: bool = False) -> None:
    parser.add_argument("--model", required=model_required, default=None if model_required else DEFAULT_BASE,
                        help=f"base model: a local save_pretrained folder or a hub id (default {DEFAULT_BASE})")
    parser.add_argument("--adapter", default=None, help="a PEFT LoRA adapter folder")
    parser.add_argument("--quantization", choices=("4bit", "8bit", "none", "int8", "int4", "gguf"), default="none",
                        help="4bit = NF4 with double quantisation (QLoRA); int8/int4 = weight-only on torch's CPU "
                             "kernels; gguf = llama.cpp on a `mechuri convert-gguf` folder (the CPU path); default none")
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when present)")


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser("generate", help="one-shot generation from the command line",
                                description="Generate one answer to a question with a KoAlpaca-style model.")
    gen.add_argument("prompt", help='the question, e.g. "매운 요리 추천해줘"')
    add_model_flags(gen)
    add_sampling_flags(gen)
    gen.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    gen.add_argument("--raw", action="store_true", help="send the prompt as-is, without the KoAlpaca template")
    gen.set_defaults(func=cmd_generate)

    tiny = subparsers.add_parser("tiny", help="write tiny GPT-NeoX models and adapters for tests and trials")
    tiny_sub = tiny.add_subparsers(dest="tiny_command", metavar="COMMAND", required=True)
    build = tiny_sub.add_parser("build", help="write a tiny Polyglot-shaped model + Korean tokenizer to a folder")
    build.add_argument("out", type=Path)
    build.add_argument("--train-steps", type=int, default=60,
                       help="fit a few food answers so the output is readable (0 = random weights)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--flavour", choices=("tiny", "polyglot"), default="tiny",
                       help="polyglot: like the real tokenizer, no pad token, extra special tokens, and embedding "
                            "rows past the vocabulary")
    build.set_defaults(func=cmd_tiny_build)
    adapter = tiny_sub.add_parser("adapter", help="write a random LoRA adapter for a tiny model")
    adapter.add_argument("base", type=Path)
    adapter.add_argument("out", type=Path)
    adapter.add_argument("--seed", type=int, default=0)
    adapter.set_defaults(func=cmd_tiny_adapter)

    quant = subparsers.add_parser(
        "quantize", help="prepare a base model for the CPU path (int8/int4 weights, read as is at start-up)",
        description="Quantise a base model's Linear weights for torch's CPU kernels and write a folder that "
                    "MECHURI_MODEL_BASE can point at (with MECHURI_QUANTIZATION set to the same kind). Adapters stay "
                    "separate: train and /reload them as before.")
    quant.add_argument("model", help="the base model: a save_pretrained folder or a hub id")
    quant.add_argument("out", type=Path, help="the folder to write")
    quant.add_argument("--kind", choices=("int4", "int8"), default="int4", help="default int4 (fastest, smallest)")
    quant.add_argument("--group-size", type=int, choices=(32, 64, 128, 256), default=128,
                       help="int4: inputs per scale (default 128)")
    quant.set_defaults(func=cmd_quantize)

    conv = subparsers.add_parser(
        "convert-gguf", help="convert a base model (and adapters) for the llama.cpp CPU path",
        description="Write a GPT-NeoX checkpoint (KoAlpaca-Polyglot) as GGUF weights with its tokenizer, in a folder "
                    "that MECHURI_MODEL_BASE can point at with MECHURI_QUANTIZATION=gguf. Adapters stay PEFT folders: "
                    "each is converted to a GGUF LoRA when loaded or /reload-ed (cached in OUT/lora); --adapter does "
                    "it now, to check it.")
    conv.add_argument("model", type=Path, help="the base model: a save_pretrained folder (download hub models first)")
    conv.add_argument("out", type=Path, help="the folder to write")
    conv.add_argument("--kind", choices=("q4_0", "q8_0", "f16", "f32"), default="q4_0",
                      help="weight format (default q4_0: 3.6 GB for 5.8B, the fastest on CPU; q8_0 rounds less)")
    conv.add_argument("--adapter", type=Path, action="append", default=[], help="a PEFT LoRA folder (repeatable)")
    conv.set_defaults(func=cmd_convert_gguf)


def cmd_convert_gguf(args: argparse.Namespace) -> int:
    import time

    from model.gguf_convert import cached_lora, convert_base, read_marker
    from model.types import ModelError

    started = time.perf_counter()
    try:
        convert_base(args.model, args.out, args.kind)
        marker = read_marker(args.out)
        loras = [cached_lora(a.expanduser().resolve(), args.out, marker) for a in args.adapter]
    except (ModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = (args.out / marker["gguf"]).stat().st_size / 2**30
    for lora in loras:
        print(f"adapter: {lora}")
    print(f"{args.out}: {args.kind}, {size:.2f} GiB, in {time.perf_counter() - started:.0f} s. Serve it with "
          f"MECHURI_MODEL_BASE={args.out} MECHURI_QUANTIZATION=gguf")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    import time

    import torch

    from model.loading import load_base, load_tokenizer
    from model.quantized import quantize_model, save_quantized
    from model.types import ModelError

    started = time.perf_counter()
    try:
        if (args.out / "config.json").exists():
            raise ModelError(f"{args.out} already holds a model: choose a new folder")
        tokenizer = load_tokenizer(args.model)
        model = load_base(args.model, quantization="none", device="cpu", dtype=torch.bfloat16)
        replaced = quantize_model(model, args.kind, args.group_size)
        save_quantized(model, tokenizer, args.out, args.kind, args.group_size)
    except (ModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in args.out.iterdir()) / 2**30
    print(f"{args.out}: {replaced} layers as {args.kind}, {size:.2f} GiB, in {time.perf_counter() - started:.0f} s. "
          f"Serve it with MECHURI_MODEL_BASE={args.out} MECHURI_QUANTIZATION={args.kind}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from model.types import ModelError

    try:
        return asyncio.run(_generate(args))
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _generate(args: argparse.Namespace) -> int:
    from model import GenerationRequest, Generator, LlamaCppGenerator, build_prompt, load_model

    if args.quantization == "gguf":
        generator = LlamaCppGenerator(args.model, adapter=args.adapter, slots=1)
        where = f"cpu/gguf {generator.marker['kind']}"
    else:
        loaded = load_model(args.model, adapter=args.adapter, quantization=args.quantization, device=args.device)
        generator = Generator(loaded)
        where = f"{loaded.device}/{loaded.quantization}"
    try:
        seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
        budget = generator.max_context - args.max_new_tokens
        built = None if args.raw else build_prompt([], args.prompt, tokenizer=generator.tokenizer, budget=budget)
        request = GenerationRequest(
            prompt=args.prompt if built is None else built.text, seed=seed, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            repetition_penalty=args.repetition_penalty,
        )
        if args.stream:
            stream = generator.stream(request)
            async for delta in stream:
                print(delta, end="", flush=True)
            print()
            result = stream.result
        else:
            result = await generator.generate(request)
            print(result.text)
        assert result is not None
        if built is not None and built.question_truncated:
            print("note: the question was too long and was cut to fit the context", file=sys.stderr)
        adapter = f"{result.adapter.name}@{result.adapter.version}" if result.adapter.name else "none"
        print(
            f"[seed {result.seed} · prompt {result.prompt_tokens} tok · {result.new_tokens} new tok "
            f"({result.finish_reason}) · first token {result.ttft_s * 1000:.0f} ms · total {result.total_s:.2f} s · "
            f"{result.tokens_per_s:.1f} tok/s · adapter {adapter} · {where}]",
            file=sys.stderr,
        )
    finally:
        await generator.close()
    return 0


def cmd_tiny_build(args: argparse.Namespace) -> int:
    from model.demo.tiny import build_tiny_model

    out = build_tiny_model(args.out, train_steps=args.train_steps, seed=args.seed, flavour=args.flavour)
    print(f"tiny model written to {out}")
    return 0


def cmd_tiny_adapter(args: argparse.Namespace) -> int:
    from model.demo.tiny import make_tiny_adapter

    out = make_tiny_adapter(args.base, args.out, seed=args.seed)
    print(f"tiny adapter written to {out}")
    return 0
