"""The real KoAlpaca-Polyglot-ko-5.8B shape through our code, once, on the CPU: not for speed, for every shape,
position and memory path (28 layers, 4,096 wide, 30,080 embedding rows, a prompt near the 2,048 limit).

    .venv/bin/python bench/real_shape_cpu.py [--workdir DIR] [--skip-4bit] [--append-docs]

Builds the exact Polyglot-ko-5.8B configuration with random bf16 weights (about 11.8 GB; reused from --workdir),
the Polyglot-faithful tiny tokenizer (no pad token; its ids fit the 30,080-row embedding), and a random r-8 LoRA on
query_key_value. Then loads it through `model.load_model` and runs our `Generator` on a 300-token and a 1,900-token
prompt, 8 new tokens each: LoRA unmerged, LoRA merged, and 4-bit NF4 (unmerged) unless skipped. Reports load time,
peak RSS, time to first token and ms per new token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    append_docs,
    command_line,
    cpu_line,
    free_memory,
    markdown_table,
    polyglot_config,
    prompt_of_length,
    quiet_benchmark,
    today,
    versions,
)

SECTION = "## The real 5.8B shape on CPU"
PROMPTS = (300, 1900)
NEW_TOKENS = 8


def rss_peak_gib() -> float:
    kb = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    return kb / 2**20


def reset_rss_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from the current RSS


def build(workdir: Path) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPTNeoXForCausalLM

    from model.demo.tiny import korean_corpus, train_tokenizer

    base, adapter, stamp = workdir / "base", workdir / "adapter", workdir / "built.json"
    if stamp.exists():
        return base, adapter
    started = time.perf_counter()
    torch.manual_seed(0)
    tokenizer = train_tokenizer(korean_corpus(), flavour="polyglot")
    model = GPTNeoXForCausalLM._from_config(polyglot_config(), dtype=torch.bfloat16).eval()
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["query_key_value"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(adapter)
    del model, peft_model
    free_memory()
    stamp.write_text(json.dumps({"built_s": time.perf_counter() - started}))
    print(f"built the random 5.8B checkpoint in {time.perf_counter() - started:.0f} s", flush=True)
    return base, adapter


def prompt_near(tokenizer, length: int) -> str:
    """Korean text of exactly `length` tokens where a cut allows it, else the closest: a long text re-encodes with
    merges across the cut, and the table reports the count the generator saw."""
    try:
        return prompt_of_length(tokenizer, length)
    except RuntimeError:
        from model.demo.tiny import korean_corpus

        ids = tokenizer.encode("\n".join(korean_corpus()), add_special_tokens=False)
        text = tokenizer.decode((ids * (1 + length // len(ids)))[:length], skip_special_tokens=True)
        return text.replace("\ufffd", "")


async def measure(generator, tokenizer, label: str, load_s: float, rows: list[list[object]]) -> None:
    from model.types import GenerationRequest

    for length in PROMPTS:
        text = prompt_near(tokenizer, length)
        request = GenerationRequest(text, seed=0, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, stop=())
        result = await generator.generate(request)
        per_token = (result.total_s - result.ttft_s) / max(result.new_tokens - 1, 1)
        rows.append([label, result.prompt_tokens, f"{load_s:.0f} s", f"{rss_peak_gib():.1f} GiB",
                     f"{result.ttft_s:.1f} s", f"{1000 * per_token:,.0f} ms", result.new_tokens])
        print(f"  {label}, prompt {result.prompt_tokens}: TTFT {result.ttft_s:.1f} s, {1000 * per_token:.0f} ms/token,"
              f" peak RSS {rss_peak_gib():.1f} GiB", flush=True)


async def main_async(args: argparse.Namespace) -> list[list[object]]:
    import torch

    from model.loading import load_model
    from model.serving.generator import Generator

    base, adapter = build(args.workdir)
    rows: list[list[object]] = []
    reset_rss_peak()
    started = time.perf_counter()
    loaded = load_model(str(base), adapter=adapter, quantization="none", dtype=torch.bfloat16, device="cpu")
    load_s = time.perf_counter() - started
    assert loaded.pad_token_id == loaded.eos_token_id == 2  # the Polyglot tokenizer: no pad of its own
    for merged in (False, True):
        generator = Generator(loaded, max_batch_size=1, merge_adapter=merged)
        try:
            await measure(generator, loaded.tokenizer, f"bf16, LoRA {'merged' if merged else 'unmerged'}", load_s,
                          rows)
        finally:
            await generator.close()
    del loaded, generator
    free_memory()
    if not args.skip_4bit:
        reset_rss_peak()
        started = time.perf_counter()
        loaded = load_model(str(base), adapter=adapter, quantization="4bit", device="cpu")
        load_s = time.perf_counter() - started
        generator = Generator(loaded, max_batch_size=1)
        try:
            await measure(generator, loaded.tokenizer, "4-bit NF4, LoRA unmerged", load_s, rows)
        finally:
            await generator.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mechuri-real-shape"))
    parser.add_argument("--skip-4bit", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--append-docs", action="store_true")
    args = parser.parse_args()
    quiet_benchmark()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = asyncio.run(main_async(args))
    table = markdown_table(["configuration", "prompt tokens", "load", "peak RSS", "time to first token",
                            "per new token", "new tokens"], rows)
    bf16 = "with" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "without"
    body = (f"`{command_line()}` · {today()} · {cpu_line()}, {bf16} AVX512-BF16 · {versions()}\n\n"
            "Random bf16 weights at the exact Polyglot-ko-5.8B shape, the Polyglot-faithful tokenizer (pad = EOS), "
            "a random r-8 LoRA on query_key_value, through `load_model` and our `Generator` (one slot, "
            f"{NEW_TOKENS} forced new tokens). The point is that every shape and memory path of the real model ran "
            "through our code; CPU speed is not a target. Peak RSS is the process high-water mark since that "
            "configuration's load began.\n\n" + table)
    print(body)
    if args.append_docs:
        append_docs(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
