"""`bench/feedback_loop.py --learning`: does asking about what users turn down cut their "다른 거" (issue 23, part 4)?

Simulated users each hide one taste (they hate dishes with one catalog tag: 국물, 매운 …). They ask questions through
the real ConversationService (real SQLite with the migrations, the real catalog and taste reader, the demo model,
sampled as `mechuri chat --demo`), press "다른 거" while an answer names a dish they hate (up to 3 times) and 👎 the
last one if it still does. When the bot asks "국물 요리는 별로세요? 앞으로 덜 추천할까요?" they say yes only when it
asks about their own hidden taste. No model is trained.

Measured: each user's "다른 거" rate (the share of their questions whose first answer they turned down) over their
first 6 questions and their last 6, with learning on, against the same users, questions and seeds with it off
(target: ≥ 40 % relative drop with it on); and tastes remembered that the user never said yes to (target 0).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import append_docs, command_line, cpu_line, markdown_table, today
from feedback_loop import FORMS, MAX_RETRIES, SEEN_SITUATIONS, _demo_model

from bot.service.conversation import ConversationService
from bot.settings import GenerationDefaults
from bot.store.database import run_upgrade
from bot.store.history import Store
from bot.taste.learning import LEARN_AFTER
from bot.taste.profile import TasteItem
from model import DishCatalog
from model.demo.build import DEMO_RESAMPLES, DEMO_SAMPLING

HEADING = "## Issue 23: learning from what each user turns down (CPU, no training)"
WINDOW = 6


@dataclass
class HiddenTaste:
    id: int
    hates: str  # a catalog tag the user never says

    def turns_down(self, catalog: DishCatalog, question: str, text: str) -> bool:
        asked = {d.name for d in catalog.find(question)}
        return any(self.hates in d.tags for d in catalog.find(text) if d.name not in asked)


@dataclass
class Trace:
    user: HiddenTaste
    first_turned_down: list[bool] = field(default_factory=list)
    asked: list[tuple[str, str, bool]] = field(default_factory=list)  # (target, value, said yes)
    remembered: tuple[TasteItem, ...] = ()

    @property
    def unsaid(self) -> list[TasteItem]:
        """Remembered tastes the user never said yes to: must be none."""
        yes = {(t, v) for t, v, said in self.asked if said}
        return [i for i in self.remembered if i.about not in yes]


async def session(service: ConversationService, user: HiddenTaste, asked: list[str], catalog: DishCatalog) -> Trace:
    trace = Trace(user)
    for question in asked:
        answer = await service.reply(user.id, user.id, question)
        first, retries = None, 0
        while True:
            bad = answer.status == "ok" and user.turns_down(catalog, question, answer.text)
            first = bad if first is None else first
            if answer.learn_id:
                item = answer.proposal[0]
                yes = item.target == "tag" and item.value == user.hates
                trace.asked.append((item.target, item.value, yes))
                await service.settle_learned(user.id, answer.learn_id, yes)
            if not bad or not answer.can_retry or retries == MAX_RETRIES:
                break
            answer = await service.retry(user.id, user.id, answer.turn_id)
            retries += 1
        if bad and answer.can_vote:
            await service.vote(user.id, user.id, answer.turn_id, up=False)
        trace.first_turned_down.append(bool(first))
    trace.remembered = (await service.taste.store.profile(user.id)).items
    return trace


async def run(url: str, generator, catalog: DishCatalog, population: list[HiddenTaste],
              asked: dict[int, list[str]], *, learn: bool, seed: int, max_new_tokens: int) -> list[Trace]:
    await asyncio.to_thread(run_upgrade, url)
    store = Store(url)
    generation = GenerationDefaults(max_new_tokens=max_new_tokens, **DEMO_SAMPLING)
    try:
        async def one(user: HiddenTaste) -> Trace:
            rng = random.Random(seed * 100_003 + user.id)  # the same seeds with learning on and off
            service = ConversationService(store, generator, generation=generation, catalog=catalog,
                                          seed_source=lambda: rng.getrandbits(31), max_resamples=DEMO_RESAMPLES,
                                          learn_after=LEARN_AFTER if learn else 0)
            return await session(service, user, asked[user.id], catalog)

        return list(await asyncio.gather(*(one(u) for u in population)))
    finally:
        await store.close()


def rate(traces: list[Trace], part: slice) -> float:
    marks = [m for t in traces for m in t.first_turned_down[part]]
    return sum(marks) / len(marks) if marks else 0.0


async def main_async(args: argparse.Namespace) -> int:
    from model import Generator, load_model

    model_dir = str(args.model or _demo_model())
    catalog = DishCatalog.load()
    rng = random.Random(args.seed)
    population = [HiddenTaste(1000 + i, args.tastes[i % len(args.tastes)]) for i in range(args.users)]
    pool = [form.format(s=s) for s in SEEN_SITUATIONS for form in FORMS]
    asked = {u.id: rng.sample(pool, args.questions) for u in population}
    loaded = await asyncio.to_thread(load_model, model_dir, quantization="none", device="cpu")
    generator = Generator(loaded, max_batch_size=8, max_queue=256)
    results, took = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for learn in (False, True):
            started = time.perf_counter()
            url = f"sqlite+aiosqlite:///{Path(tmp) / ('on' if learn else 'off')}.db"
            results[learn] = await run(url, generator, catalog, population, asked, learn=learn, seed=args.seed,
                                       max_new_tokens=args.max_new_tokens)
            took[learn] = time.perf_counter() - started
    report(args, results, took, model_dir)
    return 0


def report(args: argparse.Namespace, results: dict[bool, list[Trace]], took: dict[bool, float], model_dir: str) -> None:
    def pct(x: float) -> str:
        return f"{100 * x:.1f} %"

    early, late = slice(0, WINDOW), slice(-WINDOW, None)
    lines, drops = [], {}
    for learn, traces in results.items():
        a, b = rate(traces, early), rate(traces, late)
        drops[learn] = 1 - b / a if a else 0.0
        asked = [x for t in traces for x in t.asked]
        lines.append([f"learning {'on' if learn else 'off'}", len(traces), pct(a), pct(b), f"{100 * drops[learn]:+.1f} %",
                      len(asked), sum(yes for *_, yes in asked), sum(len(t.unsaid) for t in traces),
                      f"{took[learn]:.0f} s"])
    table = markdown_table(["run", "users", f'"다른 거" rate, first {WINDOW}', f"last {WINDOW}", "relative fall",
                            "questions asked", "yes", "remembered without a yes", "wall"], lines)
    unsaid = sum(len(t.unsaid) for traces in results.values() for t in traces)
    on_late, off_late = rate(results[True], late), rate(results[False], late)
    met = drops[True] >= 0.40 and on_late < off_late and unsaid == 0
    body = "\n".join([
        f"Command: `{command_line()}`  ",
        f"Machine: {cpu_line()}; {today()}; model {model_dir}; sampling as `mechuri chat --demo`, "
        f"{args.max_new_tokens} new tokens; asks after {LEARN_AFTER} turned-down answers sharing a tag or ingredient.  ",
        f"Users: {args.users}, hiding a hate of {' / '.join(args.tastes)} in turn, {args.questions} questions each, "
        f"the same questions and seeds in both runs; a \"다른 거\" rate is the share of questions whose first answer the "
        "user turned down.",
        "",
        table,
        "",
        f"With learning on the rate falls {100 * drops[True]:+.1f} % relative (off: {100 * drops[False]:+.1f} %; "
        f"target ≥ 40 % with it on, and below the run with it off: last {WINDOW} {pct(on_late)} on against "
        f"{pct(off_late)} off), {unsaid} tastes remembered without a yes (target 0). "
        f"**Target {'met' if met else 'not met'}.**",
    ])
    print(body)
    if args.append_docs:
        print(f"updated {append_docs(HEADING, body)}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learning", action="store_true")
    parser.add_argument("--model", type=Path, default=None, help="a save_pretrained model (default: the demo model)")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--questions", type=int, default=18)
    parser.add_argument("--tastes", type=lambda v: tuple(v.split(",")), default=("국물", "매운", "면", "고기"))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 users, 12 questions, 24 tokens")
    parser.add_argument("--append-docs", action="store_true", help=f"write the result under '{HEADING}'")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.questions, args.max_new_tokens = 2, 12, 24
    raise SystemExit(asyncio.run(main_async(args)))
