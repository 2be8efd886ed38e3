"""bench/turn_down_learning.py's simulated users (`feedback_loop.py --learning`) on the real service, store, catalog
and taste reader, with scripted answers: they say yes only to their own hidden taste, and nothing else is kept."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bot_fixtures import fresh_db, service_on
from fakes import FakeGenerator

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import turn_down_learning as tdl  # noqa: E402

from bot.taste.profile import TasteItem  # noqa: E402
from model import DishCatalog  # noqa: E402

CATALOG = DishCatalog.load()
QUESTIONS = ["점심 메뉴 추천해줘", "저녁 메뉴 추천해줘", "점심에 뭐 먹을까?", "저녁에 뭐 먹을까?"] * 3


def soups_unless_told(prompt: str, seed: int) -> str:
    """A model that offers soup unless the prompt says the user dislikes it (or the soup was just turned down)."""
    if "국물" in prompt.split("### 맥락:")[-1]:
        return "제육볶음 어때요?"
    return ["된장찌개 어때요?", "청국장 어때요?", "비지찌개 어때요?", "김치찌개 어때요?"][seed % 4]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


@pytest.mark.parametrize("learn", [True, False])
async def test_a_soup_hater_is_asked_once_says_yes_and_turns_down_less(db: Path, learn: bool) -> None:
    gen = FakeGenerator(soups_unless_told)
    user = tdl.HiddenTaste(7, "국물")
    async with service_on(db, gen, catalog=CATALOG, learn_after=3 if learn else 0) as service:
        trace = await tdl.session(service, user, QUESTIONS, CATALOG)
    assert trace.unsaid == []
    if learn:
        assert trace.asked == [("tag", "국물", True)] and trace.remembered == (TasteItem("dislike", "tag", "국물"),)
        assert tdl.rate([trace], slice(-6, None)) < tdl.rate([trace], slice(0, 6))
    else:
        assert trace.asked == [] and trace.remembered == ()


def test_a_taste_kept_without_a_yes_is_counted() -> None:
    trace = tdl.Trace(tdl.HiddenTaste(1, "국물"), asked=[("tag", "매운", False)],
                      remembered=(TasteItem("dislike", "tag", "매운"),))
    assert trace.unsaid == [TasteItem("dislike", "tag", "매운")]
