"""`mechuri chat`: the terminal front end, over the same ConversationService as the Telegram bot.

Each input line is a message. `다른 거` (or `/retry`) turns down the latest answer, `/reset` starts a new conversation,
`/forget` deletes everything stored for this user, `/taste` shows and edits the taste profile (bot/chat_taste.py),
`/quit` ends. A taste statement ("나 새우 알레르기 있어") is confirmed on the next line (y/N) before it is remembered. Answers go to stdout after the marker "메추리> ":
streamed as they are generated in a terminal, one line per answer when piped, so the command is scriptable:

    printf '매운 요리 추천해줘\\n다른 거\\n' | mechuri chat --model DIR --database-url sqlite+aiosqlite:///x.db
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from bot import chat_taste
from bot.conversation import Answer, ConversationBusy, ConversationService, RetryRefused
from bot.runtime import load_catalog, start_generator
from bot.settings import Settings
from bot.storage import Store

log = logging.getLogger(__name__)

MARKER = "메추리> "
YOU = "나> "
LOCAL_CHAT_ID = 0  # the terminal is one private chat of one local user
LOCAL_USER_ID = 0
RETRY_WORDS = {"다른 거", "다른거", "/retry"}
QUIT_WORDS = {"/quit", "/exit", "/q"}
HELP = (
    "메시지를 입력하면 메뉴를 추천해 드려요. '다른 거' 또는 /retry: 다른 메뉴, /reset: 새 대화, "
    "/forget: 내 기록 모두 지우기, /taste: 내 입맛 보기·고치기, /quit: 끝내기"
)
BUSY_TEXT = "지금은 요청이 많아요. 잠시 후 다시 시도해 주세요."
NOTHING_TO_RETRY = "아직 다시 고를 답변이 없어요. 먼저 질문해 주세요."


class _Printer:
    """Writes one answer: live while streaming, then makes sure the final text is what stands on the line."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.shown = out, ""

    async def partial(self, text: str) -> None:
        text = text.lstrip()
        if not text:
            return
        if not self.shown:
            self.out.write(MARKER)
        elif not text.startswith(self.shown):
            # A resample (the first try named a dish the user turned down) starts over on a new line.
            self.out.write("\n" + MARKER)
            self.shown = ""
        self.out.write(text[len(self.shown):])
        self.out.flush()
        self.shown = text

    def final(self, answer: Answer) -> None:
        if self.shown and answer.text.startswith(self.shown):
            self.out.write(answer.text[len(self.shown):] + "\n")
        else:
            if self.shown:
                self.out.write("\n")
            self.out.write(MARKER + answer.text + "\n")
        if answer.notice:
            self.out.write(f"({answer.notice})\n")
        self.out.flush()


def say(out: TextIO, text: str) -> None:
    out.write(MARKER + text + "\n")
    out.flush()


async def run_chat(
    service: ConversationService,
    lines_in: Iterable[str],
    out: TextIO,
    *,
    chat_id: int = LOCAL_CHAT_ID,
    user_id: int = LOCAL_USER_ID,
    stream: bool = False,
) -> int:
    """Talk until the lines run out or `/quit`. The hook for other front ends (e.g. a scripted demo)."""
    lines: Iterator[str] = iter(lines_in)
    last: Answer | None = None
    unread: str | None = None  # a line read as a y/N answer that was a new message instead
    while True:
        # Reading stdin blocks; a thread keeps the event loop (and the generator's callbacks) free meanwhile.
        raw, unread = (unread, None) if unread is not None else (await asyncio.to_thread(next, lines, None), None)
        if raw is None:
            return 0
        text = raw.strip()
        if not text:
            continue
        if text in QUIT_WORDS:
            return 0
        if text in ("/help", "/start"):
            say(out, HELP)
            continue
        if text == "/reset":
            await service.reset(chat_id, user_id)
            last = None
            say(out, "새 대화를 시작할게요. 무엇이 드시고 싶으세요?")
            continue
        if text == "/forget":
            deleted = await service.forget(chat_id, user_id)
            last = None
            say(out, f"저장된 기록을 모두 지웠어요 ({deleted}개).")
            continue
        if text == "/taste" or text.startswith("/taste "):
            say(out, await chat_taste.command(service, user_id, text))
            continue
        printer = _Printer(out)
        on_partial = printer.partial if stream else None
        try:
            if text in RETRY_WORDS:
                if last is None or last.status != "ok":
                    say(out, NOTHING_TO_RETRY)
                    continue
                answer = await service.retry(chat_id, user_id, last.turn_id, on_partial=on_partial)
            else:
                answer = await service.reply(chat_id, user_id, raw.rstrip("\n"), on_partial=on_partial)
        except RetryRefused as refused:
            say(out, refused.reason)
            continue
        except ConversationBusy:
            say(out, BUSY_TEXT)
            continue
        if answer.status == "ask":  # a taste statement: y/N first, then the question it came with, if any
            followed, unread = await chat_taste.confirm(
                service, answer, lambda: asyncio.to_thread(next, lines, None), lambda t: say(out, t),
                chat_id=chat_id, user_id=user_id, on_partial=on_partial,
            )
            if followed is None:
                continue
            answer = followed
        printer.final(answer)
        last = answer
        log.debug("turn %d (question %d): seed %d, %s", answer.turn_id, answer.question_turn_id, answer.seed,
                  answer.status)


def stdin_lines(prompt: str | None) -> Iterator[str]:
    if prompt is None:
        yield from sys.stdin
        return
    while True:
        try:
            yield input(prompt)
        except EOFError:
            print(file=sys.stderr)
            return


async def load_generator(settings: Settings, args: argparse.Namespace) -> Any:
    """The real generator on `settings.model_base`. Tests replace this function to run the CLI on a fake."""
    # The demo model is its own base: an adapter configured for the real model must not be put on it.
    demo = getattr(args, "demo", False) or getattr(args, "demo_quick", False)
    return await start_generator(settings, adapter=args.adapter, device=args.device, use_configured_adapter=not demo)


async def chat_main(settings: Settings, args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        logging.getLogger("alembic").setLevel(logging.WARNING)  # the migration log is noise in a chat
    store = Store(settings.database_url)
    generator: Any = None
    try:
        await store.upgrade()
        await store.recover()
        generator = await load_generator(settings, args)
        service = ConversationService.from_settings(settings, store, generator, catalog=load_catalog())
        if getattr(args, "seed", None) is not None:
            service.seed_source = functools.partial(random.Random(args.seed).getrandbits, 31)
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        if interactive and service.taste is not None:
            service.taste.preload()  # Kiwi starts in the background while the user types (piped runs need not wait)
        if interactive:
            print(f"메추리 ({settings.model_base}). {HELP}", file=sys.stderr)
        return await run_chat(
            service, stdin_lines(YOU if interactive else None), sys.stdout,
            chat_id=args.chat_id, user_id=args.user_id, stream=interactive,
        )
    finally:
        if generator is not None:
            await generator.close()
        await store.close()
