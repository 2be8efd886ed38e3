"""Web sessions: what the page (`mechuri web`) adds per message over the conversation service alone, and that many
browsers at once lose nothing and keep each one's order.

The page is served as deployed, in a process of its own (tests/web_server.py's `start_web_process`: bot/web/server.py
on uvicorn + Gradio's queue on the service's event loop, the real Generator on the demo model, SQLite), and driven
through its HTTP API from this process, each session a browser with its own key: with gradio_client (one Client per
session), and with httpx speaking Gradio's queue protocol itself (gradio_client polls its received messages every
50 ms, which would be counted as the page's). Each message's time as the client sees it is paired with the time the
service's `reply` took for that same message inside the server (the server process writes it to a file, read once it
has stopped): the difference is the page's overhead (HTTP, Gradio's queue and streaming, bot/web/chat.py), whatever
the model took.

1. Sequential: one session, messages one after another: the overhead's p50 / p95 (target p50 <= 20 ms).
2. Concurrent: N sessions at once, each sending M messages in turn (a person waits for the answer before the next),
   through each client: the overhead under load, throughput, and from the database: every question stored and
   answered, each session's turns in the order sent, and the page's last history equal to the stored conversation.

    .venv/bin/python bench/web_sessions.py                      # the demo model (built once, cached), 20 × 5
    .venv/bin/python bench/web_sessions.py --model DIR --sessions 20 --messages 5 --docs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from web_server import WebProcess, start_web_process  # noqa: E402

from bench.common import append_docs, command_line, cpu_line, markdown_table, today  # noqa: E402
from bot.store.users import new_browser_key, web_user_id  # noqa: E402

QUESTIONS = ("매운 요리 추천해줘", "아침에 간단하게 먹을 수 있는 음식 추천해줘", "비 오는 날 뭐 먹지", "해장 추천해줘",
             "가볍게 먹을 점심 메뉴 알려줘", "친구들이랑 먹을 저녁 추천해줘")


def session(server: WebProcess, name: str, messages: int) -> dict[str, Any]:
    """One browser sending `messages` questions, each after the last answer; each unique, to pair it with the
    service's time for it."""
    from gradio_client import Client

    api = Client(server.url, verbose=False)
    key = new_browser_key()
    history: list[Any] = []
    totals, sent, starts = [], [], []
    for i in range(messages):
        text = f"{QUESTIONS[i % len(QUESTIONS)]} ({name}-{i})"
        started = time.perf_counter()
        history = api.predict(text, history, key, api_name="/send")
        totals.append(time.perf_counter() - started)
        starts.append(started)
        sent.append(text)
    api.close()
    return {"key": key, "sent": sent, "history": history, "totals": totals, "starts": starts}


def raw_session(server: WebProcess, name: str, messages: int) -> dict[str, Any]:
    """`session` through the page's queue protocol itself (POST queue/join, then the event stream of
    queue/data) with httpx: gradio_client polls its received messages every 50 ms, which would be measured as the
    page's overhead."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=300) as http:
        config = http.get("config").json()
        prefix = config.get("api_prefix", "/gradio_api").strip("/")
        send = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "send")
        key, history = new_browser_key(), []
        totals, sent, starts = [], [], []
        session_hash = f"{name}-{key[:8]}"  # one per session, as a browser tab (and gradio_client) keeps one
        for i in range(messages):
            text = f"{QUESTIONS[i % len(QUESTIONS)]} ({name}-{i})"
            started = time.perf_counter()
            http.post(f"{prefix}/queue/join", json={"data": [text, history, key], "event_data": None,
                                                     "fn_index": send, "trigger_id": None,
                                                     "session_hash": session_hash}).raise_for_status()
            with http.stream("GET", f"{prefix}/queue/data", params={"session_hash": session_hash}) as events:
                for line in events.iter_lines():
                    message = json.loads(line[5:]) if line.startswith("data:") else {}
                    if message.get("msg") == "process_completed":
                        history = message["output"]["data"][0]
                        break
            totals.append(time.perf_counter() - started)
            starts.append(started)
            sent.append(text)
    return {"key": key, "sent": sent, "history": history, "totals": totals, "starts": starts}


def check(server: WebProcess, results: list[dict[str, Any]]) -> list[str]:
    """Problems found in the database: a lost or unanswered question, turns out of order, a page history that is
    not the stored conversation."""
    path = server.database_url.removeprefix("sqlite+aiosqlite:///")
    problems = []
    with sqlite3.connect(path) as db:
        for result in results:
            user = web_user_id(result["key"])
            turns = db.execute(
                "SELECT t.id, t.role, t.text, t.reply_to, t.status FROM turns t JOIN conversations c "
                "ON c.id = t.conversation_id WHERE c.user_id = ? ORDER BY t.id", (user,)).fetchall()
            questions = [t for t in turns if t[1] == "user"]
            if [t[2] for t in questions] != result["sent"]:
                problems.append(f"user {user}: questions stored {len(questions)} of {len(result['sent'])} or "
                                f"out of order")
            for question, answer in zip(turns[::2], turns[1::2], strict=False):
                if answer[1] != "assistant" or answer[3] != question[0] or answer[4] != "ok":
                    problems.append(f"user {user}: question {question[0]} not answered next")
            if len(turns) != 2 * len(result["sent"]):
                problems.append(f"user {user}: {len(turns)} turns for {len(result['sent'])} messages")
            page = [_text(m) for m in result["history"]]
            if page != [t[2] for t in turns]:
                problems.append(f"user {user}: the page's history differs from the stored conversation")
    return problems


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def drive(server: WebProcess, args: argparse.Namespace) -> dict[str, Any]:
    """The sequential runs, then the sessions at once through each client; every session's result, and the wall
    time of each concurrent run."""
    session(server, "warm", 2)
    runs: dict[str, Any] = {"raw": raw_session(server, "raw", args.sequential),
                            "sequential": session(server, "seq", args.sequential)}
    for name, client in (("together_raw", raw_session), ("together", session)):
        started = time.perf_counter()
        with ThreadPoolExecutor(args.sessions) as pool:
            runs[name] = list(pool.map(lambda n, c=client, k=name: c(server, f"{k}{n}", args.messages),
                                       range(args.sessions)))
        runs[f"{name}_wall"] = time.perf_counter() - started
    return runs


def add_overheads(results: list[dict[str, Any]], timings: Path) -> None:
    """Pair each message's time at the client with the service's time for it (the server's file, by the message's
    text): the page's overhead."""
    took = {row["text"]: row for row in map(json.loads, timings.read_text(encoding="utf-8").splitlines())}
    for result in results:
        paired = list(zip(result["sent"], result["starts"], result["totals"], strict=True))
        result["overheads"] = [total - took[text]["s"] for text, _, total in paired]
        # Both processes read the same monotonic clock: the page's time before the service began, and after it.
        result["before"] = [took[text]["start"] - start for text, start, _ in paired]
        result["after"] = [start + total - took[text]["end"] for text, start, total in paired]


def run(args: argparse.Namespace) -> str:
    model = Path(args.model) if args.model else demo_model()
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "service-times.jsonl"
        server = start_web_process(model, f"sqlite+aiosqlite:///{Path(tmp) / 'web.db'}", seed=None,
                                   max_new_tokens=args.max_new_tokens, timings=timings)
        try:
            runs = drive(server, args)
        finally:
            server.stop()  # before reading the timings and the database: the server has written all it will
        results = [runs["raw"], runs["sequential"], *runs["together_raw"], *runs["together"]]
        add_overheads(results, timings)
        problems = check(server, results)
    return report(args, model, runs, problems)


def row(label: str, results: list[dict[str, Any]], wall: float | None) -> list[object]:
    overheads = [o for r in results for o in r["overheads"]]
    totals = [t for r in results for t in r["totals"]]
    before, after = ([o for r in results for o in r[part]] for part in ("before", "after"))
    return [label, len(totals), f"{ms(overheads, 0.5):.1f}", f"{ms(overheads, 0.95):.1f}",
            f"{ms(before, 0.5):.1f} / {ms(after, 0.5):.1f}", f"{ms(totals, 0.5):.0f}",
            f"{len(totals) / wall:.1f}" if wall else "-"]


def report(args: argparse.Namespace, model: Path, runs: dict[str, Any], problems: list[str]) -> str:
    at_once = f"{args.sessions} sessions at once, {args.messages} messages each"
    rows = [row("1 session, one message at a time, the queue protocol (httpx)", [runs["raw"]], None),
            row("1 session, one message at a time, gradio_client", [runs["sequential"]], None),
            row(f"{at_once}, the queue protocol (httpx)", runs["together_raw"], runs["together_raw_wall"]),
            row(f"{at_once}, gradio_client", runs["together"], runs["together_wall"])]
    table = markdown_table(["run", "messages", "page overhead p50 (ms)", "p95 (ms)",
                            "before / after the service, p50 (ms)", "message p50 (ms)", "messages/s"], rows)
    kept = "none: every question stored and answered, each session in order, page = database" if not problems \
        else "; ".join(problems[:5])
    return (f"Machine: {cpu_line()}; load before {args.load_before}; after {os.getloadavg()[0]:.1f}; {today()}; "
            f"model {model}; {args.max_new_tokens} new tokens; the server in its own process.  \n"
            f"Command: `{command_line()}`\n\n{table}\n\nLost or out of order: {kept}.\n")


def demo_model() -> Path:
    from model import DemoRecipe, build_demo_model, demo_dir

    return build_demo_model(demo_dir(DemoRecipe()), progress=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the demo model, built once and cached)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=30, help="messages of the one-session run")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--docs", action="store_true", help="append the result to docs/benchmarks.md")
    args = parser.parse_args()
    args.load_before = f"{os.getloadavg()[0]:.1f}"
    body = run(args)
    print(body)
    if args.docs:
        append_docs("Web sessions: the page's overhead and order (issue 24)", body)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
