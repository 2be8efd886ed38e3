"""Two bot replicas behind webhooks on one PostgreSQL database: throughput, bot overhead, and nothing lost or reordered.

Everything is real but the model and Telegram: `run_bot(webhook=True)` processes (tests/replica_fixtures.py) with a
generator that answers at once, a throwaway PostgreSQL 15 server (tests/pg_server.py), and the fake Bot API over HTTP
(tests/fake_bot_api.py), which also POSTs the updates, each user's messages alternating between the replicas (as a
round-robin load balancer would send them). So every millisecond measured is bot overhead: webhook request, storing
the question before the 200, the user lock in PostgreSQL, history, answer, Bot API calls.

1. Sequential: one message at a time, alternating replicas: p50/p95 from the POST to the final answer's sendMessage,
   and to the 200.
2. Burst: U users × M messages, users at once, each user's next message sent when the previous one got its 200.
   Messages per second; every answer must arrive, once, in the order sent (checked in the chats and the database).

Run side by side with a single replica (same database server, same load) for the ratio.

    .venv/bin/python bench/replicas.py                  # 2 replicas (and 1 for comparison), 200 users × 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from databases import PostgresDatabase  # noqa: E402
from fake_bot_api import FakeBotAPI, FakeBotServer  # noqa: E402
from pg_server import TEMPLATE, start_server  # noqa: E402
from replica_fixtures import KEYBOARD, ReplicaProcess, answers_in, check_order, send_users  # noqa: E402


def text(user: int, m: int) -> str:
    return f"u{user} m{m}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def answer_times(api: FakeBotAPI) -> dict[str, float]:
    """When each answer's final message (the one with the keyboard) reached the Bot API, by question text."""
    found = {}
    for call in api.calls_to("sendMessage"):
        body = call.params.get("text") or ""
        if call.params.get(KEYBOARD) and body.startswith("["):
            found.setdefault(body[1:].split("]", 1)[0], call.at)
    return found


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run(server, count: int, users: int, per_user: int, sequential: int, workdir: Path) -> dict[str, float]:
    db = PostgresDatabase(server, server.create_database(template=TEMPLATE))
    api = FakeBotAPI()
    with FakeBotServer(api) as bot_api:
        replicas = [ReplicaProcess(i, db.url, bot_api.base_url, workdir, delay=0.0, log_level="WARNING")
                    for i in range(count)]
        try:
            for replica in replicas:
                replica.wait_ready()
            # 1. one at a time
            latencies, acks = [], []
            seq_user = 1_000_000
            for i in range(sequential):
                question = f"s{i}"
                started = time.monotonic()
                status, _ = api.deliver(api.message_update(seq_user + i % 10, seq_user + i % 10, question),
                                        url=replicas[i % count].url)
                acks.append(time.monotonic() - started)
                assert status == 200
                assert wait_for(lambda q=question: q in answer_times(api), 30), f"no answer to {question}"
                latencies.append(answer_times(api)[question] - started)
            # 2. the burst
            user_ids = list(range(1, users + 1))
            started = time.monotonic()
            burst_acks = send_users(api, replicas, user_ids, per_user, text)
            total = users * per_user
            complete = wait_for(lambda: sum(len(answers_in(api, u)) for u in user_ids) == total, 600)
            wall = time.monotonic() - started
            delivered = sum(len(answers_in(api, u)) for u in user_ids)
            chat_order = sum(
                1 for u in user_ids
                if answers_in(api, u) != [f"[{text(u, m)}] 국밥 어때요?" for m in range(per_user)])
            counts = check_order(db, user_ids, per_user, text)
        finally:
            for replica in replicas:
                replica.stop()
    db.close()
    server.drop_database(db.name)
    return {
        "replicas": count, "sequential": sequential, "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000, "ack_p50_ms": percentile(acks, 50) * 1000,
        "ack_p95_ms": percentile(acks, 95) * 1000, "users": users, "per_user": per_user, "messages": total,
        "delivered": delivered, "complete": complete, "wall_s": wall, "messages_per_s": total / wall,
        "burst_ack_p50_ms": percentile(burst_acks, 50) * 1000, "burst_ack_p95_ms": percentile(burst_acks, 95) * 1000,
        "lost": counts["lost"], "out_of_order_db": counts["out_of_order"], "out_of_order_chat": chat_order,
        "double_answers": counts["double_answers"], "mean_ms": statistics.fmean(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--per-user", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=200, help="messages timed one at a time")
    parser.add_argument("--no-single", action="store_true", help="skip the one-replica run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    server = start_server()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for count in ([2] if args.no_single else [2, 1]):
                results.append(run(server, count, args.users, args.per_user, args.sequential, Path(tmp)))
    finally:
        server.stop()
    print(f"Machine: {platform.machine()}, {platform.python_version()}, PostgreSQL at {server.bindir}")
    print("| replicas | sequential p50 | p95 | 200 p50 / p95 | burst | delivered | msg/s | burst 200 p50 / p95 "
          "| lost | out of order (DB / chat) | double answers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['replicas']} | {r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms | {r['ack_p50_ms']:.1f} / "
              f"{r['ack_p95_ms']:.1f} ms | {r['users']} × {r['per_user']} | {r['delivered']} / {r['messages']} | "
              f"{r['messages_per_s']:.0f} | {r['burst_ack_p50_ms']:.1f} / {r['burst_ack_p95_ms']:.1f} ms | "
              f"{r['lost']} | {r['out_of_order_db']} / {r['out_of_order_chat']} | {r['double_answers']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
