"""What does our Generator cost over a raw `model.generate`, and what does batching buy? CPU, tiny models.

    .venv/bin/python bench/generator_overhead.py [--shape tiny|small|both] [--reps 15] [--new-tokens 64]
                                                 [--threads 1] [--model DIR] [--quick] [--append-docs]

1. Batch 1, same prompt, same number of new tokens (min_new_tokens = max_new_tokens, no stop strings, so both make
   exactly the same count), same sampling settings (temperature 0.7, top_p 0.9, repetition penalty 1.1), and greedy.
   Raw generate, the Generator, and the Generator with no batch window run interleaved in one process (A B C, C B A,
   …) after a warm-up; the table shows median tokens/s and the median of the paired per-round overheads. Both sides
   pay for tokenizing the prompt and decoding the answer. Target: overhead ≤ 5 %.
2. 16 requests at once through batching vs the same 16 one after another (target ≥ 3× throughput), and the
   aggregate tokens/s at 1, 4, 8 and 16 concurrent requests.

The tiny shape (hidden 128, 2 layers) does almost no arithmetic per token, so it measures Python overhead; the
small shape (hidden 512, 4 layers) is where the matrix work starts to count. One intra-op thread by default: the
tiny ops gain nothing from a second thread, and on a shared 2-core box OpenMP hand-offs would dominate the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    KOALPACA_SAMPLING,
    append_docs,
    command_line,
    cpu_line,
    interleaved,
    markdown_table,
    median,
    paired_overhead,
    quiet_benchmark,
    today,
    versions,
)

SECTION = "## Generator overhead (CPU)"
SHAPES = {"tiny": {"hidden": 128, "layers": 2, "heads": 4}, "small": {"hidden": 512, "layers": 4, "heads": 8}}
SAMPLED = KOALPACA_SAMPLING
GREEDY = {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.1}
QUESTIONS = ("비 오는 날 뭐 먹지", "매운 요리 추천해줘", "해장 추천", "야식 추천해줘", "더운 날 시원한 거 먹고 싶어")
CONCURRENCY = (1, 4, 8, 16)


@dataclass
class Bench:
    """One loaded model, its Generators and an event loop to drive them from synchronous timing code."""

    loaded: object
    generator: object
    no_window: object
    loop: asyncio.AbstractEventLoop
    new_tokens: int

    def prompt(self, i: int = 0) -> str:
        from model.prompt import PromptTurn, build_prompt

        earlier = [PromptTurn("매운 요리 추천해줘", "얼큰한 김치찌개 어때요? 돼지고기를 넣고 푹 끓이면 맛있어요.")]
        return build_prompt(earlier, QUESTIONS[i % len(QUESTIONS)]).text

    def raw(self, seed: int, params: dict) -> float:
        """Seconds for the plain transformers way: tokenize, `generate`, decode."""
        from transformers import set_seed

        loaded = self.loaded
        started = time.perf_counter()
        set_seed(seed)
        encoded = loaded.tokenizer(self.prompt(), return_tensors="pt", add_special_tokens=False)
        sampling = {"do_sample": True, "temperature": params["temperature"], "top_p": params["top_p"]} \
            if params["temperature"] > 0 else {"do_sample": False}
        out = loaded.model.generate(
            **encoded, max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens,
            repetition_penalty=params["repetition_penalty"], eos_token_id=loaded.eos_token_id,
            pad_token_id=loaded.pad_token_id, **sampling,
        )
        width = encoded["input_ids"].shape[1]
        loaded.tokenizer.decode(out[0, width:], skip_special_tokens=True)
        seconds = time.perf_counter() - started
        _check_count(out.shape[1] - width, self.new_tokens, "raw generate")
        return seconds

    def request(self, seed: int, params: dict, i: int = 0):
        from model.types import GenerationRequest

        return GenerationRequest(self.prompt(i), seed=seed, max_new_tokens=self.new_tokens,
                                 min_new_tokens=self.new_tokens, stop=(), **params)

    def through(self, generator, seed: int, params: dict) -> float:
        started = time.perf_counter()
        result = self.loop.run_until_complete(generator.generate(self.request(seed, params)))
        seconds = time.perf_counter() - started
        _check_count(result.new_tokens, self.new_tokens, "Generator")
        return seconds

    def burst(self, n: int, *, concurrent: bool, seed: int = 0) -> tuple[float, int, float]:
        """(seconds, new tokens, median time to first token) for n requests, all at once or one after another."""
        requests = [self.request(seed * 1000 + i, SAMPLED, i) for i in range(n)]

        async def run():
            if concurrent:
                return await asyncio.gather(*(self.generator.generate(r) for r in requests))
            return [await self.generator.generate(r) for r in requests]

        started = time.perf_counter()
        results = self.loop.run_until_complete(run())
        seconds = time.perf_counter() - started
        return seconds, sum(r.new_tokens for r in results), median([r.ttft_s for r in results])

    def close(self) -> None:
        for generator in (self.generator, self.no_window):
            self.loop.run_until_complete(generator.close())
        self.loop.close()


def _check_count(got: int, wanted: int, who: str) -> None:
    if got != wanted:
        raise RuntimeError(f"{who} made {got} tokens instead of {wanted}: the comparison would be unfair")


def open_bench(model_dir: Path, new_tokens: int) -> Bench:
    from model.loading import load_model
    from model.serving.generator import Generator

    loaded = load_model(str(model_dir), quantization="none", device="cpu")
    return Bench(loaded, Generator(loaded), Generator(loaded, batch_window_ms=0), asyncio.new_event_loop(),
                 new_tokens)


def overhead_table(bench: Bench, reps: int, warmup: int) -> tuple[str, dict[str, float]]:
    rows, headline = [], {}
    for label, params in (("sampled (T 0.7, top-p 0.9, rep 1.1)", SAMPLED), ("greedy (rep 1.1)", GREEDY)):
        variants = {
            "raw": lambda seed, p=params: bench.raw(seed, p),
            "generator": lambda seed, p=params: bench.through(bench.generator, seed, p),
            "no_window": lambda seed, p=params: bench.through(bench.no_window, seed, p),
        }
        interleaved(variants, warmup)
        seconds = interleaved(variants, reps)
        n = bench.new_tokens
        rate = {name: n / median(s) for name, s in seconds.items()}
        over = paired_overhead(seconds["generator"], seconds["raw"])
        over0 = paired_overhead(seconds["no_window"], seconds["raw"])
        headline[label] = over
        rows.append([label, f"{rate['raw']:.0f}", f"{rate['generator']:.0f}", f"{over:+.1f} %",
                     f"{rate['no_window']:.0f}", f"{over0:+.1f} %"])
    headers = ["decoding", "raw generate tok/s", "Generator tok/s", "overhead", "Generator, window 0 ms, tok/s",
               "overhead"]
    return markdown_table(headers, rows), headline


def batching_table(bench: Bench, reps: int) -> tuple[str, float]:
    bench.burst(4, concurrent=True)  # warm the batched path (padding, row dropping)
    seconds = interleaved({
        "one after another": lambda seed: bench.burst(16, concurrent=False, seed=seed)[0],
        "16 at once": lambda seed: bench.burst(16, concurrent=True, seed=seed)[0],
    }, reps)
    tokens = 16 * bench.new_tokens
    speedup = median(seconds["one after another"]) / median(seconds["16 at once"])
    rows = [[name, f"{median(s):.2f} s", f"{tokens / median(s):.0f}", "1.00×" if i == 0 else f"{speedup:.2f}×"]
            for i, (name, s) in enumerate(seconds.items())]
    table = markdown_table(["16 requests", "wall time (median)", "aggregate tok/s", "throughput"], rows)

    scaling, single = [], None
    for n in CONCURRENCY:
        runs = [bench.burst(n, concurrent=True, seed=rep) for rep in range(reps)]
        rate = median([tokens_ / s for s, tokens_, _ in runs])
        single = single or rate
        ttft = median([t for _, _, t in runs])
        scaling.append([n, f"{rate:.0f}", f"{rate / single:.2f}×", f"{1000 * ttft:.0f} ms"])
    table += "\n\n" + markdown_table(["concurrent requests", "aggregate tok/s", "vs 1", "median time to first token"],
                                     scaling)
    return table, speedup


def run_shape(name: str, model_dir: Path, args: argparse.Namespace) -> tuple[str, dict[str, float]]:
    bench = open_bench(model_dir, args.new_tokens)
    try:
        params = sum(p.numel() for p in bench.loaded.model.parameters()) / 1e6
        prompt_tokens = len(bench.loaded.tokenizer.encode(bench.prompt(), add_special_tokens=False))
        shape = SHAPES.get(name, {})
        title = (f"### {name} shape ({params:.2f} M parameters"
                 + (f", hidden {shape['hidden']}, {shape['layers']} layers" if shape else "")
                 + f"): {prompt_tokens}-token prompt, {args.new_tokens} new tokens")
        print(title, flush=True)
        overhead, headline = overhead_table(bench, args.reps, args.warmup)
        print(overhead + "\n", flush=True)
        batching, speedup = batching_table(bench, args.batch_reps)
        print(batching + "\n", flush=True)
        headline["batching speed-up"] = speedup
        summary = (f"Overhead, sampled: {headline[next(iter(headline))]:+.1f} % (target ≤ 5 %); 16 at once vs one "
                   f"after another: {speedup:.2f}× (target ≥ 3×).")
        print(summary + "\n", flush=True)
        return f"{title}\n\n{overhead}\n\n{batching}\n\n{summary}", headline
    finally:
        bench.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("tiny", "small", "both"), default="both")
    parser.add_argument("--model", help="measure this model folder instead of building tiny shapes")
    parser.add_argument("--reps", type=int, default=15, help="interleaved rounds for the batch-1 comparison")
    parser.add_argument("--batch-reps", type=int, default=3, help="rounds for the concurrency measurements")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: tiny shape, few rounds, few tokens")
    parser.add_argument("--append-docs", action="store_true", help=f"write the tables into docs/benchmarks.md ({SECTION})")
    args = parser.parse_args()
    if args.quick:
        args.shape, args.reps, args.batch_reps, args.warmup, args.new_tokens = "tiny", 3, 1, 1, 12

    import torch

    from model.demo.tiny import build_tiny_model

    quiet_benchmark()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sections = []
    with tempfile.TemporaryDirectory(prefix="mechuri-bench-") as tmp:
        if args.model:
            targets = [(Path(args.model).name, Path(args.model))]
        else:
            shapes = list(SHAPES) if args.shape == "both" else [args.shape]
            targets = [(s, build_tiny_model(Path(tmp) / s, **SHAPES[s])) for s in shapes]
        for name, model_dir in targets:
            section, _ = run_shape(name, model_dir, args)
            sections.append(section)
    header = (f"Command: `{command_line()}`  \nMachine: {cpu_line()}  \nVersions: {versions()}  \nDate: {today()}\n\n"
              "Random-weight models (built on the fly), batch 1 unless stated. tok/s = new tokens ÷ wall time of the "
              "whole call (tokenize, generate, decode). Overhead = median over interleaved rounds of Generator ÷ raw "
              "− 1; negative means the Generator is faster.")
    text = header + "\n\n" + "\n\n".join(sections)
    if args.append_docs:
        print(f"wrote {append_docs(SECTION, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
