"""Taste profiles in SQLite: migration 0002 up and down, editing, /forget deletes them and /reset does not."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot_fixtures import fresh_db, rows, service_on
from fakes import FakeGenerator

from bot.store.database import run_downgrade, run_upgrade
from bot.store.history import Recommended, Store
from bot.store.taste import TasteStore
from bot.taste.profile import TasteItem, allergy, diet


def url(db: Path) -> str:
    return f"sqlite+aiosqlite:///{db}"


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as raw:
        return {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_migration_0002_up_and_down_keeps_the_history(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    await asyncio.to_thread(run_upgrade, url(db), "0004")  # the revision before 0002
    assert "taste_items" not in tables(db)
    async with Store(url(db)) as store:
        question = await store.add_question(1, 7, "점심 추천해줘")
    await asyncio.to_thread(run_upgrade, url(db))
    assert {"taste_items", "recommended_dishes"} <= tables(db)
    assert "ix_recommended_dishes_user_time" in {r[1] for r in rows(db, "PRAGMA index_list('recommended_dishes')")}
    async with Store(url(db)) as store:
        taste = TasteStore(store.db)
        await taste.add(7, [allergy("새우")])
        _, pending, _ = await store.begin_answer(question, seed=1, params={}, adapter_name=None, adapter_version=None)
        await store.finish_answer(pending.id, status="ok", recommended=Recommended(7, ("김치찌개",), datetime.now(UTC)))
    await asyncio.to_thread(run_downgrade, url(db), "0004")
    assert not {"taste_items", "recommended_dishes"} & tables(db)
    assert rows(db, "SELECT text FROM turns WHERE role = 'user'") == [("점심 추천해줘",)]
    assert rows(db, "SELECT version_num FROM alembic_version") == [("0004",)]
    await asyncio.to_thread(run_upgrade, url(db))
    assert rows(db, "SELECT count(*) FROM taste_items") == [(0,)]


async def test_edits_toggle_remove_and_likes_replace_dislikes(tmp_path: Path) -> None:
    db = await asyncio.to_thread(fresh_db, tmp_path)
    async with Store(url(db)) as store:
        taste = TasteStore(store.db)
        assert not await taste.profile(5)
        assert await taste.toggle(5, allergy("땅콩")) is True  # creates the user row it belongs to
        assert rows(db, "SELECT id FROM users") == [(5,)]
        await taste.add(5, [TasteItem("dislike", "ingredient", "오이"), diet("veg"), allergy("땅콩")])
        profile = await taste.profile(5)
        assert profile.allergies == ("땅콩",) and profile.diets == ("veg",) and len(profile.items) == 3
        await taste.add(5, [TasteItem("like", "ingredient", "오이")])
        assert [i.kind for i in (await taste.profile(5)).of("like")] == ["like"]
        assert not (await taste.profile(5)).of("dislike")
        assert await taste.toggle(5, allergy("땅콩")) is False
        items = await taste.items(5)
        foreign = await taste.remove(6, items[0][0])  # another user's id: nothing happens
        assert foreign is None and len(await taste.items(5)) == len(items)
        assert await taste.remove(5, items[0][0]) == items[0][1]
        assert len(await taste.items(5)) == len(items) - 1


async def test_recent_dishes_window(tmp_path: Path) -> None:
    db = await asyncio.to_thread(fresh_db, tmp_path)
    now = datetime(2026, 5, 10, 12, tzinfo=UTC)
    async with Store(url(db)) as store:
        taste = TasteStore(store.db)
        question = await store.add_question(1, 3, "저녁?")
        for days, dish in ((8, "짜장면"), (6, "김치찌개"), (0, "비빔밥")):
            _, pending, _ = await store.begin_answer(question, seed=days, params={}, adapter_name=None,
                                                     adapter_version=None)
            await store.finish_answer(pending.id, status="ok", text=f"{dish} 어때요?",
                                      recommended=Recommended(3, (dish,), now - timedelta(days=days)))
        _, recent = await taste.context(3, now - timedelta(days=7))
        assert recent == {"김치찌개", "비빔밥"}
        assert (await taste.context(3, None))[1] == frozenset()
        assert (await taste.context(4, now - timedelta(days=7)))[1] == frozenset()  # per user
    assert rows(db, "SELECT status, text FROM turns WHERE role = 'assistant' ORDER BY id")[0] == ("ok", "짜장면 어때요?")


async def test_forget_deletes_the_profile_and_reset_keeps_it(tmp_path: Path) -> None:
    db = await asyncio.to_thread(fresh_db, tmp_path)
    async with service_on(db, FakeGenerator(["비빔밥 어때요?"])) as service:
        taste = TasteStore(service.store.db)
        await service.reply(1, 9, "점심 추천해줘")
        await taste.add(9, [allergy("새우"), diet("light")])
        await taste.add(10, [allergy("밀")])
        await service.reset(1, 9)
        assert len((await taste.profile(9)).items) == 2
        deleted = await service.forget(1, 9)
    assert deleted >= 2 + 2  # the two items, the two turns, …
    assert rows(db, "SELECT user_id, value FROM taste_items") == [(10, "밀")]
    assert rows(db, "SELECT count(*) FROM users WHERE id = 9") == [(0,)]
    assert rows(db, "PRAGMA foreign_key_check") == []
