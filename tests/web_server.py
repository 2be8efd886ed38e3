"""The web page served for real, for the browser and API tests and bench/web_sessions.py: the real Store (SQLite),
the real Generator on a given model folder, the real ConversationService (catalog, safety notes, taste) and the page
(bot/web/server.py's `serve`, as `mechuri web` runs it) on uvicorn, on a free port of 127.0.0.1.

Two ways to run the same `serve_page`: `start_web_server`, on an event loop in a thread of the caller (tests reach
into the service), and `start_web_process`, in a process of its own (this file run as a script), so that a
benchmark's clients do not share the server's GIL. The process can write how long the service's `reply` took for
each message to a JSON-lines file (`--timings`), read once it has stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.service.conversation import ConversationService

READY = "serving "  # the line the process prints on stdout, with its URL, once it listens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WebServer:
    url: str
    database_url: str
    service: ConversationService
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    server: Any = field(default=None, repr=False)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=30)


async def serve_page(model_dir: Path, database_url: str, port: int, *, seed: int | None, max_new_tokens: int,
                     on_ready: Callable[[ConversationService, Any], None],
                     on_service: Callable[[ConversationService], None] | None = None, **settings: Any) -> None:
    """Serve the page on `model_dir` (the demo sampling, as `mechuri web --demo`) until told to exit;
    `on_ready(service, uvicorn server)` once it listens."""
    from bot.service.runtime import build_service, load_catalog, load_safety
    from bot.settings import load_settings
    from bot.store.history import Store
    from bot.web.server import serve
    from model import Generator, load_model
    from model.demo.build import DEMO_RESAMPLES, DEMO_SAMPLING

    config = load_settings(env_file=None, database_url=database_url, model_base=str(model_dir), quantization="none",
                           max_new_tokens=max_new_tokens, user_cooldown_s=0.0, **{**DEMO_SAMPLING, **settings})
    store = Store(database_url)
    await store.upgrade()
    loaded = await asyncio.to_thread(load_model, str(model_dir), quantization="none", device="cpu")
    generator = Generator(loaded, max_batch_size=config.max_batch_size, max_queue=config.max_queue)
    service = build_service(config, store, generator, catalog=load_catalog(), safety=await load_safety(),
                            max_resamples=DEMO_RESAMPLES, seed=seed)
    if on_service is not None:
        on_service(service)
    try:
        await serve(service, config, host="127.0.0.1", port=port, on_ready=lambda server: on_ready(service, server))
    finally:
        await generator.close()
        await store.close()


def start_web_server(model_dir: Path, database_url: str, *, seed: int | None = 7, max_new_tokens: int = 64,
                     timeout_s: float = 180, **settings: Any) -> WebServer:
    """Start the page in a thread of this process; returns once it listens."""
    port = free_port()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def on_ready(service: ConversationService, server: Any) -> None:
        box.update(service=service, server=server)
        ready.set()

    def run() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        try:
            loop.run_until_complete(serve_page(model_dir, database_url, port, seed=seed, max_new_tokens=max_new_tokens,
                                               on_ready=on_ready, **settings))
        except BaseException as exc:  # reported by the caller, who waits on `ready`
            box["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="web-server", daemon=True)
    thread.start()
    if not ready.wait(timeout_s) or "error" in box:
        raise RuntimeError(f"the web server did not start: {box.get('error')!r}")
    return WebServer(f"http://127.0.0.1:{port}/", database_url, box["service"], box["loop"], thread, box["server"])


@dataclass
class WebProcess:
    url: str
    database_url: str
    process: subprocess.Popen[str] = field(repr=False)

    def stop(self) -> None:
        """Ctrl-C, as a person stops `mechuri web`: uvicorn exits, the generator and the store close."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_web_process(model_dir: Path, database_url: str, *, seed: int | None = 7, max_new_tokens: int = 64,
                      timings: Path | None = None, timeout_s: float = 180) -> WebProcess:
    """Start the page in a process of its own (its errors go to this process's stderr); returns once it listens."""
    command = [sys.executable, __file__, str(model_dir), database_url, "--max-new-tokens", str(max_new_tokens)]
    command += ["--seed", str(seed)] if seed is not None else []
    command += ["--timings", str(timings)] if timings is not None else []
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    running = WebProcess("", database_url, process)

    def read_url() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(READY):
                running.url = line.removeprefix(READY).strip()
                return

    reader = threading.Thread(target=read_url, name="web-process-ready", daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not running.url:
        running.stop()
        raise RuntimeError(f"the web server process did not start (exit code {process.poll()}); see its stderr")
    return running


def time_replies(service: ConversationService, path: Path) -> None:
    """Wrap the service's `reply`: one line {"text", "s", "start", "end"} per message to `path`, its time inside the
    service (`start` and `end` on the monotonic clock, which every process on the machine shares)."""
    inner = service.reply
    out = path.open("a", encoding="utf-8")

    async def timed(chat_id: int, user_id: int, text: str, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await inner(chat_id, user_id, text, **kwargs)
        finally:
            ended = time.perf_counter()  # CLOCK_MONOTONIC: the benchmark's process reads the same clock
            out.write(json.dumps({"text": text, "s": ended - started, "start": started, "end": ended},
                                 ensure_ascii=False) + "\n")
            out.flush()

    service.reply = timed  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the page (start_web_process runs this)")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("database_url")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--timings", type=Path, help="JSON lines: the service's time for each message")
    args = parser.parse_args()
    port = free_port()
    timings = args.timings

    def announce(service: ConversationService, server: Any) -> None:
        print(f"{READY}http://127.0.0.1:{port}/", flush=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how start_web_process stops it
        asyncio.run(serve_page(args.model_dir, args.database_url, port, seed=args.seed,
                               max_new_tokens=args.max_new_tokens, on_ready=announce,
                               on_service=(lambda service: time_replies(service, timings)) if timings else None))


if __name__ == "__main__":
    main()
