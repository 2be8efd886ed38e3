"""`mechuri chat`: the terminal front end, over the same ConversationService as the Telegram bot.

Each input line is a message. `다른 거` (or `/retry`) turns down the latest answer; the commands are the Telegram bot's:
`/help`, `/reset` (a new conversation), `/forget` (deletes everything stored for this user after a y/N question, read
from the next line), `/status` and `/reload NAME` (admin commands in Telegram; the terminal's user is the operator, so
they work here), `/taste` (shows and edits the taste profile, bot/terminal/taste.py), `/quit`. Any other line that starts
with "/" gets the help hint and never reaches the model. A taste statement ("나 새우 알레르기 있어") is confirmed on the
next line (y/N) before it is remembered. Answers go to stdout after the marker "메추리> ":
streamed as they are generated in a terminal, one line per answer when piped, so the command is scriptable:

    printf '매운 요리 추천해줘\\n다른 거\\n' | mechuri chat --model DIR --database-url sqlite+aiosqlite:///x.db
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from bot.service import replies
from bot.service.contract import Answer, ConversationBusy, RetryRefused
from bot.service.conversation import ConversationService
from bot.service.runtime import build_service, load_catalog, load_safety, start_generator
from bot.settings import Settings
from bot.store.history import Store
from bot.terminal import taste as terminal_taste
from model.demo.build import DEMO_RESAMPLES

log = logging.getLogger(__name__)

MARKER = "메추리> "
YOU = "나> "
LOCAL_CHAT_ID = 0  # the terminal is one private chat of one local user
LOCAL_USER_ID = 0
RETRY_WORDS = {"다른 거", "다른거", "/retry"}
QUIT_WORDS = {"/quit", "/exit", "/q"}
YES_WORDS = {"y", "yes", "네", "예", "응", "ㅇ", "ㅇㅇ"}
HELP = (
    "먹고 싶은 분위기를 말하면 메뉴를 골라 드려요. 한 줄에 메시지 하나예요.\n"
    "  다른 거 (또는 /retry)  방금 추천 말고 다른 메뉴\n"
    "  /reset   새 대화 시작 (이전 이야기는 참고하지 않아요)\n"
    "  /forget  저장된 내 기록 모두 지우기 (y/N로 한 번 더 물어봐요)\n"
    "  /taste   내 입맛 보기·고치기 (알레르기, 식단, 싫어하는 것)\n"
    "  /status  모델과 어댑터 상태 (이 터미널에서 바로 볼 수 있어요)\n"
    "  /reload 이름  어댑터 폴더의 어댑터로 바꾸기 (이 터미널에서 바로 돼요)\n"
    "  /help    이 도움말   /quit  끝내기"
)
NOTHING_TO_RETRY = "아직 다시 고를 답변이 없어요. 먼저 질문해 주세요."
NO_RETRY_HERE = "이 답변은 다시 고를 수 없어요. 새로 질문해 주세요."
FORGET_ASK = f"{replies.FORGET_ASK} [y/N]"


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
    session = _Session(service, iter(lines_in), out, chat_id, user_id, stream)
    while True:
        raw = await session.read()
        if raw is None:
            return 0
        text = raw.strip()
        if not text:
            continue
        if text in QUIT_WORDS:
            return 0
        if text in RETRY_WORDS:
            await session.retry()
        elif text.startswith("/") and len(text) > 1 and not text[1].isspace():
            await session.command(text)  # never sent to the model, known or not
        else:
            await session.ask(raw.rstrip("\n"))


class _Session:
    """One terminal conversation: the latest answer (for "다른 거") and the commands, as the Telegram bot has them."""

    def __init__(self, service: ConversationService, lines: Iterator[str], out: TextIO, chat_id: int, user_id: int,
                 stream: bool) -> None:
        self.service, self.lines, self.out = service, lines, out
        self.chat_id, self.user_id, self.stream = chat_id, user_id, stream
        self.last: Answer | None = None
        self.unread: str | None = None  # a line read as a y/N answer that was a new message instead

    async def read(self) -> str | None:
        if self.unread is not None:
            line, self.unread = self.unread, None
            return line
        # Reading stdin blocks; a thread keeps the event loop (and the generator's callbacks) free meanwhile.
        return await asyncio.to_thread(next, self.lines, None)

    async def ask(self, text: str) -> None:
        await self._run(lambda on_partial: self.service.reply(self.chat_id, self.user_id, text, on_partial=on_partial))

    async def retry(self) -> None:
        if self.last is None or self.last.status != "ok":
            say(self.out, NOTHING_TO_RETRY)
            return
        if not self.last.can_retry:
            say(self.out, NO_RETRY_HERE)
            return
        turn_id = self.last.turn_id
        await self._run(lambda on_partial: self.service.retry(self.chat_id, self.user_id, turn_id,
                                                              on_partial=on_partial))

    async def _run(self, call: Any) -> None:
        printer = _Printer(self.out)
        on_partial = printer.partial if self.stream else None
        try:
            answer = await call(on_partial)
            if answer.status != "ask" and answer.confirm:  # answered at once; "기억해 둘까요?" after the answer
                printer.final(answer)
                self.last = answer
                if answer.learn_id:  # "국물 요리는 별로세요? 앞으로 덜 추천할까요?"
                    self.unread = await terminal_taste.learned(
                        self.service, answer, lambda: asyncio.to_thread(next, self.lines, None),
                        lambda text: say(self.out, text), user_id=self.user_id)
                    return
                _, self.unread = await terminal_taste.confirm(
                    self.service, answer, lambda: asyncio.to_thread(next, self.lines, None),
                    lambda text: say(self.out, text), chat_id=self.chat_id, user_id=self.user_id)
                return
            if answer.status == "ask":  # a taste statement: y/N first, then the question it came with, if any
                answer, self.unread = await terminal_taste.confirm(
                    self.service, answer, lambda: asyncio.to_thread(next, self.lines, None),
                    lambda text: say(self.out, text), chat_id=self.chat_id, user_id=self.user_id,
                    on_partial=on_partial,
                )
        except RetryRefused as refused:
            say(self.out, refused.reason)
            return
        except ConversationBusy:
            say(self.out, replies.BUSY)
            return
        if answer is None:
            return
        printer.final(answer)
        self.last = answer
        log.debug("turn %d (question %d): seed %d, %s", answer.turn_id, answer.question_turn_id, answer.seed,
                  answer.status)

    async def command(self, text: str) -> None:
        name, _, arg = text.partition(" ")
        if name in ("/help", "/start"):
            say(self.out, HELP)
        elif name == "/reset":
            await self.service.reset(self.chat_id, self.user_id)
            self.last = None
            say(self.out, replies.RESET_DONE)
        elif name == "/forget":
            await self.forget()
        elif name == "/status":
            say(self.out, replies.format_status(self.service.status()))
        elif name == "/reload":
            say(self.out, await self.service.reload_report(arg.strip()) if arg.strip() else replies.RELOAD_USAGE)
        elif name == "/taste":
            say(self.out, await terminal_taste.command(self.service, self.user_id, text))
        else:
            say(self.out, replies.HELP_HINT)

    async def forget(self) -> None:
        say(self.out, FORGET_ASK)
        answer = await self.read()
        if answer is None or answer.strip().lower() not in YES_WORDS:
            say(self.out, replies.FORGET_CANCELLED)
            return
        deleted = await self.service.forget(self.chat_id, self.user_id)
        self.last = None
        say(self.out, replies.forgotten(deleted))


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
    demo = getattr(args, "demo", False) or getattr(args, "demo_quick", False)
    store = Store(settings.database_url)
    generator: Any = None
    try:
        await store.upgrade()
        await store.recover()
        generator = await load_generator(settings, args)
        # A sample of the demo model costs a tenth of a second: its chat may draw more of them (model/demo/build.py).
        service = build_service(settings, store, generator, catalog=load_catalog(), safety=await load_safety(),
                                paced=False, max_resamples=DEMO_RESAMPLES if demo else 3,
                                seed=getattr(args, "seed", None))
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        if interactive and service.taste is not None:
            service.taste.preload()  # Kiwi starts in the background while the user types (piped runs need not wait)
        if interactive:
            print(f"메추리 ({settings.model_base})\n{HELP}", file=sys.stderr)
        return await run_chat(
            service, stdin_lines(YOU if interactive else None), sys.stdout,
            chat_id=args.chat_id, user_id=args.user_id, stream=interactive,
        )
    finally:
        if generator is not None:
            await generator.close()
        await store.close()
