"""Continuous vs static batching under Poisson arrivals, side by side in one run. CPU, a tiny model.

    .venv/bin/python bench/continuous_batching.py [--requests 64] [--load 0.8] [--reps 3] [--threads 1]
                                                  [--max-batch 16] [--quick] [--append-docs]

1. Capacity: the generator's saturated throughput (max-batch requests at once, the same answer-length mix), in
   requests per second.
2. A fixed Poisson arrival schedule at `--load` × that capacity, 64 requests, answer lengths drawn from 16–256
   tokens (forced: min_new_tokens = max_new_tokens, no stop text, so both policies make exactly the same tokens).
3. The same schedule through `Generator(admission="static")` (a batch runs to its end before the next starts: the
   generator before continuous batching) and `Generator(admission="continuous")`, alternating, `--reps` times.

Reported: p50/p95 time to first token (from the request's arrival) and aggregate tokens/s (all new tokens / time
from the first arrival to the last answer). Targets: p95 TTFT ≥ 5× lower with continuous batching, throughput not
lower.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_docs, command_line, cpu_line, markdown_table, median, quiet_benchmark, today, versions

SECTION = "## Continuous batching (CPU)"
QUESTIONS = ("비 오는 날 뭐 먹지", "매운 요리 추천해줘", "해장 추천", "야식 추천해줘", "더운 날 시원한 거 먹고 싶어")
POLICIES = ("static", "continuous")


def requests(count: int, seed: int, shortest: int, longest: int) -> list:
    from model import GenerationRequest, build_prompt

    draw = random.Random(seed)
    out = []
    for i in range(count):
        length = draw.randint(shortest, longest)
        out.append(GenerationRequest(build_prompt([], QUESTIONS[i % len(QUESTIONS)]).text, seed=i,
                                     max_new_tokens=length, min_new_tokens=length, stop=()))
    return out


async def saturated_rate(generator, batch: list) -> float:
    """Requests per second with everything submitted at once (the generator always full)."""
    started = time.perf_counter()
    await asyncio.gather(*(generator.generate(r) for r in batch))
    return len(batch) / (time.perf_counter() - started)


async def poisson_run(generator, reqs: list, gaps: list[float]) -> dict[str, float]:
    async def one(request, delay: float):
        await asyncio.sleep(delay)
        arrived = time.perf_counter()
        result = await generator.generate(request)
        return arrived, result, time.perf_counter()

    started = time.perf_counter()
    arrivals = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    done = await asyncio.gather(*(one(r, at) for r, at in zip(reqs, arrivals, strict=True)))
    first = min(a for a, _, _ in done)
    last = max(end for _, _, end in done)
    ttft = sorted(r.ttft_s for _, r, _ in done)
    tokens = sum(r.new_tokens for _, r, _ in done)
    return {"p50": statistics.median(ttft), "p95": ttft[max(0, round(0.95 * len(ttft)) - 1)],
            "tps": tokens / (last - first), "wall": time.perf_counter() - started}


async def main_async(args: argparse.Namespace) -> str:
    from model import Generator, load_model
    from model.demo.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        base = args.model or build_tiny_model(Path(tmp) / "tiny", train_steps=60)
        loaded = load_model(str(base))
        shortest, longest = (8, 64) if args.quick else (16, 256)
        reqs = requests(args.requests, 0, shortest, longest)
        generators = {p: Generator(loaded, max_batch_size=args.max_batch, max_queue=args.requests + 8, admission=p)
                      for p in POLICIES}
        try:
            await generators["continuous"].generate(reqs[0])  # warm-up
            await generators["static"].generate(reqs[0])
            capacity = await saturated_rate(generators["continuous"], reqs[: args.max_batch * 2])
            rate = args.load * capacity
            draw = random.Random(1)
            gaps = [draw.expovariate(rate) for _ in reqs]
            runs: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}
            tokens = sum(r.max_new_tokens for r in reqs)
            for rep in range(args.reps):
                for policy in (POLICIES if rep % 2 == 0 else POLICIES[::-1]):
                    run = await poisson_run(generators[policy], reqs, gaps)
                    # Capacity: the same requests all at once, so the generator is never waiting for arrivals.
                    run["saturated"] = tokens * await saturated_rate(generators[policy], reqs) / len(reqs)
                    runs[policy].append(run)
                    print(f"  rep {rep + 1} {policy}: p50 {run['p50'] * 1000:.0f} ms, p95 {run['p95'] * 1000:.0f} ms,"
                          f" {run['tps']:.0f} tok/s; all at once {run['saturated']:.0f} tok/s", flush=True)
        finally:
            for generator in generators.values():
                await generator.close()

    def med(policy: str, key: str) -> float:
        return median([r[key] for r in runs[policy]])

    rows = [[policy, f"{1000 * med(policy, 'p50'):,.0f} ms", f"{1000 * med(policy, 'p95'):,.0f} ms",
             f"{med(policy, 'tps'):,.0f}", f"{med(policy, 'saturated'):,.0f}"] for policy in POLICIES]
    p95_ratio = med("static", "p95") / med("continuous", "p95")
    tps_ratio = med("continuous", "tps") / med("static", "tps")
    saturated_ratio = med("continuous", "saturated") / med("static", "saturated")
    rows.append(["continuous vs static", f"{med('static', 'p50') / med('continuous', 'p50'):.1f}× lower",
                 f"**{p95_ratio:.1f}× lower** (target ≥ 5×)", f"**{tps_ratio:.2f}×** (target ≥ 1×)",
                 f"**{saturated_ratio:.2f}×**"])
    table = markdown_table(["admission", "p50 time to first token", "p95 time to first token",
                            "aggregate tok/s (Poisson)", "tok/s, all at once"], rows)
    return (f"`{command_line()}` · {today()} · {cpu_line()} · {versions()}\n\n"
            f"{args.requests} requests, Poisson arrivals at {args.load:.0%} of the generator's saturated capacity "
            f"({capacity:.1f} requests/s = {rate:.1f} arriving per second), answers of {shortest}–{longest} forced "
            f"tokens, max batch {args.max_batch}; medians of {args.reps} runs per policy, alternating. Time to first "
            "token counts from the request's arrival. Aggregate tok/s: every new token over the time from the first "
            "arrival to the last answer; at 80 % load both policies mostly keep up with the arrivals, so it moves "
            "with the last answers' timing. \"All at once\": the same 64 requests submitted together, the capacity."
            "\n\n" + table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path, help="a model folder (default: build a tiny one)")
    parser.add_argument("--quick", action="store_true", help="short answers and one rep: a smoke run")
    parser.add_argument("--append-docs", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.requests = 1, min(args.requests, 24)
    quiet_benchmark()
    import torch

    torch.set_num_threads(args.threads)
    body = asyncio.run(main_async(args))
    print(body)
    if args.append_docs:
        append_docs(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
