"""What a user sees when a taste comes with other words (issue 23): a long message, a "다른 거" on an answer given at
once, and an unsure allergen in the terminal. Real SQLite, the real catalog and reader, a scripted generator."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from bot_fixtures import fresh_db, service_on
from fakes import FakeGenerator

from bot.service.taste import MAX_STATEMENT_CHARS
from bot.taste import replies as taste_text
from bot.taste.profile import TasteItem, allergy
from bot.terminal.chat import MARKER, run_chat
from model import DishCatalog

CATALOG = DishCatalog.load()
FILLER = "오늘 회사에서 정말 긴 하루를 보냈는데 점심도 제대로 못 챙겼어요. "


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


async def test_a_long_statement_is_confirmed_when_read(db: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    text = FILLER * 40 + "참고로 저 새우 알레르기 있어요."
    assert 300 < len(text) <= MAX_STATEMENT_CHARS
    async with service_on(db, gen, catalog=CATALOG) as service:
        asked = await service.reply(1, 7, text)
        assert (asked.confirm or asked.text) == "새우 알레르기를 기억해 둘까요?"  # asked, or answered with it beside
        assert taste_text.LONG_NOT_READ not in (asked.notice or "")


async def test_a_statement_past_the_limit_is_said_plainly_not_saved(db: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    text = FILLER * 150 + "참고로 저 새우 알레르기 있어요. 저녁 뭐 먹지?"
    assert len(text) > MAX_STATEMENT_CHARS
    async with service_on(db, gen, catalog=CATALOG) as service:
        answer = await service.reply(1, 7, text)
        assert answer.status == "ok" and taste_text.LONG_NOT_READ in answer.notice and answer.confirm is None
        assert not await service.taste.store.profile(7)


async def test_another_answer_still_honours_what_was_said_with_the_question(db: Path) -> None:
    gen = FakeGenerator(["비빔밥 어때요?", "냉면 어때요?"])
    async with service_on(db, gen, catalog=CATALOG) as service:
        first = await service.reply(1, 7, "우유 마시면 배가 아픈데 아침 뭐 먹지?")
        assert first.status == "ok" and first.unsure == ("우유",)
        assert first.confirm == "우유 알레르기인가요, 아니면 그냥 싫어하시는 건가요?"
        assert "알레르기: 우유" in gen.prompts[0]  # an unsure allergen is avoided as an allergy meanwhile
        again = await service.retry(1, 7, first.turn_id)
        assert again.status == "ok" and "알레르기: 우유" in gen.prompts[-1]
        assert not await service.taste.store.profile(7)  # nothing remembered without a choice


@pytest.mark.parametrize(("reply", "items"), [("알레르기", (allergy("우유"),)),
                                              ("싫어함", (TasteItem("dislike", "ingredient", "우유"),)), ("", ())])
async def test_the_terminal_asks_which_kind_an_unsure_allergen_is(db: Path, reply: str, items: tuple) -> None:
    gen = FakeGenerator(["비빔밥 어때요?"])
    out = io.StringIO()
    async with service_on(db, gen, catalog=CATALOG) as service:
        assert await run_chat(service, ["우유 마시면 배 아파", reply], out) == 0
        profile = await service.taste.store.profile(0)
    assert MARKER + "우유 알레르기인가요, 아니면 그냥 싫어하시는 건가요? (알레르기 / 싫어함 / 아니요)" in out.getvalue()
    assert profile.items == items and gen.requests == []
