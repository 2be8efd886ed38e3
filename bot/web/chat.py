"""The web page's chat: each Gradio event of the page (bot/web/page.py) is one method here, and each calls the
conversation service. No conversation rules in here: the service orders, stores, answers, retries and votes; this
turns its answers into the Chatbot's messages, streamed, and its refusals into polite lines.

A browser is a user: its BrowserState holds a random key, and bot/store/users.py `web_user_id` turns the key into
the user's id (negative: never a Telegram id). A web user's chat id is their user id (a private chat).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.service import replies
from bot.service.contract import Answer, ConversationBusy, RetryRefused, TasteChoice
from bot.service.conversation import ConversationService
from bot.service.ordering import Place, Refused
from bot.store.users import new_browser_key, web_user_id

log = logging.getLogger(__name__)

Message = dict[str, str]
History = list[Message]
MAX_MESSAGE_CHARS = 2000  # the textbox's limit too; the service trims what the model cannot read
WAITING = "…"
STREAM_INTERVAL_S = 0.1  # a person reads no faster; Telegram's edits are a second apart
NOTHING_TO_RETRY = "아직 다시 고를 답변이 없어요. 먼저 질문해 주세요."
NOTHING_TO_VOTE = "아직 평가할 답변이 없어요. 먼저 질문해 주세요."
NOTHING_TO_CONFIRM = "확인할 입맛 이야기가 없어요."
THANKS_UP = "고마워요! 다음 추천에 참고할게요."
THANKS_DOWN = "아쉬워요. '🔄 다른 거'를 누르면 다른 메뉴를 골라 드릴게요."
THANKS_DOWN_NO_RETRY = "아쉬워요. 알려 주셔서 고마워요. 다음 추천에 참고할게요."
RELOAD_PAGE = "이 브라우저를 알아보지 못했어요. 페이지를 새로 고쳐 주세요."


@dataclass(frozen=True)
class Latest:
    """What the page's buttons act on: the latest answer, and a taste statement waiting for 예/아니요."""

    turn_id: int = 0
    can_retry: bool = False
    can_vote: bool = False
    asking: int = 0  # the user turn whose taste statement waits for 예/아니요 (0: none)

    @classmethod
    def of(cls, answer: Answer | None) -> Latest:
        if answer is None or answer.turn_id == 0:
            return cls(asking=answer.question_turn_id if answer is not None and answer.status == "ask" else 0)
        return cls(answer.turn_id, answer.status == "ok" and answer.can_retry, answer.can_vote)


# The chat as it now stands, and what the buttons act on (None: unchanged since the answer's first update).
Update = tuple[History, Latest | None]


def said(role: str, text: str) -> Message:
    return {"role": role, "content": text}


def shown(answer: Answer) -> str:
    return answer.text + (f"\n\n({answer.notice})" if answer.notice else "")


class BadBrowser(Exception):
    """The page sent no usable browser key (a hand-made request): nothing is stored for it."""


def user_of(key: Any) -> int:
    try:
        return web_user_id(key)
    except (TypeError, ValueError, AttributeError):
        raise BadBrowser from None


def _user_or_none(key: Any) -> int | None:
    try:
        return user_of(key)
    except BadBrowser:
        return None


class WebChat:
    def __init__(self, service: ConversationService) -> None:
        self.service = service

    # --- the page opens ---------------------------------------------------------------------------------------

    async def open(self, key: Any) -> tuple[str, History, Latest]:
        """The browser's key (a new one for a new browser) and its open conversation, as it last saw it."""
        try:
            user = user_of(key)
        except BadBrowser:
            key = new_browser_key()
            return key, [], Latest()
        history: History = []
        latest = Latest()
        for turn in await self.service.open_history(user, user):
            if turn.role == "user":
                history.append(said("user", turn.text))
                continue
            history.append(said("assistant", turn.text or replies.FAILED_TEXT))
            latest = Latest(turn.id, turn.status == "ok", turn.status == "ok" and bool(turn.completion))
        return key, history, latest

    # --- messages and buttons -----------------------------------------------------------------------------------

    async def send(self, text: str, history: History, key: Any) -> AsyncIterator[Update]:
        text = (text or "").strip()[:MAX_MESSAGE_CHARS]
        history = [*(history or [])]
        if not text:
            return
        history.append(said("user", text))
        user = _user_or_none(key)
        if user is None:
            yield [*history, said("assistant", RELOAD_PAGE)], Latest()
            return

        def call(place: Place, on_partial: Any, _on_settled: Any) -> Awaitable[Answer]:
            return self.service.reply(user, user, text, on_partial=on_partial, place=place)

        async for update in self._answer(history, user, call):
            yield update

    async def retry(self, history: History, key: Any, latest: Latest) -> AsyncIterator[Update]:
        history = [*(history or [])]
        if not latest.can_retry:
            yield [*history, said("assistant", NOTHING_TO_RETRY)], latest
            return
        user = _user_or_none(key)
        if user is None:
            yield [*history, said("assistant", RELOAD_PAGE)], latest
            return

        def call(place: Place, on_partial: Any, _on_settled: Any) -> Awaitable[Answer]:
            return self.service.retry(user, user, latest.turn_id, on_partial=on_partial, place=place)

        async for update in self._answer(history, user, call, kept=latest):
            yield update

    async def settle(self, accept: bool, history: History, key: Any,
                     latest: Latest) -> AsyncIterator[Update]:
        """예/아니요 to a taste statement: the service remembers it (or not), then answers its question, if any."""
        history = [*(history or [])]
        if not latest.asking:
            yield [*history, said("assistant", NOTHING_TO_CONFIRM)], latest
            return
        user = _user_or_none(key)
        if user is None:
            yield [*history, said("assistant", RELOAD_PAGE)], latest
            return
        history.append(said("user", "예" if accept else "아니요"))

        def call(place: Place, on_partial: Any, on_settled: Any) -> Awaitable[TasteChoice]:
            return self.service.settle_taste(user, user, latest.asking, accept, on_partial=on_partial,
                                             on_settled=on_settled, place=place)

        async for update in self._answer(history, user, call):
            yield update

    async def vote(self, up: bool, key: Any, latest: Latest) -> str:
        """👍/👎 on the latest answer, stored as the Telegram votes are; returns the line to show."""
        if not latest.turn_id or not latest.can_vote:
            return NOTHING_TO_VOTE
        user = _user_or_none(key)
        if user is None:
            return RELOAD_PAGE
        try:
            result = await self.service.vote(user, user, latest.turn_id, up)
        except RetryRefused as refused:
            return refused.reason
        if up:
            return THANKS_UP
        return THANKS_DOWN if result.can_retry else THANKS_DOWN_NO_RETRY

    async def reset(self, key: Any) -> tuple[History, Latest]:
        user = _user_or_none(key)
        if user is None:
            return [said("assistant", RELOAD_PAGE)], Latest()
        await self.service.reset(user, user)
        return [said("assistant", replies.RESET_DONE)], Latest()

    async def forget(self, key: Any) -> tuple[History, Latest]:
        user = _user_or_none(key)
        if user is None:
            return [said("assistant", RELOAD_PAGE)], Latest()
        deleted = await self.service.forget(user, user)
        return [said("assistant", replies.forgotten(deleted))], Latest()

    # --- one streamed answer -----------------------------------------------------------------------------------

    async def _answer(self, history: History, user: int, call: Callable[..., Awaitable[Any]],
                      kept: Latest | None = None) -> AsyncIterator[Update]:
        """Run `call` in the user's line and stream its text into a new last message; then the final text (or the
        polite line for a refusal, a busy queue or a failure). `kept`: a "다른 거" on this latest answer, whose
        message the new answer replaces (Gradio's way), unless nothing new was written."""
        try:
            place = self.service.lines.admit(user, user)
        except Refused as refused:
            yield [*history, said("assistant", refused.reason)], kept or Latest()
            return
        with place:
            stream = _Stream(history[:-1] if kept and history and history[-1]["role"] == "assistant" else history)
            task = asyncio.ensure_future(call(place, stream.partial, stream.settled))
            # A closed page (the browser went away) must not cost the answer: it is stored and shown on reload.
            task.add_done_callback(_log_failure)
            await asyncio.sleep(0)  # the service starts on the answer before the page shows the question
            first = True
            async for messages in stream.follow(task):
                # The buttons act on nothing while an answer is written; saying so once is enough (each change of
                # the page's state costs Gradio a copy of the component's config).
                yield messages, Latest() if first else None
                first = False
            try:
                result = await asyncio.shield(task)
            except ConversationBusy:  # nothing was generated; a turned-down answer is the latest again
                yield [*history, said("assistant", replies.BUSY)], kept or Latest()
                return
            except RetryRefused as refused:
                yield [*history, said("assistant", refused.reason)], Latest()
                return
            except Exception:
                yield stream.final(replies.FAILED_TEXT), Latest()
                return
        answer = result.answer if isinstance(result, TasteChoice) else result
        yield stream.final(shown(answer) if answer is not None else None), Latest.of(answer)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, ConversationBusy | RetryRefused):
            log.error("a web answer failed", exc_info=exc)


class _Stream:
    """The messages of one answer as it is written: partial texts replace the last message; a taste choice's line
    (`settled`) stays, and the answer to the question that came with it follows in a new message."""

    def __init__(self, history: History) -> None:
        self.messages = [*history, said("assistant", WAITING)]
        self.changed = asyncio.Event()

    async def partial(self, text: str) -> None:
        text = text.lstrip()
        if text:
            self.messages[-1] = said("assistant", text)
            self.changed.set()

    async def settled(self, text: str) -> None:
        self.messages[-1] = said("assistant", text)
        self.messages.append(said("assistant", WAITING))
        self.changed.set()

    async def follow(self, task: asyncio.Future[Any]) -> AsyncIterator[History]:
        """The changes until `task` is done, at most one page update per STREAM_INTERVAL_S (the changes between
        two updates show together): each update costs Gradio a diff and an event, on the cores the model uses."""
        yield [*self.messages]
        while not task.done():
            changed = asyncio.ensure_future(self.changed.wait())
            await asyncio.wait({task, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if self.changed.is_set() and not task.done():
                self.changed.clear()
                yield [*self.messages]
                await asyncio.wait({task}, timeout=STREAM_INTERVAL_S)

    def final(self, text: str | None) -> History:
        if text is None:
            return self.messages[:-1]  # a taste choice with no question: its line was the last word
        return [*self.messages[:-1], said("assistant", text)]
