"""Replicas on one database, in-process (two stores stand for two processes): recovery never takes a live replica's
pending turn, a gone replica's turn is recovered by a live one, and the user lock's timeout and lease behave."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from fakes import FakeGenerator

from bot.service.contract import ConversationBusy
from bot.service.conversation import ConversationService
from bot.settings import GenerationDefaults
from bot.store.database import Database
from bot.store.history import INTERRUPTED, Store
from bot.store.replicas import Membership
from bot.store.schema import utcnow


class Replica:
    """One process among the replicas: its database executor, its membership, its store."""

    def __init__(self, url: str, name: str, **kwargs: float) -> None:
        self.db = Database(url)
        self.member = Membership(self.db, name=name, **kwargs)
        self.store: Store | None = None

    async def start(self) -> list:
        recovered = await self.member.start()
        self.store = Store(self.db, replica_id=self.member.replica_id)
        return recovered

    def service(self, gen: FakeGenerator) -> ConversationService:
        assert self.store is not None, "start() first"
        return ConversationService(self.store, gen, generation=GenerationDefaults(max_new_tokens=32),
                                   locks=self.member.user_locks())

    async def stop(self) -> None:
        await self.member.stop()
        await self.db.close()


async def test_recovery_spares_a_live_replica_and_takes_a_gone_ones_turns(database) -> None:
    release = asyncio.Event()
    gen = FakeGenerator(["한참 걸린 답"], block=release)
    alive, newcomer = Replica(database.url, "alive", lease_s=0.9), Replica(database.url, "newcomer", lease_s=0.9)
    try:
        await alive.start()
        answering = asyncio.create_task(alive.service(gen).reply(1, 1, "오래 걸리는 질문"))
        while not gen.requests:
            await asyncio.sleep(0.01)
        # A replica starting now must leave the live one's pending answer alone…
        recovered = []

        async def tell(turns) -> None:
            recovered.extend(turns)

        newcomer.member.on_recovered = tell
        assert await newcomer.start() == []
        await asyncio.sleep(1.5)  # several of the newcomer's sweeps, while "alive" keeps beating
        assert recovered == [] and database.rows("SELECT status FROM turns ORDER BY id") == [("ok",), ("pending",)]
        # …and recover it once that replica stops beating (as after kill -9: no goodbye, the heartbeat just stops).
        alive.member._stopping.set()
        for _ in range(60):
            if recovered:
                break
            await asyncio.sleep(0.1)
        assert [(t.chat_id, t.user_id, t.question) for t in recovered] == [(1, 1, "오래 걸리는 질문")]
        assert database.rows("SELECT status, error FROM turns WHERE role = 'assistant'") == [("failed", INTERRUPTED)]
        release.set()
        await answering
    finally:
        await alive.stop()
        await newcomer.stop()


async def test_a_users_lock_held_too_long_makes_the_other_replica_say_busy(postgres_db) -> None:
    release = asyncio.Event()
    slow, quick = FakeGenerator(["느린 답"], block=release), FakeGenerator(["빠른 답"])
    replicas = [Replica(postgres_db.url, f"r{i}", lease_s=5, lock_timeout_s=0.6) for i in range(2)]
    try:
        for replica in replicas:
            await replica.start()
        holder = asyncio.create_task(replicas[0].service(slow).reply(1, 1, "첫 질문"))
        while not slow.requests:
            await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConversationBusy, match="over 1 s"):
            await replicas[1].service(quick).reply(1, 1, "둘째 질문")
        assert 0.5 < asyncio.get_running_loop().time() - started < 5
        assert quick.requests == []  # nothing was generated; the question is stored, as the busy text says
        assert postgres_db.rows("SELECT text FROM turns WHERE role = 'user' ORDER BY id") == [("첫 질문",), ("둘째 질문",)]
        release.set()
        assert (await holder).status == "ok"
        # With the lock free again, the other replica answers at once.
        assert (await replicas[1].service(quick).reply(1, 1, "셋째 질문")).text == "빠른 답"
    finally:
        for replica in replicas:
            await replica.stop()


async def test_a_lock_whose_lease_ran_out_is_taken_over(postgres_db) -> None:
    taker = Replica(postgres_db.url, "taker", lease_s=5, lock_timeout_s=2)
    try:
        await taker.start()
        postgres_db.rows("INSERT INTO replicas (name, started_at, seen_at) VALUES ('gone', now(), now()) "
                         "RETURNING id")
        stale = utcnow() - timedelta(seconds=1)
        postgres_db.rows("INSERT INTO user_locks (user_id, token, replica_id, acquired_at, expires_at) "
                         "SELECT 1, 'left-behind', id, ?, ? FROM replicas WHERE name = 'gone' RETURNING user_id",
                         stale, stale)
        answer = await taker.service(FakeGenerator(["이어받은 답"])).reply(1, 1, "질문")
        assert answer.text == "이어받은 답"
        for _ in range(50):  # the release is queued behind the answer, not awaited
            if postgres_db.rows("SELECT count(*) FROM user_locks") == [(0,)]:
                break
            await asyncio.sleep(0.02)
        assert postgres_db.rows("SELECT count(*) FROM user_locks") == [(0,)]  # taken over, then released
    finally:
        await taker.stop()


async def test_a_cancelled_wait_never_leaves_the_lock_taken(postgres_db) -> None:
    replica = Replica(postgres_db.url, "cancelling", lease_s=5, lock_timeout_s=2)
    try:
        await replica.start()
        locks = replica.member.user_locks()
        assert locks is not None
        waiting = asyncio.create_task(locks.acquire(1, 1, None))
        await asyncio.sleep(0)  # the attempt is on its way to the database
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for _ in range(100):  # the attempt took the lock after all; its release follows it
            if postgres_db.rows("SELECT count(*) FROM user_locks") == [(0,)]:
                break
            await asyncio.sleep(0.02)
        assert postgres_db.rows("SELECT count(*) FROM user_locks") == [(0,)]
        release = await asyncio.wait_for(locks.acquire(1, 1, None), 1)
        release()
    finally:
        await replica.stop()
