"""The whole feedback loop on CPU: simulated users press "다른 거", their feedback trains one DPO round, and fresh
users with the same tastes, on new questions, press it less.

Each simulated user has a hidden taste, judged by the dish catalog's tags: one group turns down any answer naming a
dish tagged 국물, the other any dish tagged 매운 (a dish the question itself names is never held against it). An
answer that names no catalog dish at all is turned down too: a person who asked for a menu and got none asks again.
Users chat with the demo model through the real ConversationService, SQLite store and catalog; a turned-down answer
gets "다른 거" (up to three times), a kept one sometimes a 👍, one still wrong after the last retry a 👎, and then the
user moves on to the next question. When the bot asks about what they keep turning down ("국물 요리는 별로세요? 앞으로
덜 추천할까요?", bot/taste/learning.py, beside an answer or after a 👎) they say yes if it is their own hidden taste
and no otherwise, so their later prompts carry "싫어하는 것: 국물 요리." and so do the preference rows exported from
them (issue 23, part 5). Then the real operator path runs:

    mechuri dataset feedback --database-url … --out prefs.jsonl --format dpo
    mechuri train --method dpo --data prefs.jsonl --base DEMO --out adapters/feedback-1 --quantization none
    /reload feedback-1                                  (ConversationService.reload_adapter, as the admin command)

and fresh users with the same tastes ask questions none of the first users asked, once before the reload and once
after, with the same seeds. A fresh user starts as the bot invites a new user to: they say their taste in plain
Korean ("국물 요리는 별로예요") and press 예 on "기억해 둘까요?", so their profile is the one learning gave the first users. Reported: the "다른 거" rate (share of first answers turned down) before and after, the
feedback pairs used, the training time, and our other quality columns on the same answers: ended with EOS, fits the
request (model/fit.py), broken characters (�), names a catalog dish. Target: the rate falls by at least 30 %
relative, with no other column worse by more than 2 points.

    .venv/bin/python bench/feedback_loop.py --append-docs     # 24 users, the demo model (built if needed)
    .venv/bin/python bench/feedback_loop.py --quick --model DIR  # a smoke run: few users, two training steps
    .venv/bin/python bench/feedback_loop.py --learning          # asking about turn-downs, no training (issue 23)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import append_docs, command_line, cpu_line, markdown_table, today  # noqa: E402

from bot.korean import with_particle  # noqa: E402
from bot.service.contract import Answer  # noqa: E402
from bot.service.conversation import ConversationService  # noqa: E402
from bot.settings import GenerationDefaults  # noqa: E402
from bot.store.database import run_upgrade  # noqa: E402
from bot.store.history import Store  # noqa: E402
from bot.taste.learning import Learned  # noqa: E402
from bot.taste.profile import TasteItem  # noqa: E402
from model import DishCatalog  # noqa: E402
from model.demo.build import DEMO_RESAMPLES, DEMO_SAMPLING  # noqa: E402
from model.food.fit import answer_fits, wishes_in  # noqa: E402

HEADING = "## Learning from users: the feedback loop (CPU)"
TASTES = ("국물", "매운")  # catalog tags; users alternate between them (--tastes changes the mix)
# Situations the first users ask about, and others only the fresh users ask about: "new questions".
SEEN_SITUATIONS = ["점심", "저녁", "야식", "아침", "주말 점심", "혼밥", "친구 모임", "데이트", "퇴근 후", "회식",
                   "비 오는 날", "도시락", "손님 초대", "일요일 저녁"]
NEW_SITUATIONS = ["늦은 저녁", "평일 점심", "가족 외식", "생일", "캠핑", "술자리", "출근 전", "주말 저녁"]
FORMS = ["{s} 메뉴 추천해줘", "{s}에 뭐 먹을까?", "{s}에 먹을 만한 거 알려줘", "{s}에 어울리는 음식 있어?"]
MAX_RETRIES = 3
DISLIKE_NOTE = "싫어하는 것:"  # how the prompt's 맥락 names a remembered dislike (TasteProfile.prompt_note)
UP_SHARE = 0.5  # a kept answer gets a 👍 this often; otherwise the user just moves on
# How a fresh user tells the bot their taste before their first question, as /taste's hint invites ("오이 싫어해");
# {은}/{를}: the taste's label with the particle that fits it. One form per user, in turn.
STATEMENTS = ("{은} 별로예요", "난 {를} 싫어해", "{은} 별로 안 좋아해요")


@dataclass
class SimUser:
    id: int
    hates: str  # a catalog tag

    def turns_down(self, catalog: DishCatalog, question: str, text: str) -> bool:
        dishes = catalog.find(text)
        asked = {d.name for d in catalog.find(question)}
        return not dishes or any(self.hates in d.tags for d in dishes if d.name not in asked)

    @property
    def taste(self) -> TasteItem:
        """What the bot should end up remembering: the hidden taste as a dislike (learned or stated, the same)."""
        return TasteItem("dislike", "tag", self.hates)

    def says_yes(self, question: str) -> bool:
        """The answer to a learned "… 별로세요? 앞으로 덜 추천할까요?": yes only when it asks about their own taste."""
        return question == Learned(self.taste, 0).question

    def statement(self) -> str:
        label = self.taste.label
        form = STATEMENTS[self.id % len(STATEMENTS)]
        return form.format(은=with_particle(label, "은"), 를=with_particle(label, "를"))


@dataclass
class Shown:
    user: SimUser
    question: str
    answer: Answer
    first: bool
    turned_down: bool
    finish: str = ""


@dataclass
class Phase:
    name: str
    shown: list[Shown] = field(default_factory=list)
    learned: list[tuple[int, str, bool]] = field(default_factory=list)  # (user id, learned question, said yes)
    stated: dict[int, bool] = field(default_factory=dict)  # user id → their statement was heard as their taste
    remembered: dict[int, tuple[TasteItem, ...]] = field(default_factory=dict)  # each user's profile at the end

    def firsts(self) -> list[Shown]:
        return [s for s in self.shown if s.first]


class FinishLog:
    """The generator, with each stream's finish reason kept by seed (seeds are drawn fresh for every sample)."""

    def __init__(self, generator: Any) -> None:
        self._generator = generator
        self._streams: dict[int, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._generator, name)

    def stream(self, request: Any) -> Any:
        stream = self._generator.stream(request)
        self._streams[request.seed] = stream
        return stream

    def finish(self, seed: int) -> str:
        stream = self._streams.get(seed)
        result = getattr(stream, "result", None)
        return result.finish_reason if result is not None else ""


def questions(situations: list[str], count: int, rng: random.Random) -> list[str]:
    pool = [form.format(s=s) for s in situations for form in FORMS]
    return rng.sample(pool, min(count, len(pool)))


def users(first_id: int, count: int, tags: tuple[str, ...] = TASTES) -> list[SimUser]:
    return [SimUser(first_id + i, tags[i % len(tags)]) for i in range(count)]


async def state_taste(service: ConversationService, user: SimUser, phase: Phase) -> None:
    """A new user says their taste in plain Korean and presses 예 on "기억해 둘까요?"."""
    said = await service.reply(user.id, user.id, user.statement())
    phase.stated[user.id] = said.status == "ask" and said.proposal == (user.taste,)
    if said.status == "ask":
        await service.settle_taste(user.id, user.id, said.question_turn_id, accept=phase.stated[user.id])


async def settle(service: ConversationService, user: SimUser, phase: Phase, question_id: int, text: str) -> None:
    """예 to a learned question about their own hidden taste, 아니요 to any other."""
    yes = user.says_yes(text)
    phase.learned.append((user.id, text, yes))
    await service.settle_learned(user.id, question_id, yes)


async def chat(service: ConversationService, user: SimUser, asked: list[str], catalog: DishCatalog,
               finishes: FinishLog, phase: Phase, rng: random.Random, *, state: bool = False) -> None:
    """One user's session: each question, "다른 거" while the answer breaks their taste, then the next question.
    The bot's learned question ("국물 요리는 별로세요?", beside an answer or after a 👎) gets a truthful answer.
    `state`: first tell the bot the taste in words (fresh users)."""
    if state:
        await state_taste(service, user, phase)
    for question in asked:
        answer = await service.reply(user.id, user.id, question)
        first = True
        retries = 0
        while True:
            bad = answer.status == "ok" and user.turns_down(catalog, question, answer.text)
            phase.shown.append(Shown(user, question, answer, first, bad, finishes.finish(answer.seed)))
            first = False
            if answer.learn_id and answer.confirm:
                await settle(service, user, phase, answer.learn_id, answer.confirm)
            if not bad or not answer.can_retry or retries == MAX_RETRIES:
                break
            answer = await service.retry(user.id, user.id, answer.turn_id)
            retries += 1
        if answer.can_vote:
            if bad:
                await service.vote(user.id, user.id, answer.turn_id, up=False)
                learned = await service.learned_question(user.id)  # as the front ends ask after a 👎
                if learned is not None:
                    await settle(service, user, phase, *learned)
            elif rng.random() < UP_SHARE:
                await service.vote(user.id, user.id, answer.turn_id, up=True)
    await service.reset(user.id, user.id)  # the last question is moved on from too
    phase.remembered[user.id] = (await service.taste.store.profile(user.id)).items if service.taste else ()


async def run_phase(name: str, url: str, generator: FinishLog, catalog: DishCatalog, population: list[SimUser],
                    asked: dict[int, list[str]], seed: int, adapters_dir: Path, args: argparse.Namespace, *,
                    state: bool = False) -> Phase:
    await asyncio.to_thread(run_upgrade, url)
    store = Store(url)
    phase = Phase(name)
    generation = GenerationDefaults(max_new_tokens=args.max_new_tokens, **DEMO_SAMPLING)  # as `mechuri chat --demo`
    try:
        async def one(user: SimUser) -> None:
            rng = random.Random(seed * 100_003 + user.id)  # the same seeds before and after the reload
            service = ConversationService(store, generator, generation=generation, catalog=catalog,
                                          adapters_dir=adapters_dir, seed_source=lambda: rng.getrandbits(31),
                                          max_resamples=DEMO_RESAMPLES)
            await chat(service, user, asked[user.id], catalog, generator, phase, random.Random(user.id), state=state)

        await asyncio.gather(*(one(u) for u in population))
    finally:
        await store.close()
    return phase


def mechuri(argv: list[str]) -> None:
    """The operator's commands, each its own process beside the running bot, as in the README."""
    done = subprocess.run([sys.executable, "-m", "mechuri", *argv], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"mechuri {' '.join(argv[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(done.stdout, end="", flush=True)


def exported(prefs: Path) -> tuple[int, int]:
    """Rows written, and how many of them carry a remembered dislike in their prompt (the bot's 맥락, replayed)."""
    prompts = [json.loads(line)["prompt"] for line in prefs.read_text(encoding="utf-8").splitlines() if line.strip()]
    return len(prompts), sum(DISLIKE_NOTE in p for p in prompts)


def taste_line(phase: Phase) -> str:
    """What the phase's users told the bot about their taste, and what it remembered."""
    users_ = {s.user.id: s.user for s in phase.shown}
    kept = sum(users_[u].taste in items for u, items in phase.remembered.items() if u in users_)
    unsaid = sum(1 for u, items in phase.remembered.items() for i in items
                 if u in users_ and i != users_[u].taste and i.kind == "dislike")
    said = (f"{sum(phase.stated.values())} of {len(phase.stated)} statements heard as meant and confirmed; "
            if phase.stated else "")
    yes = sum(y for *_, y in phase.learned)
    return (f"{said}{len(phase.learned)} learned questions asked, {yes} yes, {len(phase.learned) - yes} no; "
            f"{kept} of {len(phase.remembered)} users end with their taste remembered, "
            f"{unsaid} other dislikes remembered (target 0)")


def columns(phase: Phase, catalog: DishCatalog) -> dict[str, float]:
    firsts = phase.firsts()
    n = max(len(firsts), 1)
    checked = [(s, wishes_in(s.question)) for s in firsts]
    checked = [(s, w) for s, w in checked if w]
    return {
        "answers": len(firsts),
        "rate": sum(s.turned_down for s in firsts) / n,
        "presses": sum(not s.first for s in phase.shown) / n,
        "eos": sum(s.finish == "eos" for s in firsts) / n,
        "fit": sum(bool(answer_fits(catalog, s.answer.text, w)) for s, w in checked) / max(len(checked), 1),
        "fit_n": len(checked),
        "broken": sum("\ufffd" in s.answer.text for s in firsts) / n,
        "dish": sum(bool(catalog.find(s.answer.text)) for s in firsts) / n,
    }


def by_taste(phase: Phase) -> dict[str, float]:
    out = {}
    for tag in dict.fromkeys(s.user.hates for s in phase.shown):
        firsts = [s for s in phase.firsts() if s.user.hates == tag]
        out[tag] = sum(s.turned_down for s in firsts) / max(len(firsts), 1)
    return out


async def main_async(args: argparse.Namespace) -> int:
    from model import Generator, load_model

    model_dir = str(args.model or _demo_model())
    catalog = DishCatalog.load()
    rng = random.Random(args.seed)
    first_users = users(1000, args.users, args.tastes)
    fresh_users = users(5000, args.fresh_users or args.users, args.tastes)
    asked_first = {u.id: questions(SEEN_SITUATIONS, args.questions, rng) for u in first_users}
    asked_fresh = {u.id: questions(NEW_SITUATIONS, args.questions, rng) for u in fresh_users}
    loaded = await asyncio.to_thread(load_model, model_dir, quantization="none", device="cpu")
    generator = FinishLog(Generator(loaded, max_batch_size=8, max_queue=256))
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        adapters = tmp_path / "adapters"
        adapters.mkdir()
        try:
            started = time.perf_counter()
            collect_url = f"sqlite+aiosqlite:///{tmp_path / 'collect.db'}"
            collect = await run_phase("collect", collect_url, generator, catalog, first_users, asked_first, args.seed,
                                      adapters, args)
            timings["collect"] = time.perf_counter() - started
            prefs = tmp_path / f"prefs-{args.method}.jsonl"
            mechuri(["dataset", "feedback", "--database-url", collect_url, "--out", str(prefs), "--format", args.method])
            rows = exported(prefs)
            started = time.perf_counter()
            mechuri(["train", "--method", args.method, "--data", str(prefs), "--base", model_dir,
                 "--out", str(adapters / "feedback-1"), "--quantization", "none", "--device", "cpu",
                 "--beta", str(args.beta), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
                 *(["--max-steps", str(args.max_steps)] if args.max_steps else ["--epochs", str(args.epochs)]),
                 "--seed", str(args.seed), "--no-progress", *args.train_args])
            timings["train"] = time.perf_counter() - started
            before = await run_phase("before", f"sqlite+aiosqlite:///{tmp_path / 'before.db'}", generator, catalog,
                                     fresh_users, asked_fresh, args.seed + 1, adapters, args, state=True)
            reloader = ConversationService(Store(f"sqlite+aiosqlite:///{tmp_path / 'before.db'}"), generator,
                                           generation=GenerationDefaults(), adapters_dir=adapters)
            info = await reloader.reload_adapter("feedback-1")  # what the admin's /reload feedback-1 calls
            await reloader.store.close()
            after = await run_phase("after", f"sqlite+aiosqlite:///{tmp_path / 'after.db'}", generator, catalog,
                                    fresh_users, asked_fresh, args.seed + 1, adapters, args, state=True)
        finally:
            await generator.close()
    report(args, catalog, [collect, before, after], rows, timings, info.version, model_dir)
    return 0


def _demo_model() -> Path:
    from model import DemoRecipe, build_demo_model, demo_dir

    return build_demo_model(demo_dir(DemoRecipe()), recipe=DemoRecipe(), progress=sys.stderr.isatty())


def report(args: argparse.Namespace, catalog: DishCatalog, phases: list[Phase], rows: tuple[int, int],
           timings: dict[str, float], version: str | None, model_dir: str) -> None:
    pct: Callable[[float], str] = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    cols = {p.name: columns(p, catalog) for p in phases}
    labels = {"collect": "first users, seen situations, demo model",
              "before": "fresh users, new questions, before (demo model)",
              "after": f"fresh users, new questions, after /reload feedback-1 ({args.method.upper()})"}
    table = markdown_table(
        ["run", "first answers", '"다른 거" rate', "presses per question", "ended with EOS", "fits the request",
         "�", "names a dish"],
        [[labels[p.name], c["answers"], pct(c["rate"]), f"{c['presses']:.2f}", pct(c["eos"]),
          f"{pct(c['fit'])} of {c['fit_n']}", pct(c["broken"]), pct(c["dish"])]
         for p, c in ((p, cols[p.name]) for p in phases)])
    b, a = cols["before"], cols["after"]
    drop = 1 - a["rate"] / b["rate"] if b["rate"] else 0.0
    worse = {name: (b[key] - a[key]) * 100 for name, key in (("EOS", "eos"), ("fit", "fit"), ("names a dish", "dish"))}
    worse["�"] = (a["broken"] - b["broken"]) * 100
    tastes = "; ".join(f"hates {tag}: {pct(by_taste(phases[1])[tag])} → {pct(by_taste(phases[2])[tag])}"
                       for tag in args.tastes)
    met = drop >= 0.30 and all(v <= 2.0 for v in worse.values())
    body = "\n".join([
        f"Command: `{command_line()}`  ",
        f"Machine: {cpu_line()}; {today()}; model {model_dir} (demo recipe unless --model), sampling as "
        f"`mechuri chat --demo` ({', '.join(f'{k} {v}' for k, v in DEMO_SAMPLING.items())}, {DEMO_RESAMPLES} dish "
        f"resamples), {args.max_new_tokens} new tokens.  ",
        f"Users: {args.users} giving feedback, {args.fresh_users or args.users} fresh ones before and "
        f"after, hating dishes tagged {' / '.join(args.tastes)} in turn, "
        f"{args.questions} questions each, up to {MAX_RETRIES} \"다른 거\" per question.  ",
        f"Taste: first users: {taste_line(phases[0])}. Fresh users, before: {taste_line(phases[1])}; after: "
        f"{taste_line(phases[2])}.  ",
        f"Feedback: {rows[0]} {args.method.upper()} rows exported, {rows[1]} of them with the user's dislike in the "
        f"prompt; training {timings['train']:.0f} s "
        f"({args.epochs if not args.max_steps else args.max_steps} {'epochs' if not args.max_steps else 'steps'}, "
        f"lr {args.lr}, beta {args.beta}, batch {args.batch_size}); collecting took {timings['collect']:.0f} s; "
        f"served adapter version {version}.",
        "",
        table,
        "",
        f"\"다른 거\" rate {pct(b['rate'])} → {pct(a['rate'])}: {100 * drop:+.1f} % relative fall (target ≥ 30 %); "
        f"by taste: {tastes}.  ",
        "Other columns, points worse after (target ≤ 2): "
        + ", ".join(f"{k} {v:+.1f}" for k, v in worse.items()) + f".  **Target {'met' if met else 'not met'}.**",
    ])
    print(body)
    if args.append_docs:
        print(f"updated {append_docs(HEADING, body)}")


def main() -> None:
    if "--learning" in sys.argv[1:]:  # learning from turn-downs, no training: bench/turn_down_learning.py
        from turn_down_learning import main as learning_main

        learning_main(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a save_pretrained model (default: the demo model)")
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--fresh-users", type=int, default=None,
                        help="users in each of the before/after runs (default: --users); more users, less noise")
    parser.add_argument("--questions", type=int, default=12, help="questions per user")
    parser.add_argument("--tastes", type=lambda v: tuple(v.split(",")), default=TASTES,
                        help=f"comma-separated catalog tags the users hate, one per user in turn (default "
                             f"{','.join(TASTES)})")
    parser.add_argument("--method", choices=("dpo", "kto"), default="dpo")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="more `mechuri train` flags")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 users, 3 questions, 2 training steps")
    parser.add_argument("--append-docs", action="store_true", help=f"write the result under '{HEADING}'")
    args = parser.parse_args()
    if args.quick:
        args.users, args.questions, args.max_steps, args.max_new_tokens = 4, 3, 2, 32
    raise SystemExit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
