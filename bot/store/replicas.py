"""Several bot processes on one database: who is alive, whose pending answers are orphans, and each user's turn lock.

- `Membership`: this process as a replica. It registers (a `replicas` row), heartbeats every third of the lease, and
  on each beat recovers the pending answers of replicas that stopped beating (killed with -9, say): they are marked
  failed, and `on_recovered` lets the front end tell those users. At start-up it also recovers turns no replica
  owns (older versions, `mechuri chat`). A live replica's pending answer is never touched.
- `UserLocks` (PostgreSQL only): a row per user in `user_locks`, taken with one upsert that succeeds only when the
  row is free or its lease ran out. The holder's heartbeat renews the lease, so a lock outlives a slow generation
  but not its process. A reply takes it only once the user's earlier questions held by other live replicas are
  answered: questions are stored before Telegram is answered (bot/telegram/webhook.py), so turn ids follow the order
  the user sent them, whichever replica got them. Waiting is bounded: past `timeout_s` the caller gets LockTimeout
  (the bot tells the user it is busy; the question stays stored).

On SQLite one process owns the database, so the in-process per-user lines (bot/service/ordering.py) are the whole
story and `UserLocks` is not used; `Membership` still runs, so recovery works the same on both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bot.store.database import Database
from bot.store.history import DEFAULT_LEASE_S, RecoveredTurn, recover_orphans
from bot.store.schema import CONVERSATIONS, REPLICAS, TURNS, USER_LOCKS, utcnow

log = logging.getLogger(__name__)

FIRST_POLL_S = 0.005  # a lock held by another replica is polled with backoff, from this
MAX_POLL_S = 0.1
MAX_HOLD_S = 600.0  # no turn holds a user's lock for ten minutes; past that its replica stops renewing it

_T, _C, _R, _L = TURNS, CONVERSATIONS, REPLICAS, USER_LOCKS
_ALIVE = select(_R.c.id).where(_R.c.stopped_at.is_(None), _R.c.seen_at > bindparam("alive_since"))
_question, _answer = _T.alias("question"), _T.alias("answer")
# An earlier question of this user in this chat that another live replica stored and nobody has begun to answer.
_EARLIER_UNANSWERED = (
    select(_question.c.id)
    .join(_C, _C.c.id == _question.c.conversation_id)
    .where(
        _C.c.user_id == bindparam("uid"), _C.c.chat_id == bindparam("cid"), _question.c.role == "user",
        _question.c.id < bindparam("qid"), _question.c.created_at > bindparam("since"),
        _question.c.replica_id != bindparam("me"), _question.c.replica_id.in_(_ALIVE),
        ~exists().where(_answer.c.reply_to == _question.c.id),
    )
    .limit(1)
)


def _take(*, after_earlier_questions: bool) -> Any:
    """One statement, one round trip: take the user's row when it is free or its lease ran out, and (for a reply)
    only when no earlier question of the user waits on another live replica. Returns the token when taken."""
    row = select(
        bindparam("uid", type_=BigInteger), bindparam("token", type_=String), bindparam("me", type_=Integer),
        bindparam("now", type_=DateTime(timezone=True)), bindparam("expires", type_=DateTime(timezone=True)),
    )
    if after_earlier_questions:
        row = row.where(~exists(_EARLIER_UNANSWERED))
    statement = pg_insert(_L).from_select(["user_id", "token", "replica_id", "acquired_at", "expires_at"], row)
    return statement.on_conflict_do_update(
        index_elements=[_L.c.user_id],
        set_={"token": statement.excluded.token, "replica_id": statement.excluded.replica_id,
              "acquired_at": statement.excluded.acquired_at, "expires_at": statement.excluded.expires_at},
        where=_L.c.expires_at < bindparam("now"),
    ).returning(_L.c.token)


_TAKE, _TAKE_AFTER_EARLIER = _take(after_earlier_questions=False), _take(after_earlier_questions=True)
_RELEASE = delete(_L).where(_L.c.user_id == bindparam("uid"), _L.c.token == bindparam("token"))

RecoveredCallback = Callable[[list[RecoveredTurn]], Awaitable[None]]


class LockTimeout(Exception):
    """The user's shared lock stayed taken past the timeout (another replica is still answering them)."""


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _took(attempt: Any) -> bool:
    return not attempt.cancelled() and attempt.exception() is None and attempt.result() is None


class UserLocks:
    """Each user's turn lock across replicas; `acquire` returns the release (a plain function, safe in `finally`)."""

    def __init__(self, database: Database, *, replica_id: int, timeout_s: float, lease_s: float) -> None:
        self.db = database
        self.replica_id = replica_id
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self._released: dict[int, asyncio.Event] = {}  # wakes this process's waiters at once on a local release

    async def acquire(self, chat_id: int, user_id: int, question_id: int | None) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        token = secrets.token_hex(16)
        deadline = loop.time() + self.timeout_s
        delay = FIRST_POLL_S
        release = partial(self._release, loop, user_id, token)
        while True:
            attempt = self.db.submit(self._try, chat_id, user_id, question_id, token)
            try:
                waiting_for = await asyncio.wrap_future(attempt)
            except asyncio.CancelledError:
                # The attempt runs on regardless: if it took the lock, nobody else would ever give it back.
                attempt.add_done_callback(lambda done: release() if _took(done) else None)
                raise
            if waiting_for is None:
                return release
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("user lock wait timed out after %.0f s (%s)", self.timeout_s, waiting_for)
                raise LockTimeout(f"another replica kept this user's turn for over {self.timeout_s:.0f} s "
                                  f"({waiting_for})")
            event = self._released.setdefault(user_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), min(delay, remaining))
            except TimeoutError:
                delay = min(delay * 2, MAX_POLL_S)

    def _try(self, chat_id: int, user_id: int, question_id: int | None, token: str) -> str | None:
        """On the DB thread: None when the lock is ours now, else what we wait for."""
        now = utcnow()
        params = {"uid": user_id, "token": token, "me": self.replica_id, "now": now,
                  "expires": now + timedelta(seconds=self.lease_s)}
        if question_id is not None:
            params.update(cid=chat_id, qid=question_id, since=now - timedelta(seconds=self.timeout_s),
                          alive_since=now - timedelta(seconds=self.lease_s))
        with self.db.autocommit.begin() as db:
            taken = db.execute(_TAKE if question_id is None else _TAKE_AFTER_EARLIER, params).first()
        return None if taken is not None else "the lock, or an earlier question on another replica"

    def _release(self, loop: asyncio.AbstractEventLoop, user_id: int, token: str) -> None:
        def delete_row() -> None:
            with self.db.autocommit.begin() as db:
                db.execute(_RELEASE, {"uid": user_id, "token": token})

        def wake(_done: Any) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._wake, user_id)

        try:
            self.db.submit(delete_row).add_done_callback(wake)
        except RuntimeError:  # the store is closed (shutting down): the lease runs out on its own
            pass

    def _wake(self, user_id: int) -> None:
        event = self._released.pop(user_id, None)
        if event is not None:
            event.set()


class Membership:
    """This process among the replicas sharing the database. `start()` before serving (it gives this process its
    `replica_id`), `stop()` after. `on_recovered` hears of the answers other, stopped replicas left pending.

    The heartbeat runs on a thread of its own, with its own connection: a busy event loop or a long queue of store
    jobs must not make a live replica look dead to the others (they would recover its answers in flight).
    """

    def __init__(self, database: Database, *, name: str | None = None, lease_s: float = DEFAULT_LEASE_S,
                 lock_timeout_s: float = 120.0) -> None:
        self.db = database
        self.name = name or default_name()
        self.lease_s = lease_s
        self.lock_timeout_s = lock_timeout_s
        self.replica_id: int | None = None
        self.on_recovered: RecoveredCallback | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._left = False

    async def start(self) -> list[RecoveredTurn]:
        """Register, recover what stopped processes left pending, start the heartbeat. Returns the recovered."""
        self.replica_id = await self.db.run(self._register)
        recovered = await self.db.run(recover_orphans, self.db, self.replica_id, self.lease_s, include_unowned=True)
        if recovered:
            log.warning("recovered %d turn(s) left pending by a process that stopped; marked failed", len(recovered))
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._beat_forever, name="mechuri-replica-heartbeat", daemon=True)
        self._thread.start()
        log.info("replica %d (%s) joined; lease %.1f s", self.replica_id, self.name, self.lease_s)
        return recovered

    def user_locks(self) -> UserLocks | None:
        """The users' turn locks shared with the other replicas: PostgreSQL only (one process owns a SQLite file)."""
        if self.replica_id is None:
            raise RuntimeError("Membership.start() must run before the user locks are taken")
        if not self.db.is_postgres:
            return None
        return UserLocks(self.db, replica_id=self.replica_id, timeout_s=self.lock_timeout_s, lease_s=self.lease_s)

    async def stop(self) -> int:
        """Leave: mark this replica stopped and drop its locks. Returns how many other replicas are still alive."""
        if self._thread is not None:
            self._stopping.set()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self.replica_id is None or self._left:
            return 0
        self._left = True
        others = await self.db.run(self._leave)
        log.info("replica %d left; %d other replica(s) alive", self.replica_id, others)
        return others

    def _register(self) -> int:
        now = utcnow()
        with self.db.engine.begin() as db:
            return db.execute(insert(_R).returning(_R.c.id),
                              {"name": self.name[:256], "started_at": now, "seen_at": now}).scalar_one()

    def _beat(self) -> None:
        now = utcnow()
        with self.db.engine.begin() as db:
            db.execute(update(_R).where(_R.c.id == self.replica_id).values(seen_at=now))
            if self.db.is_postgres:
                # A lock lives as long as its holder keeps beating, up to MAX_HOLD_S: a lock that a bug never gave
                # back frees itself then.
                db.execute(update(_L).where(_L.c.replica_id == self.replica_id,
                                            _L.c.acquired_at > now - timedelta(seconds=MAX_HOLD_S))
                           .values(expires_at=now + timedelta(seconds=self.lease_s)))

    def _leave(self) -> int:
        now = utcnow()
        with self.db.engine.begin() as db:
            db.execute(update(_R).where(_R.c.id == self.replica_id).values(stopped_at=now))
            db.execute(delete(_L).where(_L.c.replica_id == self.replica_id))
        with self.db.engine.connect() as db:
            return int(db.execute(select(func.count()).select_from(_ALIVE.subquery()),
                                  {"alive_since": now - timedelta(seconds=self.lease_s)}).scalar_one())

    def _beat_forever(self) -> None:
        """On the heartbeat thread: beat, then recover what replicas that stopped beating left pending."""
        while not self._stopping.wait(self.lease_s / 3):
            try:
                self._beat()
                recovered = recover_orphans(self.db, self.replica_id, self.lease_s, include_unowned=False)
            except Exception as exc:  # the database is down for a moment: beat again next time
                log.warning("replica heartbeat failed: %s: %s", type(exc).__name__, exc)
                continue
            if recovered:
                log.warning("recovered %d turn(s) of a replica that stopped; marked failed", len(recovered))
                if self.on_recovered is not None and self._loop is not None:
                    asyncio.run_coroutine_threadsafe(self._tell(recovered), self._loop)

    async def _tell(self, recovered: list[RecoveredTurn]) -> None:
        try:
            await self.on_recovered(recovered)  # type: ignore[misc]
        except Exception:
            log.exception("telling users about recovered turns failed")
