"""The web page served for real, for the browser and API tests and bench/web_sessions.py: the real Store (SQLite),
the real Generator on a given model folder, the real ConversationService (catalog, safety notes, taste) and the page
on uvicorn, all on one event loop in a thread of their own, on a free port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.service.conversation import ConversationService


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


def start_web_server(model_dir: Path, database_url: str, *, seed: int | None = 7, max_new_tokens: int = 64,
                     timeout_s: float = 180, **settings: Any) -> WebServer:
    """Start the page on `model_dir` (the demo sampling, as `mechuri web --demo`); returns once it listens."""
    from bot.service.runtime import build_service, load_catalog, load_safety
    from bot.settings import load_settings
    from bot.store.history import Store
    from bot.web.server import serve
    from model import Generator, load_model
    from model.demo.build import DEMO_RESAMPLES, DEMO_SAMPLING

    config = load_settings(env_file=None, database_url=database_url, model_base=str(model_dir), quantization="none",
                           max_new_tokens=max_new_tokens, user_cooldown_s=0.0,
                           **{**DEMO_SAMPLING, **settings})
    port = free_port()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        store = Store(database_url)
        await store.upgrade()
        loaded = await asyncio.to_thread(load_model, str(model_dir), quantization="none", device="cpu")
        generator = Generator(loaded, max_batch_size=config.max_batch_size, max_queue=config.max_queue)
        service = build_service(config, store, generator, catalog=load_catalog(), safety=await load_safety(),
                                max_resamples=DEMO_RESAMPLES, seed=seed)
        box["service"] = service

        def on_ready(server: Any) -> None:
            box["server"] = server
            ready.set()

        try:
            await serve(service, config, host="127.0.0.1", port=port, on_ready=on_ready)
        finally:
            await generator.close()
            await store.close()

    def run() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        try:
            loop.run_until_complete(main())
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
