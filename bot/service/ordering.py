"""Per-user ordering: one user's calls run one at a time, in the order they were made; different users run at once.

A call `join`s its user's line before its first await (so the order is the order of the calls), may store its
question under `line.intake` straight away, then `wait`s for the calls ahead of it, and `leave`s when done. A line
is per user, across chats: /forget deletes every chat's rows, so it must wait for the user's answers in all of them.

Between processes (several bot replicas on one PostgreSQL database) the line continues in the database: `wait` also
takes the user's shared lock (bot/replicas.py `UserLocks`), and a reply takes it only after every earlier question
of the user that a live replica holds is answered. The lock is released when the front end has delivered the answer:
at the end of the `TurnScope` the call ran in (one Telegram update), or at `leave` outside any scope.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


class TurnScope:
    """One incoming update, from arrival to the last message sent for it (set by the front end around it).

    `stored()` is called when its question is committed (a webhook answers Telegram then: the message is safe);
    `defer(fn)` runs `fn` when the scope closes, so a shared lock outlives the service call until the answer has
    been delivered.
    """

    def __init__(self, on_stored: Callable[[], None] | None = None) -> None:
        self._on_stored = on_stored
        self._deferred: list[Callable[[], None]] = []
        self.closed = False

    def stored(self) -> None:
        callback, self._on_stored = self._on_stored, None
        if callback is not None:
            callback()

    def defer(self, release: Callable[[], None]) -> None:
        if self.closed:  # a task that outlived its update: nothing to wait for
            release()
        else:
            self._deferred.append(release)

    def close(self) -> None:
        self.closed = True
        self.stored()  # whatever happened, the sender may stop waiting
        deferred, self._deferred = self._deferred, []
        for release in deferred:
            try:
                release()
            except Exception:  # a failed release must not hide the others; the lock's lease ends it anyway
                log.exception("releasing a user lock failed")


_SCOPE: contextvars.ContextVar[TurnScope | None] = contextvars.ContextVar("mechuri_turn_scope", default=None)


def current_scope() -> TurnScope | None:
    return _SCOPE.get()


def enter_scope(scope: TurnScope) -> contextvars.Token[TurnScope | None]:
    return _SCOPE.set(scope)


def exit_scope(token: contextvars.Token[TurnScope | None]) -> None:
    _SCOPE.reset(token)


class SharedLocks(Protocol):
    """The cross-process part of a line (bot/replicas.py `UserLocks`)."""

    async def acquire(self, chat_id: int, user_id: int, question_id: int | None) -> Callable[[], None]:
        """Wait for the user's shared lock; return its release. Raises LockTimeout."""
        ...


class LockTimeout(Exception):
    """The user's shared lock stayed taken past the timeout (another replica is still answering them)."""


class UserLine:
    """`intake` orders the storing of questions; `tail` is the completion of the newest call in the line."""

    def __init__(self) -> None:
        self.intake = asyncio.Lock()
        self.tail: asyncio.Future[None] | None = None
        self.holders = 0


@dataclass
class Slot:
    key: tuple[int, int]  # (chat_id, user_id)
    line: UserLine
    prev: asyncio.Future[None] | None
    done: asyncio.Future[None]
    release: Callable[[], None] | None = field(default=None, repr=False)


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class UserLines:
    """`shared`: the database half of each line (None on SQLite, where one process owns the database). `busy`
    builds the exception raised when the shared lock times out (the service's ConversationBusy)."""

    def __init__(self, shared: SharedLocks | None = None,
                 busy: Callable[[str], Exception] = LockTimeout) -> None:
        self.lines: dict[int, UserLine] = {}
        self.shared = shared
        self.busy = busy

    def join(self, key: tuple[int, int]) -> Slot:
        line = self.lines.setdefault(key[1], UserLine())
        line.holders += 1
        slot = Slot(key, line, line.tail, asyncio.get_running_loop().create_future())
        line.tail = slot.done
        return slot

    async def wait(self, slot: Slot, *, question_id: int | None = None) -> None:
        """Wait for the calls ahead in this process, then (with `shared`) for the user's lock across processes.
        `question_id`: a reply's stored question, which goes only after the user's earlier questions."""
        if slot.prev is not None and not slot.prev.done():
            await asyncio.shield(slot.prev)
        if self.shared is not None:
            try:
                slot.release = await self.shared.acquire(slot.key[0], slot.key[1], question_id)
            except LockTimeout as exc:
                raise self.busy(str(exc)) from exc

    def leave(self, slot: Slot) -> None:
        slot.line.holders -= 1
        if slot.prev is not None and not slot.prev.done():
            # Cancelled while waiting: the next call must still wait for the one before us.
            slot.prev.add_done_callback(lambda _f: _finish(slot.done))
        else:
            _finish(slot.done)
        if slot.line.holders == 0:
            self.lines.pop(slot.key[1], None)
        if slot.release is not None:
            release, slot.release = slot.release, None
            scope = current_scope()
            if scope is not None:
                scope.defer(release)
            else:
                release()

    def __len__(self) -> int:
        return len(self.lines)


async def run_in_scope(scope: TurnScope, work: Awaitable[Any]) -> Any:
    """Await `work` inside `scope`, then close it (deferred releases run, a waiting sender is answered)."""
    token = enter_scope(scope)
    try:
        return await work
    finally:
        exit_scope(token)
        scope.close()
