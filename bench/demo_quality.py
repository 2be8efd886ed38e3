"""Demo quality as a reader sees it, through the product path: held-out questions, one "다른 거" each.

Every question of data/demo_eval_questions.jsonl (written by us, not in the training data, each with the wishes the
catalog can check) goes to a fresh user of the real ConversationService (SQLite store, dish catalog, safety notes,
answer-time checks) on the real Generator, then gets one "다른 거". Counted apart for first answers and retries:
- answers with a broken character `�`;
- answers that name a catalog dish that fits what was asked (model/fit.py), over the questions that ask something;
- answers that use only words of the model's training text (training_words.txt; a word-salad proxy);
- retries that name a dish the user turned down (the "다른 거" guarantee: must stay 0);
- samples drawn per answer (the service resamples an answer that misses the request or names a turned-down dish).

    python bench/demo_quality.py --variant new=DIR     # as `mechuri chat --demo` runs: DEMO_SAMPLING, DEMO_RESAMPLES
    python bench/demo_quality.py --variant "before=OLD,temperature=0.7,top_p=0.9,check=off" \
        --variant "new=DIR,check=off" --variant new=DIR --append-docs      # side by side, one run

Seeds come from a fixed stream per question, so a run is reproducible on one machine, and every variant gets the same
seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from bench.common import append_docs, command_line, cpu_line, markdown_table, today  # noqa: E402

QUESTIONS = ROOT / "data" / "demo_eval_questions.jsonl"


@dataclass
class Sample:
    kind: str  # "first" | "retry"
    question: str
    wishes: list[str]
    text: str
    fits: bool | None
    unknown: list[str]
    repeats_turned_down: bool
    samples: int
    seconds: float


@dataclass
class Variant:
    label: str
    model: str
    temperature: float
    top_p: float
    repetition_penalty: float
    resamples: int = 3
    check: bool = True

    @classmethod
    def parse(cls, spec: str, defaults: dict[str, float]) -> Variant:
        """"LABEL=DIR[,temperature=X][,top_p=Y][,repetition_penalty=Z][,resamples=N][,check=off]"."""
        head, *options = spec.split(",")
        label, _, model = head.partition("=")
        values: dict = {**defaults, "check": True}
        for option in options:
            key, _, value = (part.strip() for part in option.partition("="))
            if key not in values:
                raise SystemExit(f"--variant {spec!r}: unknown setting {key!r} (labels may not hold commas); "
                                 f"choose from {', '.join(values)}")
            values[key] = value != "off" if key == "check" else int(value) if key == "resamples" else float(value)
        return cls(label, model, **values)

    def describe(self) -> str:
        return (f"temperature {self.temperature}, top_p {self.top_p}, repetition penalty {self.repetition_penalty}, "
                f"answer-time check {'on' if self.check else 'off'}, at most {self.resamples} resamples")


async def run(args: argparse.Namespace, variant: Variant) -> list[Sample]:
    from bot.service.conversation import ConversationService
    from bot.settings import GenerationDefaults
    from bot.store.database import run_upgrade
    from bot.store.history import Store
    from model import DishCatalog, Generator, SafetyNotes, load_model
    from model.eval.reader import model_corpus, unknown_words
    from model.food.fit import answer_fits
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[: args.limit] if args.limit else rows
    catalog, safety = DishCatalog.load(), SafetyNotes.load()
    known = model_corpus(variant.model) or frozenset()
    loaded = await asyncio.to_thread(load_model, variant.model, quantization="none", device="cpu")
    generator = Generator(loaded, max_batch_size=8, max_queue=64)
    generation = GenerationDefaults(max_new_tokens=96, temperature=variant.temperature, top_p=variant.top_p,
                                    repetition_penalty=variant.repetition_penalty)
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(run_upgrade, url)
        store = Store(url)

        async def one(index: int, row: dict) -> list[Sample]:
            seeds = random.Random(args.seed * 1000 + index)  # the same seeds for every variant
            service = ConversationService(store, generator, generation=generation, catalog=catalog, safety=safety,
                                          seed_source=lambda: seeds.getrandbits(31),
                                          max_resamples=variant.resamples,
                                          # off: the service as it was before the check (turned-down dishes are
                                          # still resampled)
                                          check_fit=variant.check)
            out = []
            started = time.perf_counter()
            first = await service.reply(index, index, row["instruction"])
            out.append((first, "first", time.perf_counter() - started, ()))
            started = time.perf_counter()
            retry = await service.retry(index, index, first.turn_id)
            out.append((retry, "retry", time.perf_counter() - started, first.dishes))
            result = []
            for answer, kind, seconds, turned_down in out:
                attempts = await store_attempts(store, answer.turn_id)
                result.append(Sample(
                    kind, row["instruction"], row["wishes"], answer.text,
                    bool(answer_fits(catalog, answer.text, row["wishes"])) if row["wishes"] else None,
                    unknown_words(answer.text, known), bool(set(answer.dishes) & set(turned_down)), attempts,
                    seconds))
            return result

        try:
            for start in range(0, len(rows), 8):
                chunk = await asyncio.gather(*(one(start + i, r) for i, r in enumerate(rows[start:start + 8])))
                samples += [s for group in chunk for s in group]
        finally:
            await generator.close()
            await store.close()
    return samples


async def store_attempts(store, turn_id: int) -> int:
    found = await store.get_turn(turn_id)
    return int(getattr(found[0], "attempts", 1) or 1) if found else 1


def summary(samples: list[Sample], kind: str) -> dict[str, float]:
    chosen = [s for s in samples if s.kind == kind]
    checked = [s for s in chosen if s.fits is not None]
    n = max(len(chosen), 1)
    return {
        "answers": len(chosen),
        "broken": sum("\ufffd" in s.text for s in chosen) / n,
        "fit": sum(bool(s.fits) for s in checked) / max(len(checked), 1), "checked": len(checked),
        "known": sum(not s.unknown for s in chosen) / n,
        "turned_down": sum(s.repeats_turned_down for s in chosen) / n,
        "samples": sum(s.samples for s in chosen) / n,
        "seconds": sum(s.seconds for s in chosen) / n,
    }


def table(results: dict[str, list[Sample]]) -> str:
    rows = []
    for label, samples in results.items():
        for kind, title in (("first", "first answers"), ("retry", "다른 거")):
            s = summary(samples, kind)
            rows.append([label, title, s["answers"], f"{s['broken']:.0%}", f"{s['fit']:.0%} of {s['checked']}",
                         f"{s['known']:.0%}", f"{s['turned_down']:.0%}", f"{s['samples']:.2f}",
                         f"{s['seconds']:.2f} s"])
    return markdown_table(["variant", "answers", "n", "with `�`", "fit the request", "only training words",
                           "name a turned-down dish", "samples per answer", "mean time"], rows)


def main(argv: list[str] | None = None) -> int:
    from model.demo.build import DEMO_RESAMPLES, DEMO_SAMPLING

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=DIR[,key=value…]",
                        help="a demo model folder and its settings: temperature, top_p, repetition_penalty, "
                             "resamples, check=off (default: DEMO_SAMPLING, DEMO_RESAMPLES, check on, as "
                             "`mechuri chat --demo` runs); repeat to compare side by side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: two shared cores run tiny models "
                                                               "many times faster with one)")
    parser.add_argument("--json", type=Path, default=None, help="write every answer here")
    parser.add_argument("--append-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)

    import logging

    import torch

    from bench.common import quiet_benchmark

    torch.set_num_threads(args.threads)
    quiet_benchmark()
    logging.getLogger("bot.service.conversation").setLevel(logging.ERROR)
    variants = [Variant.parse(spec, {**DEMO_SAMPLING, "resamples": DEMO_RESAMPLES}) for spec in args.variant]
    results = {v.label: asyncio.run(run(args, v)) for v in variants}
    text = table(results)
    print(text)
    if args.json:
        payload = {label: [s.__dict__ for s in samples] for label, samples in results.items()}
        args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.append_docs:
        settings = "\n".join(f"- {v.label}: `{v.model}`, {v.describe()}" for v in variants)
        body = (f"Command: `{command_line()}`  \nMachine: {cpu_line()}  \nDate: {today()}\n\n{settings}\n\n{text}")
        append_docs("## Demo quality through the conversation service", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
