"""Per-user ordering: one user's calls run one at a time, in the order they were made; different users run at once.

A call `join`s its user's line before its first await (so the order is the order of the calls), may store its
question under `line.intake` straight away, then `wait`s for the calls ahead of it, and `leave`s when done.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


class UserLine:
    """`intake` orders the storing of questions; `tail` is the completion of the newest call in the line."""

    def __init__(self) -> None:
        self.intake = asyncio.Lock()
        self.tail: asyncio.Future[None] | None = None
        self.holders = 0


@dataclass
class Slot:
    key: tuple[int, int]
    line: UserLine
    prev: asyncio.Future[None] | None
    done: asyncio.Future[None]


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class UserLines:
    def __init__(self) -> None:
        self.lines: dict[tuple[int, int], UserLine] = {}

    def join(self, key: tuple[int, int]) -> Slot:
        line = self.lines.setdefault(key, UserLine())
        line.holders += 1
        slot = Slot(key, line, line.tail, asyncio.get_running_loop().create_future())
        line.tail = slot.done
        return slot

    async def wait(self, slot: Slot) -> None:
        if slot.prev is not None and not slot.prev.done():
            await asyncio.shield(slot.prev)

    def leave(self, slot: Slot) -> None:
        slot.line.holders -= 1
        if slot.prev is not None and not slot.prev.done():
            # Cancelled while waiting: the next call must still wait for the one before us.
            slot.prev.add_done_callback(lambda _f: _finish(slot.done))
        else:
            _finish(slot.done)
        if slot.line.holders == 0:
            self.lines.pop(slot.key, None)

    def __len__(self) -> int:
        return len(self.lines)
