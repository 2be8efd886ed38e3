"""`mechuri web`: the page served by uvicorn on the same event loop as the conversation service, its store and its
generator (one loop: the generator's futures and the users' lines belong to it).

Safe defaults: it listens on 127.0.0.1. Any other address needs logins (MECHURI_WEB_AUTH), and the start says which.
Gradio's queue takes at most MECHURI_WEB_MAX_QUEUE events at once (more get Gradio's "queue full"); it runs them all
concurrently, because the service already orders each user's turns and bounds the generations in flight
(MECHURI_MAX_CONCURRENT), and the generator batches them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from bot.service.conversation import ConversationService
from bot.settings import Settings, SettingsError

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str) -> str:
    """The line the start prints about who can reach the page; SettingsError for a non-local address without
    logins."""
    logins = settings.web_logins()
    if not is_loopback(host) and not logins:
        raise SettingsError([
            f"--host {host} makes the page reachable from other machines: set MECHURI_WEB_AUTH=user:password"
            f"[,user2:password2] first (or listen on 127.0.0.1, the default)"])
    if logins:
        admins = [name for name, _ in logins if name in settings.web_admins]
        return (f"로그인 필요 (login required): {len(logins)} account(s); admin area for: "
                f"{', '.join(admins) or 'nobody (MECHURI_WEB_ADMINS)'}")
    return "이 컴퓨터에서만 열려요 (local only, no login); no admin area without MECHURI_WEB_AUTH"


def build_app(service: ConversationService, settings: Settings, *, banner: str | None = None) -> Any:
    """The FastAPI app with the page mounted at /."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from an offline product
    import gradio as gr
    from fastapi import FastAPI

    from bot.web.admin import AdminDesk
    from bot.web.chat import WebChat
    from bot.web.page import THEME, build_page
    from bot.web.taste import TastePanel

    page = build_page(WebChat(service), TastePanel(service), AdminDesk(service, settings.web_admins), banner=banner)
    page.queue(max_size=settings.web_max_queue, default_concurrency_limit=None)
    app = FastAPI()
    return gr.mount_gradio_app(app, page, path="", auth=settings.web_logins() or None, theme=THEME,
                               footer_links=["api"], ssr_mode=False, show_error=False,
                               run_history=False)  # it would keep inputs, the browser key among them, in localStorage


async def serve(service: ConversationService, settings: Settings, *, host: str, port: int,
                banner: str | None = None, on_ready: Callable[[Any], None] | None = None) -> None:
    """Serve until cancelled (or Ctrl-C). `on_ready(server)` runs once it listens (tests stop it with
    `server.should_exit = True`)."""
    import uvicorn

    exposure = check_exposure(settings, host)
    config = uvicorn.Config(build_app(service, settings, banner=banner), host=host, port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    watcher = asyncio.ensure_future(_announce(server, host, port, exposure, on_ready))
    try:
        await server.serve()
    finally:
        watcher.cancel()


async def _announce(server: Any, host: str, port: int, exposure: str, on_ready: Callable[[Any], None] | None) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    shown = f"[{host}]" if ":" in host else host
    print(f"메추리 웹 페이지: http://{shown}:{port}/  ({exposure})", file=sys.stderr, flush=True)
    if on_ready is not None:
        on_ready(server)


async def web_main(settings: Settings, *, host: str, port: int, demo: bool = False, adapter: str | None = None,
                   device: str | None = None, banner: str | None = None) -> int:
    """Load the store, the generator and the service as `mechuri bot` does, then serve the page until Ctrl-C."""
    from bot.service.runtime import build_service, load_catalog, load_safety, start_generator
    from bot.store.history import Store
    from model.demo.build import DEMO_RESAMPLES

    check_exposure(settings, host)  # before minutes of model loading
    store = Store(settings.database_url)
    generator: Any = None
    try:
        await store.upgrade()
        await store.recover()
        # The demo model is its own base: an adapter configured for the real model must not be put on it.
        generator = await start_generator(settings, adapter=adapter, device=device, use_configured_adapter=not demo)
        service = build_service(settings, store, generator, catalog=load_catalog(), safety=await load_safety(),
                                max_resamples=DEMO_RESAMPLES if demo else 3)
        if service.taste is not None:
            service.taste.preload()
        await serve(service, settings, host=host, port=port, banner=banner)
    finally:
        if generator is not None:
            await generator.close()
        await store.close()
    return 0
