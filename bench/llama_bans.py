"""What "다른 거" costs on the llama.cpp path, where phrases cannot be banned while sampling: the demo model on both
engines, through the real ConversationService (SQLite with the migrations, the dish catalog), each question of
data/demo_eval_questions.jsonl asked by a fresh user, then turned down with "다른 거".

On the torch engine the turned-down dishes are also banned while sampling (model/serving/bans.py); on llama.cpp only
the drawing layer's answer-level check keeps them out (stop the sample, draw again with a new seed, at most
`--resamples` more). Per engine: samples drawn per retry, the share of retries that still name a turned-down dish
(the last sample is kept for soft bans; an allergy would be refused instead), and the time per retry.

    .venv/bin/python bench/llama_bans.py [--resamples 3] [--docs]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import append_docs, command_line, cpu_line, markdown_table, quiet_benchmark, today, versions  # noqa: E402

SECTION = "## 22: bans on the llama.cpp path (the answer-level check alone)"


class Counting:
    """The generator, counting the samples the service draws from it."""

    def __init__(self, inner) -> None:
        self.inner, self.samples = inner, 0
        self.tokenizer, self.max_context = inner.tokenizer, inner.max_context

    def stream(self, request):
        self.samples += 1
        return self.inner.stream(request)

    async def reload_adapter(self, path):
        return await self.inner.reload_adapter(path)

    def info(self):
        return self.inner.info()


async def run(generator, questions: list[str], resamples: int, url: str) -> dict:
    from bot.service.conversation import ConversationService
    from bot.settings import GenerationDefaults
    from bot.store.database import run_upgrade
    from bot.store.history import Store
    from model import DishCatalog
    from model.demo.build import DEMO_SAMPLING

    await asyncio.to_thread(run_upgrade, url)
    store = Store(url)
    counting = Counting(generator)
    rng = random.Random(0)
    service = ConversationService(store, counting, generation=GenerationDefaults(max_new_tokens=96, **DEMO_SAMPLING),
                                  catalog=DishCatalog.load(), seed_source=lambda: rng.getrandbits(31),
                                  max_resamples=resamples, check_fit=False)
    retries, samples, named, seconds = 0, 0, 0, 0.0
    try:
        for user, question in enumerate(questions, start=1):
            first = await service.reply(user, user, question)
            if not first.dishes:
                continue
            before, started = counting.samples, time.perf_counter()
            second = await service.retry(user, user, first.turn_id)
            seconds += time.perf_counter() - started
            retries += 1
            samples += counting.samples - before
            named += bool(set(first.dishes) & set(second.dishes))
    finally:
        await store.close()
    return {"retries": retries, "samples": samples / max(retries, 1), "named": named / max(retries, 1),
            "seconds": seconds / max(retries, 1)}


async def main_async(args: argparse.Namespace) -> int:
    from model import Generator, LlamaCppGenerator, load_model
    from model.demo.build import build_demo_model
    from model.gguf_convert import convert_base, read_marker

    demo = build_demo_model(progress=False)
    workdir = Path(tempfile.gettempdir()) / "mechuri-llama-bans"
    if read_marker(workdir / "gguf") is None:
        convert_base(demo, workdir / "gguf", "f32")
    lines = (ROOT / "data" / "demo_eval_questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["instruction"] for line in lines if line.strip()]
    engines = {"torch (bans while sampling + check)": lambda: Generator(load_model(str(demo), device="cpu")),
               "llama.cpp (check only)": lambda: LlamaCppGenerator(workdir / "gguf", slots=1, threads=1)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make) in enumerate(engines.items()):
            gen = make()
            try:
                r = await run(gen, questions, args.resamples, f"sqlite+aiosqlite:///{tmp}/bans{i}.db")
            finally:
                await gen.close()
            print(name, r, flush=True)
            rows.append([name, r["retries"], f"{r['samples']:.2f}", f"{100 * r['named']:.1f} %",
                         f"{1000 * r['seconds']:.0f} ms"])
    body = (f"`{command_line()}` · {today()} · {cpu_line()} · {versions()}\n\nThe demo model (f32 on both engines), "
            f"{len(questions)} questions of data/demo_eval_questions.jsonl, each by a fresh user; those whose first "
            f"answer names a catalog dish are turned down with \"다른 거\" (up to {args.resamples} resamples, the "
            "bot's default).\n\n" + markdown_table(
                ["engine", "retries", "samples per retry", "retries still naming a turned-down dish",
                 "time per retry"], rows))
    print(body)
    if args.docs:
        append_docs(SECTION, body)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=3)
    parser.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    quiet_benchmark()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
