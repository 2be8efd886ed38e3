"""A scripted week of taste: users with allergies, a diet and a dislike ask varied questions for seven simulated days.

Each scripted user first states their taste in plain Korean ("나 새우랑 땅콩 알레르기 있어", "요즘 채식 중이야",
"오이 싫어해"), which the bot reads and the user confirms (예), exactly as in Telegram. Then they ask 20 varied
questions spread over a week, and press "다른 거" on some answers. Everything runs through the real
ConversationService, SQLite store, dish catalog, phrase ban and the demo model (model/demo.py; `mechuri chat --demo`
uses the same one), with a simulated clock for the days.

Measured on every answer the users saw (first answers and "다른 거" alike):
- allergen violations: the answer names a catalog dish carrying one of the user's allergens, or an ingredient word that
  carries one (data/allergen_ingredients.csv, by morphology: 두부 for 대두, 치즈 for 우유) (target 0);
- names a safe dish: the answer names a catalog dish and none carrying the user's allergens (the baseline: names any
  catalog dish); an allergy must not buy its safety by recommending nothing (target: within 5 points);
- diet conflicts / dislike conflicts: it names a dish the catalog says conflicts, unasked;
- repeats: it names a dish already named to this user within the last 7 days, unasked (target 0);
- fallbacks: every sample named an allergen dish, so the user got a polite refusal instead;
- latency and samples per answer, against a baseline run in the same process: the same users and questions with no
  taste remembered and variety off. The baseline's answers are also scored against each user's profile, to show
  what the avoidance prevented.

    .venv/bin/python bench/taste_week.py                 # 12 users × 20 questions, the demo model (built if needed)
    .venv/bin/python bench/taste_week.py --model DIR --users 2 --questions 4   # any save_pretrained model, smaller
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import append_docs, command_line, cpu_line, markdown_table, median, today  # noqa: E402

from bot.korean import with_particle  # noqa: E402
from bot.service.contract import Answer  # noqa: E402
from bot.service.conversation import ConversationService  # noqa: E402
from bot.settings import GenerationDefaults  # noqa: E402
from bot.store.database import run_upgrade  # noqa: E402
from bot.store.history import Store  # noqa: E402
from bot.taste import replies as taste_replies  # noqa: E402
from bot.taste.profile import ALLERGEN_ORDER, TasteItem, allergy, diet, diet_conflict  # noqa: E402
from model import DishCatalog  # noqa: E402
from model.food.ingredients import AllergenIngredients  # noqa: E402

QUESTIONS = [
    "점심 메뉴 추천해줘", "비 오는 날 뭐 먹지", "야식 추천해줘", "해장하고 싶어", "혼밥하기 좋은 메뉴 알려줘",
    "더운 날 시원한 거 먹고 싶어", "매운 요리 추천해줘", "아침에 간단히 먹을 거", "친구들이랑 모임 메뉴 추천해줘",
    "가볍게 먹을 저녁 추천", "국물 요리 추천해줘", "면 요리 먹고 싶어", "디저트 추천해줘", "술안주 추천해줘",
    "추운 날 따뜻한 거", "배달 음식 뭐 시킬까", "편의점에서 뭐 사 먹지", "회복식으로 좋은 거", "주말 브런치 메뉴",
    "든든한 한 끼 추천해줘", "고기 말고 다른 거 추천", "데이트 메뉴 추천해줘", "출출한데 간식 뭐 먹지",
    "김치찌개 맛있게 먹는 법 알려줘", "떡볶이 먹고 싶다", "칼국수 어때?",
]
ALLERGEN_POOL = list(ALLERGEN_ORDER)  # all 19 categories of the labelling law
DIET_POOL = ["veg", "nopork", "light", "vegan", "nobeef"]
DIET_WORDS = {"veg": "요즘 채식 중이야", "vegan": "저 비건이에요", "nopork": "돼지고기는 안 먹어",
              "nobeef": "소고기는 안 먹어요", "light": "요즘 다이어트 중이야"}
DISLIKES = [("오이 싫어해", TasteItem("dislike", "ingredient", "오이")),
            ("가지는 별로야", TasteItem("dislike", "ingredient", "가지")),
            ("중식은 싫어", TasteItem("dislike", "category", "중식")),
            ("매운 거 못 먹어", TasteItem("dislike", "tag", "매운")),
            ("버섯 싫어해", TasteItem("dislike", "ingredient", "버섯")),
            ("해산물 안 좋아해", TasteItem("dislike", "tag", "해산물"))]
START = datetime(2026, 3, 2, 8, tzinfo=UTC)


@dataclass
class User:
    id: int
    allergies: list[str]
    diet: str
    dislike: tuple[str, TasteItem]

    @property
    def statements(self) -> list[str]:
        names = self.allergies
        if len(names) == 2:
            names = [f"{with_particle(names[0], '와')} {names[1]}"]  # 새우와 땅콩, 땅콩과 새우
        return [f"나 {', '.join(names)} 알레르기 있어", DIET_WORDS[self.diet], self.dislike[0]]

    @property
    def items(self) -> set[TasteItem]:
        return {*(allergy(a) for a in self.allergies), diet(self.diet), self.dislike[1]}


@dataclass
class Seen:
    user: int
    at: datetime
    question: str
    answer: Answer
    seconds: float
    retry: bool
    attempts: int = 1
    problems: dict[str, list[str]] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def make_users(count: int, seed: int) -> list[User]:
    rng = random.Random(seed)
    return [User(1000 + i, rng.sample(ALLERGEN_POOL, rng.choice((1, 1, 2, 3))), DIET_POOL[i % len(DIET_POOL)],
                 DISLIKES[i % len(DISLIKES)]) for i in range(count)]


def schedule(questions: int, seed: int) -> list[tuple[timedelta, str, bool]]:
    """(when, question, press 다른 거 after it) for one user: `questions` spread over 7 days."""
    rng = random.Random(seed)
    picks = rng.sample(QUESTIONS, min(questions, len(QUESTIONS)))
    while len(picks) < questions:
        picks.append(rng.choice(QUESTIONS))
    return [(timedelta(days=7 * i / questions, minutes=rng.randrange(0, 90)), q, rng.random() < 0.3)
            for i, q in enumerate(picks)]


@dataclass
class Variant:
    name: str
    service: ConversationService
    clock: Clock
    seen: list[Seen] = field(default_factory=list)


async def remember_tastes(service: ConversationService, users: list[User]) -> int:
    """Each user says their taste in plain Korean and presses 예. Returns how many were read exactly as meant."""
    understood = 0
    for user in users:
        for statement in user.statements:
            asked = await service.reply(user.id, user.id, statement)
            if asked.status == "ask" or asked.confirm:  # asked, or answered with the question beside it
                await service.settle_taste(user.id, user.id, asked.question_turn_id, True)
        read = set((await service.taste.store.profile(user.id)).items)
        understood += read == user.items
        if not user.items <= read:  # the guarantee is measured on the taste meant; what was misheard is set here
            await service.taste.remember(user.id, user.items - read)
    return understood


async def run_week(variants: list[Variant], users: list[User], questions: int, seed: int) -> None:
    """Every user's week, users interleaved in time; each question goes to every variant back to back, in
    alternating order, so that the machine's load hits them alike."""
    plans = {u.id: schedule(questions, seed + u.id) for u in users}
    events = sorted((when, uid, i) for uid, plan in plans.items() for i, (when, _, _) in enumerate(plan))
    for n, (when, uid, i) in enumerate(events):
        _, question, retry = plans[uid][i]
        for variant in variants if n % 2 == 0 else reversed(variants):
            variant.clock.now = START + when
            started = time.perf_counter()
            answer = await variant.service.reply(uid, uid, question)
            variant.seen.append(Seen(uid, variant.clock.now, question, answer, time.perf_counter() - started, False))
            if retry and answer.status == "ok":
                variant.clock.now += timedelta(minutes=1)
                started = time.perf_counter()
                again = await variant.service.retry(uid, uid, answer.turn_id)
                variant.seen.append(Seen(uid, variant.clock.now, question, again, time.perf_counter() - started, True))


def score(seen: list[Seen], users: list[User], catalog: DishCatalog, window: timedelta) -> dict[str, float]:
    by_id = {u.id: u for u in users}
    history: dict[int, list[tuple[datetime, set[str]]]] = {}
    counts = {"answers": 0, "allergen": 0, "ingredient": 0, "diet": 0, "dislike": 0, "repeat": 0, "fallback": 0,
              "no_dish": 0, "safe_dish": 0, "own_safe": 0}
    from bot.taste.parse import TasteReader

    rules = TasteReader.load(catalog).rules
    table = AllergenIngredients.load()
    for s in seen:
        user = by_id[s.user]
        named = catalog.find(s.answer.text)
        asked = {d.name for d in catalog.find(s.question)}
        names = {d.name for d in named}
        counts["answers"] += 1
        counts["fallback"] += s.answer.fallback
        counts["no_dish"] += not named and not s.answer.fallback
        bad = [d.name for d in named if set(user.allergies) & set(d.allergens)]
        counts["safe_dish"] += bool(named) and not bad and not s.answer.fallback
        own = catalog.find(_without_suggestion(s.answer))  # the model's own words, without the safe picks' line
        counts["own_safe"] += bool(own) and not (set(user.allergies) & {a for d in own for a in d.allergens}) \
            and not s.answer.fallback
        said = "" if s.answer.fallback else _without_check_line(s.answer.text, user.allergies)
        if words := [h.word for h in table.find(said, user.allergies)]:
            counts["ingredient"] += 1
            s.problems["ingredient"] = words
        diet_bad = [d.name for d in named if diet_conflict(user.diet, d) and d.name not in asked]
        dislike_bad = [n for n in names - asked if n in rules.dishes_for(user.dislike[1])]
        recent = set().union(*(dishes for at, dishes in history.get(s.user, []) if s.at - at < window))
        repeats = sorted((names & recent) - asked)
        for key, found in (("allergen", bad), ("diet", diet_bad), ("dislike", dislike_bad), ("repeat", repeats)):
            if found:
                counts[key] += 1
                s.problems[key] = found
        history.setdefault(s.user, []).append((s.at, names))
    return counts


def _without_check_line(text: str, allergies: list[str]) -> str:
    """The answer without the bot's own "check the ingredients" line, which names the user's allergens on purpose."""
    return text.replace(taste_replies.check_ingredients(allergies), "")


def latency_row(seen: list[Seen]) -> tuple[float, float, float]:
    ms = [s.seconds * 1000 for s in seen]
    return median(ms), statistics.fmean(ms), statistics.fmean(s.attempts for s in seen)


async def attach_attempts(store: Store, seen: list[Seen]) -> None:
    from sqlalchemy import select

    from bot.store.schema import Turn

    def read() -> dict[int, int]:
        with store.db.engine.connect() as db:
            return dict(db.execute(select(Turn.id, Turn.attempts).where(Turn.role == "assistant")).all())

    attempts = await store.db.run(read)
    for s in seen:
        s.attempts = attempts.get(s.answer.turn_id, 1)


async def main_async(args: argparse.Namespace) -> None:
    from model import Generator, load_model

    model_dir = args.model or _demo_model()
    catalog = DishCatalog.load()
    users = make_users(args.users, args.seed)
    generator = Generator(load_model(str(model_dir), quantization="none"), max_batch_size=1)
    generation = GenerationDefaults(max_new_tokens=args.max_new_tokens)
    variants: list[Variant] = []
    stores: list[Store] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("baseline", "taste"):
                url = f"sqlite+aiosqlite:///{Path(tmp) / f'{name}.db'}"
                await asyncio.to_thread(run_upgrade, url)
                store = Store(url)
                stores.append(store)
                clock = Clock()
                service = ConversationService(store, generator, generation=generation, catalog=catalog,
                                              variety_days=7 if name == "taste" else 0, clock=clock,
                                              seed_source=_seeds(args.seed))
                variants.append(Variant(name, service, clock))
            await variants[1].service.taste.reader()
            understood = await remember_tastes(variants[1].service, users)
            started = time.perf_counter()
            await run_week(variants, users, args.questions, args.seed)
            wall = time.perf_counter() - started
            for variant, store in zip(variants, stores, strict=True):
                await attach_attempts(store, variant.seen)
    finally:
        for store in stores:
            await store.close()
        await generator.close()
    print(f"{sum(len(v.seen) for v in variants)} answers in {wall:.0f} s", flush=True)
    report(args, users, catalog, {v.name: v.seen for v in variants}, understood, model_dir)


def _seeds(seed: int):
    rng = random.Random(seed)
    return lambda: rng.getrandbits(31)


def _demo_model() -> Path:
    from model import DemoRecipe, build_demo_model, demo_dir

    path = demo_dir(DemoRecipe())
    return build_demo_model(path, recipe=DemoRecipe(), progress=sys.stderr.isatty())


def report(args: argparse.Namespace, users: list[User], catalog: DishCatalog, results: dict[str, list[Seen]],
           understood: int, model_dir: Path) -> None:
    window = timedelta(days=7)
    rows = []
    shares: dict[str, float] = {}
    for name, seen in results.items():
        counts = score(seen, users, catalog, window)
        p50, mean, attempts = latency_row(seen)
        n = counts["answers"]
        shares[name] = 100 * (counts["safe_dish"] if name == "taste" else n - counts["no_dish"] - counts["fallback"]) / n
        rows.append([
            "taste remembered, variety 7 days" if name == "taste" else "baseline: nothing remembered, variety off",
            n, counts["allergen"], counts["ingredient"], counts["diet"], counts["dislike"], counts["repeat"],
            f"{counts['fallback']} ({100 * counts['fallback'] / n:.1f} %)", f"{shares[name]:.1f} %",
            f"{100 * counts['no_dish'] / n:.0f} %", f"{attempts:.2f}", f"{p50:.0f} ms", f"{mean:.0f} ms",
        ])
    base, taste = results["baseline"], results["taste"]
    own_share = 100 * score(taste, users, catalog, window)["own_safe"] / max(1, len(taste))
    extra = 100 * (latency_row(taste)[1] / latency_row(base)[1] - 1)
    table = markdown_table(["run", "answers", "allergen dishes", "allergen ingredient words", "diet conflicts",
                            "dislike conflicts", "repeats ≤ 7 days", "fallbacks",
                            "names a dish (taste: a safe one)", "no catalog dish", "samples / answer",
                            "latency p50", "latency mean"], rows)
    leaks = [s for s in taste if "allergen" in s.problems or "ingredient" in s.problems]
    examples = [f"- user {s.user}, \"{s.question}\"{' (다른 거)' if s.retry else ''}: {s.problems}, after "
                f"{s.attempts} sample(s): \"{s.answer.text[:80]}\"" for s in taste if s.problems][:8]
    body = "\n".join([
        f"{len(users)} scripted users (1–3 allergies, a diet, a dislike, said in plain Korean and confirmed), "
        f"{args.questions} questions each over 7 simulated days, \"다른 거\" on about 30 % of answers; real "
        f"ConversationService, SQLite, catalog, phrase ban; model: {model_line(model_dir)}, "
        f"max {args.max_new_tokens} new tokens, "
        "T 0.7, top-p 0.9, seeded. Both runs in one process, each question to both back to back (alternating "
        "order); the baseline's answers are scored against the same profiles, to show what the avoidance prevents.",
        "", f"- Command: `{command_line()}`", f"- Machine: {cpu_line()}", f"- Date: {today()}",
        f"- Statements read exactly as meant: {understood} of {len(users)} users (3 statements each)", "", table, "",
        f"Extra latency of the avoidance (mean per answer, taste vs baseline): {extra:+.0f} %. "
        f"Allergen violations with taste, dish or ingredient word: {len(leaks)} over {len(taste)} answers (target 0). "
        f"Names a safe catalog dish: {shares['taste']:.1f} % against the baseline's {shares['baseline']:.1f} % naming "
        f"a dish ({shares['taste'] - shares['baseline']:+.1f} points; target within 5); in the model's own words, "
        f"without the line of safe picks the service adds when they name none: {own_share:.1f} %.",
    ])
    if examples:
        body += "\n\nSoft misses with taste on (kept after the resample bound, or a repeat):\n" + "\n".join(examples)
    print(body)
    if args.docs:
        append_docs("## Taste: a scripted week, the guarantee down to the ingredient (issue 23)", body)


def _without_suggestion(answer: Answer) -> str:
    line = taste_replies.safe_suggestion(answer.dishes) if answer.dishes else None
    return "\n\n".join(part for part in answer.text.split("\n\n") if part != line)


def model_line(model_dir: Path) -> str:
    """What the model was: a demo build's recipe and training, or the folder name."""
    import json

    info_file = model_dir / "demo.json"
    if not info_file.exists():
        return f"`{model_dir.name}`"
    info = json.loads(info_file.read_text())
    recipe = info["recipe"]
    return (f"the demo model (model/demo.py: hidden {recipe['hidden']}, {recipe['layers']} layers, "
            f"{info['steps_done']}/{recipe['steps']} steps, final loss {info['final_loss']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--model", type=Path, default=None, help="a save_pretrained folder (default: the demo model)")
    parser.add_argument("--docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
