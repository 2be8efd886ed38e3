"""Per-user ordering: one user's calls run one at a time, in the order they arrived; different users run at once.

The one mechanism for every front end. A call takes its `Place` in its user's line synchronously, before its first
await (so the order is the order of arrival), may store its question under `place.intake` straight away (it must
survive a crash), then `wait`s for the calls ahead of it, and `leave`s when it is done. A front end that delivers the
answer itself (Telegram) keeps the place until the answer is delivered, so answers also go out in order; the service
takes and leaves a place itself when it is given none (the terminal, scripts).

A line is per user, across chats: /forget deletes every chat's rows, so it must wait for the user's answers in all
of them. Between processes (several bot replicas on one PostgreSQL database) the line continues in the database:
`wait` also takes the user's shared lock (bot/store/replicas.py `UserLocks`), and a reply takes it only after every
earlier question of the user that a live replica holds is answered. `leave` gives the lock back.

`admit` is the door of a front end that paces its users: a message sooner than the cool-down after the previous one,
or while too many of the user's messages still wait, is refused with a polite reason instead of queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from bot.service import replies

MAX_WAITING_PER_USER = 16


class SharedLocks(Protocol):
    """The cross-process part of a line (bot/store/replicas.py `UserLocks`)."""

    async def acquire(self, chat_id: int, user_id: int, question_id: int | None) -> Callable[[], None]:
        """Wait for the user's shared lock; return its release. Raises LockTimeout."""
        ...


class Refused(Exception):
    """The front end's door refused a message; `reason` is a polite Korean sentence for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Line:
    """`intake` orders the storing of questions; `tail` completes when the newest place in the line is left."""

    def __init__(self) -> None:
        self.intake = asyncio.Lock()
        self.tail: asyncio.Future[None] | None = None
        self.holders = 0


class Place:
    """One call's place in its user's line. A context manager: leaving the block leaves the line."""

    def __init__(self, lines: UserLines, chat_id: int, user_id: int) -> None:
        self.lines, self.chat_id, self.user_id = lines, chat_id, user_id
        self.line = lines.lines.setdefault(user_id, _Line())
        self.line.holders += 1
        self.prev = self.line.tail
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.line.tail = self.done
        self._release: Callable[[], None] | None = None
        self._left = False

    @property
    def intake(self) -> asyncio.Lock:
        return self.line.intake

    async def wait(self, *, question_id: int | None = None) -> None:
        """Wait for the calls ahead in this process, then (on replicas) for the user's lock across processes.
        `question_id`: a reply's stored question, which goes only after the user's earlier questions.
        Raises LockTimeout when another replica keeps the user's turn too long."""
        if self.prev is not None and not self.prev.done():
            await asyncio.shield(self.prev)
        if self.lines.shared is not None and self._release is None:
            self._release = await self.lines.shared.acquire(self.chat_id, self.user_id, question_id)

    def leave(self) -> None:
        if self._left:
            return
        self._left = True
        self.line.holders -= 1
        if self.prev is not None and not self.prev.done():
            # Left while still waiting (cancelled): the next call must still wait for the one before us.
            self.prev.add_done_callback(lambda _f: _finish(self.done))
        else:
            _finish(self.done)
        if self.line.holders == 0 and self.lines.lines.get(self.user_id) is self.line:
            del self.lines.lines[self.user_id]
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class UserLines:
    """Every user's line in this process. `shared`: the database half of each line (None on SQLite, where one process
    owns the database). `cooldown_s` and `max_waiting` pace the messages taken through `admit`."""

    def __init__(self, shared: SharedLocks | None = None, *, cooldown_s: float = 0.0,
                 max_waiting: int = MAX_WAITING_PER_USER) -> None:
        self.shared = shared
        self.cooldown_s = cooldown_s
        self.max_waiting = max_waiting
        self.lines: dict[int, _Line] = {}
        self._last_admitted: dict[tuple[int, int], float] = {}

    def join(self, chat_id: int, user_id: int) -> Place:
        """A place at the end of the user's line, taken now (call it before the first await)."""
        return Place(self, chat_id, user_id)

    def admit(self, chat_id: int, user_id: int) -> Place:
        """`join` for a message at a front end's door; Refused when it comes too soon or too many wait."""
        now = time.monotonic()
        key = (chat_id, user_id)
        wait_s = self._last_admitted.get(key, float("-inf")) + self.cooldown_s - now
        if wait_s > 0:
            raise Refused(replies.too_soon(wait_s))
        line = self.lines.get(user_id)
        if line is not None and line.holders >= self.max_waiting:
            raise Refused(replies.TOO_MANY_WAITING)
        if self.cooldown_s > 0:
            self._last_admitted[key] = now
            if len(self._last_admitted) > 10_000:  # forget the idle ones: nothing to remember past the cool-down
                self._last_admitted = {k: t for k, t in self._last_admitted.items() if now - t < self.cooldown_s}
        return self.join(chat_id, user_id)

    @property
    def waiting(self) -> int:
        """Calls holding or waiting for a place, across all users."""
        return sum(line.holders for line in self.lines.values())

    def __len__(self) -> int:
        return len(self.lines)
