"""Bot overhead: what the Telegram path costs per message when generation itself is free.

The whole path runs for real: a PTB Application (concurrent updates) → handlers → ConversationService → Store on a
SQLite file → Bot API calls through PTB's request layer into the in-process fake Bot API (tests/fake_bot_api.py).
Only the generator is a stand-in that answers at once (tests/fakes.py), so every millisecond measured is overhead.

1. Sequential: each update is processed to the end, one at a time; p50/p95 per message, and the share of it spent
   in the conversation service (store included) alone.
2. Burst: U users × M messages put on the update queue at once (interleaved, as they would arrive); every answer
   must arrive, and each user's turns must be stored and delivered in the order sent (checked from the database).

    .venv/bin/python bench/bot_overhead.py            # 500 sequential messages, 200 users × 5 at once
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakes import FakeGenerator  # noqa: E402
from tg_harness import telegram_bot  # noqa: E402

from bot.service.contract import Answer  # noqa: E402
from bot.service.ordering import UserLines  # noqa: E402
from bot.store.database import run_upgrade  # noqa: E402

DISHES = ("김치찌개", "된장찌개", "비빔밥", "불고기", "칼국수", "냉면", "떡볶이", "순두부찌개", "제육볶음", "잡채",
          "갈비탕", "삼계탕", "김밥", "라면", "짜장면", "짬뽕", "콩나물국밥", "해물파전", "닭갈비", "부대찌개")


def echo(prompt: str, seed: int) -> str:
    # A different dish per answer, as a real model's would be: one dish every time would trip the variety check
    # (a dish recommended in the last days is avoided) and measure resampling instead of overhead.
    question = prompt.rsplit("### 질문:", 1)[1].split("\n\n### 답변:", 1)[0].strip()
    return f"[{question}] 오늘은 {DISHES[seed % len(DISHES)]} 어때요? 든든해요."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


CATALOG: object = None  # the real dish catalog unless --no-catalog: taste, variety and the fit check run as in the bot


async def sequential(workdir: Path, messages: int, warmup: int) -> dict[str, float]:
    gen = FakeGenerator(echo, chunk=10_000)
    async with telegram_bot(workdir, gen, db=workdir / "history.db", catalog=CATALOG) as h:
        for i in range(warmup):
            await h.text(1_000_000 + i, 1_000_000 + i, "워밍업")
        h.api.calls.clear()
        bot_ms: list[float] = []
        cpu_start = time.process_time()
        for i in range(messages):
            update = h.api.message_update(10 + i % 50, 10 + i % 50, f"점심 추천 {i}")
            start = time.perf_counter()
            await h.send(update)
            bot_ms.append((time.perf_counter() - start) * 1000)
        # CPU time of the whole process (the aiosqlite thread included): what a message costs whatever else runs.
        bot_cpu_ms = (time.process_time() - cpu_start) * 1000 / messages
        calls = len(h.api.calls) / messages
        service_ms: list[float] = []
        cpu_start = time.process_time()
        for i in range(messages):
            start = time.perf_counter()
            await h.service.reply(10 + i % 50, 10 + i % 50, f"점심 추천 {i}")
            service_ms.append((time.perf_counter() - start) * 1000)
        service_cpu_ms = (time.process_time() - cpu_start) * 1000 / messages
    return {
        "messages": messages, "p50_ms": percentile(bot_ms, 50), "p95_ms": percentile(bot_ms, 95),
        "mean_ms": statistics.fmean(bot_ms), "service_p50_ms": percentile(service_ms, 50),
        "service_p95_ms": percentile(service_ms, 95), "bot_api_calls_per_message": calls,
        "bot_cpu_ms_per_message": bot_cpu_ms, "service_cpu_ms_per_message": service_cpu_ms,
    }


class InstantService:
    """The ConversationService surface with no store and no model: isolates the Telegram layer's own cost."""

    def __init__(self) -> None:
        self.turn_id = 0
        self.lines = UserLines()

    async def reply(self, chat_id: int, user_id: int, text: str, *, on_partial=None, **_kwargs: object) -> Answer:
        self.turn_id += 2
        answer = echo(f"### 질문: {text}\n\n### 답변:", 0)
        if on_partial is not None:
            await on_partial(answer)
        return Answer(self.turn_id, self.turn_id - 1, answer, 0, "ok", ())


async def telegram_only(workdir: Path, messages: int, warmup: int) -> dict[str, float]:
    async with telegram_bot(workdir, FakeGenerator(echo), db=workdir / "history.db") as h:
        h.app.bot_data["mechuri"].service = InstantService()
        for _ in range(warmup):
            await h.text(1, 1, "워밍업")
        timings: list[float] = []
        for i in range(messages):
            update = h.api.message_update(10 + i % 50, 10 + i % 50, f"점심 추천 {i}")
            start = time.perf_counter()
            await h.send(update)
            timings.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": percentile(timings, 50), "p95_ms": percentile(timings, 95)}


def check_database(db: Path, users: int, per_user: int) -> tuple[int, int]:
    """(lost, out of order), from the stored turns: every message stored and answered, in the order sent."""
    with sqlite3.connect(db) as raw:
        rows = raw.execute(
            "SELECT c.user_id, t.id, t.role, t.text, t.status, t.reply_to FROM turns t "
            "JOIN conversations c ON c.id = t.conversation_id ORDER BY t.id"
        ).fetchall()
    questions: dict[int, list[tuple[int, str]]] = {}
    answered: dict[int, int] = {}  # question id → answer id
    for user_id, turn_id, role, text, status, reply_to in rows:
        if role == "user":
            questions.setdefault(user_id, []).append((turn_id, text))
        elif status == "ok":
            answered[reply_to] = turn_id
    lost = out_of_order = 0
    for u in range(users):
        asked = questions.get(u + 1, [])
        expected = [f"u{u} m{m}" for m in range(per_user)]
        lost += per_user - sum(1 for turn_id, _ in asked if turn_id in answered)
        answer_ids = [answered.get(turn_id, 0) for turn_id, _ in asked]
        if [text for _, text in asked] != expected or answer_ids != sorted(answer_ids):
            out_of_order += 1
    return lost, out_of_order


async def burst(workdir: Path, users: int, per_user: int, timeout_s: float) -> dict[str, float]:
    gen = FakeGenerator(echo, chunk=10_000)
    total = users * per_user
    async with telegram_bot(workdir, gen, db=workdir / "history.db", catalog=CATALOG) as h:
        updates = [h.api.message_update(u + 1, u + 1, f"u{u} m{m}") for m in range(per_user) for u in range(users)]
        start = time.perf_counter()
        await h.feed(updates)

        def delivered() -> int:
            return sum(1 for m in h.api.messages.values() if "reply_markup" in m)

        deadline = time.monotonic() + timeout_s
        while delivered() < total and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        wall_s = time.perf_counter() - start
        chat_order_broken = 0
        for u in range(users):
            texts = [m["text"] for m in h.api.chat_messages(u + 1) if "reply_markup" in m]
            if [t.split("]")[0] + "]" for t in texts] != [f"[u{u} m{m}]" for m in range(per_user)]:
                chat_order_broken += 1
        answers = delivered()
        db = h.db
    lost, out_of_order = check_database(db, users, per_user)
    return {
        "users": users, "per_user": per_user, "messages": total, "answers_delivered": answers,
        "lost_in_db": lost, "users_out_of_order_db": out_of_order, "users_out_of_order_chat": chat_order_broken,
        "wall_s": wall_s, "messages_per_s": total / wall_s,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500, help="sequential messages to time")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--per-user", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the burst's answers")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-catalog", action="store_true",
                        help="no dish catalog: no taste, variety or fit check (the bot before those existed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    global CATALOG
    if not args.no_catalog:
        from model import DishCatalog

        CATALOG = DishCatalog.load()
    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp, "seq"), Path(tmp, "burst")
        for folder in (first, second):
            folder.mkdir()
            await asyncio.to_thread(run_upgrade, f"sqlite+aiosqlite:///{folder / 'history.db'}")
        seq = await sequential(first, args.messages, args.warmup)
        print(f"sequential: {seq['messages']} messages, bot path p50 {seq['p50_ms']:.2f} ms, "
              f"p95 {seq['p95_ms']:.2f} ms, mean {seq['mean_ms']:.2f} ms; service alone p50 "
              f"{seq['service_p50_ms']:.2f} ms, p95 {seq['service_p95_ms']:.2f} ms; "
              f"{seq['bot_api_calls_per_message']:.1f} Bot API calls per message; CPU per message: bot path "
              f"{seq['bot_cpu_ms_per_message']:.2f} ms, service alone {seq['service_cpu_ms_per_message']:.2f} ms")
        tg = await telegram_only(first, args.messages, args.warmup)
        seq["telegram_only_p50_ms"], seq["telegram_only_p95_ms"] = tg["p50_ms"], tg["p95_ms"]
        print(f"telegram layer alone (no store, no model): p50 {tg['p50_ms']:.2f} ms, p95 {tg['p95_ms']:.2f} ms")
        bur = await burst(second, args.users, args.per_user, args.timeout)
        print(f"burst: {bur['users']} users × {bur['per_user']} messages at once: {bur['answers_delivered']}/"
              f"{bur['messages']} answers delivered in {bur['wall_s']:.1f} s ({bur['messages_per_s']:.0f} msg/s); "
              f"lost (DB) {bur['lost_in_db']}; users out of order: DB {bur['users_out_of_order_db']}, "
              f"chat {bur['users_out_of_order_chat']}")
    if args.json:
        args.json.write_text(json.dumps({"sequential": seq, "burst": bur}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
