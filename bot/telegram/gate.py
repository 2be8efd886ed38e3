"""Load control for the Telegram front end: per-user pacing and delivery order, and a global cap on generations.

- `UserGate`: a user's messages are taken in the order they came and their answers are delivered in that order; a
  message that comes sooner than the cool-down after the previous one, or while too many are still waiting, gets a
  polite refusal instead of silence.
- `CappedGenerator`: at most N generations run at once; the rest wait their turn (asyncio.Semaphore) instead of
  being refused. It wraps the generator *under* the conversation service, so a question is stored the moment it
  arrives, and only its generation waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

MAX_WAITING_PER_USER = 16


class UserGateRefused(Exception):
    """The message is refused; `reason` is a polite Korean sentence for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Line:
    last_accepted: float = float("-inf")
    waiting: int = 0
    tail: asyncio.Future[None] | None = None


@dataclass
class Ticket:
    """One accepted message: wait for the user's previous answer to go out, deliver, then `done()`."""

    gate: UserGate
    key: tuple[int, int]
    prev: asyncio.Future[None] | None
    finished: asyncio.Future[None] = field(repr=False)

    async def wait_previous(self) -> None:
        if self.prev is not None and not self.prev.done():
            await asyncio.shield(self.prev)

    def done(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
        self.gate._release(self.key, self)


class UserGate:
    def __init__(self, *, cooldown_s: float, max_waiting: int = MAX_WAITING_PER_USER) -> None:
        self.cooldown_s = cooldown_s
        self.max_waiting = max_waiting
        self._lines: dict[tuple[int, int], _Line] = {}

    def enter(self, chat_id: int, user_id: int) -> Ticket:
        """Take a ticket, synchronously, so tickets follow arrival order. Raises UserGateRefused."""
        key = (chat_id, user_id)
        line = self._lines.setdefault(key, _Line())
        now = time.monotonic()
        wait_s = line.last_accepted + self.cooldown_s - now
        if wait_s > 0:
            raise UserGateRefused(
                f"조금만 천천히 보내 주세요. {max(1, round(wait_s))}초 뒤에 다시 보내 주시면 바로 답할게요."
            )
        if line.waiting >= self.max_waiting:
            raise UserGateRefused("아직 앞의 질문들에 답하는 중이에요. 답을 받은 뒤에 다시 보내 주세요.")
        line.last_accepted = now
        line.waiting += 1
        ticket = Ticket(self, key, line.tail, asyncio.get_running_loop().create_future())
        line.tail = ticket.finished
        return ticket

    def _release(self, key: tuple[int, int], ticket: Ticket) -> None:
        line = self._lines.get(key)
        if line is None:
            return
        line.waiting -= 1
        if line.waiting <= 0 and time.monotonic() - line.last_accepted >= self.cooldown_s:
            del self._lines[key]  # idle and past its cool-down: nothing to remember
        if len(self._lines) > 10_000:
            self._prune()

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._lines.items() if v.waiting <= 0 and now - v.last_accepted >= self.cooldown_s]:
            del self._lines[key]

    @property
    def waiting(self) -> int:
        return sum(line.waiting for line in self._lines.values())


class CappedGenerator:
    """The Generator surface, with at most `limit` generations running at once; the others wait in order."""

    def __init__(self, inner: Any, limit: int) -> None:
        if limit < 1:
            raise ValueError("the generation cap must be at least 1")
        self.inner = inner
        self.limit = limit
        self.semaphore = asyncio.Semaphore(limit)
        self.waiting = 0

    def __getattr__(self, name: str) -> Any:
        # tokenizer, max_context, reload_adapter, info, close, …: the wrapped generator's own.
        return getattr(self.inner, name)

    def stream(self, req: Any) -> CappedStream:
        return CappedStream(self, req)

    async def generate(self, req: Any) -> Any:
        self.waiting += 1
        try:
            await self.semaphore.acquire()
        finally:
            self.waiting -= 1
        try:
            return await self.inner.generate(req)
        finally:
            self.semaphore.release()


class CappedStream:
    """Waits for a slot on first iteration, then relays the inner stream; the slot is freed when it ends."""

    def __init__(self, capped: CappedGenerator, req: Any) -> None:
        self.capped = capped
        self.req = req
        self.inner: Any = None
        self._holding = False
        self._iter: AsyncIterator[str] | None = None

    @property
    def result(self) -> Any:
        return self.inner.result if self.inner is not None else None

    def __aiter__(self) -> CappedStream:
        return self

    async def __anext__(self) -> str:
        if self.inner is None:
            self.capped.waiting += 1
            try:
                await self.capped.semaphore.acquire()
            finally:
                self.capped.waiting -= 1
            self._holding = True
            try:
                self.inner = self.capped.inner.stream(self.req)  # GeneratorBusy / GeneratorClosed surface here
            except BaseException:
                self._release()
                raise
            self._iter = self.inner.__aiter__()
        assert self._iter is not None
        try:
            return await self._iter.__anext__()
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self.capped.semaphore.release()

    async def aclose(self) -> None:
        try:
            if self.inner is not None:
                await self.inner.aclose()
        finally:
            self._release()
