"""One request's way back to the event loop, shared by both engines (generator.py on torch, llamacpp.py on
llama.cpp): the worker side `send`s text deltas, then a `GenerationResult` or an exception; the caller iterates a
`GenerationStream`. Pure Python, no torch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from model.types import GenerationRequest, GenerationResult


@dataclass(eq=False)  # one job is one request: compared and hashed by identity
class Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False

    def send(self, item: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)


class GenerationStream(AsyncIterator[str]):
    """Text deltas of one generation; `result` is set once the stream has ended."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self.result: GenerationResult | None = None

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        if self.result is not None:
            raise StopAsyncIteration
        item = await self._job.outbox.get()
        if isinstance(item, GenerationResult):
            self.result = item
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        self._job.cancelled = True

    async def to_end(self) -> GenerationResult:
        """The whole generation (each engine's `generate`); a cancelled caller stops the job too."""
        try:
            async for _ in self:
                pass
        except asyncio.CancelledError:
            await self.aclose()
            raise
        assert self.result is not None
        return self.result


def settle(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    """Resolve `future` from the loop's thread, unless it was resolved (or cancelled) already."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
