"""bench/feedback_loop.py's simulated users on the real service, store and catalog (scripted answers): they turn down
exactly what breaks their hidden taste, press "다른 거" at most three times, vote, move on, and the real export turns
their chains into the pairs the benchmark trains on. (The DPO round itself is tests/test_pref_train.py's.)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from fakes import FakeGenerator

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import feedback_loop as fl  # noqa: E402

from bot.feedback.export import ExportOptions, export_feedback  # noqa: E402
from model import DishCatalog  # noqa: E402

QUESTION = "점심 메뉴 추천해줘"


@pytest.fixture(scope="module")
def catalog() -> DishCatalog:
    return DishCatalog.load()


def test_a_user_turns_down_exactly_what_breaks_their_taste(catalog: DishCatalog) -> None:
    soup, spicy = fl.SimUser(1, "국물"), fl.SimUser(2, "매운")
    assert soup.turns_down(catalog, QUESTION, "된장찌개 어때요?")  # 국물, not spicy
    assert not spicy.turns_down(catalog, QUESTION, "된장찌개 어때요?")
    assert spicy.turns_down(catalog, QUESTION, "비빔밥 어때요?") and not soup.turns_down(catalog, QUESTION, "비빔밥 어때요?")
    assert not soup.turns_down(catalog, QUESTION, "불고기 어때요?")
    assert soup.turns_down(catalog, QUESTION, "불고기 어때요? 된장찌개도 좋아요.")  # one broken dish is enough
    assert soup.turns_down(catalog, QUESTION, "음… 딱 떠오르는 메뉴가 없네요.")  # no dish: asked again
    assert not soup.turns_down(catalog, "된장찌개 먹고 싶어", "된장찌개 어때요?")  # what the question asked for


async def run(catalog: DishCatalog, tmp_path: Path, script: list[str], hates: str) -> tuple[fl.Phase, Path]:
    db = tmp_path / "collect.db"
    generator = fl.FinishLog(FakeGenerator(script))
    phase = await fl.run_phase("collect", f"sqlite+aiosqlite:///{db}", generator, catalog, [fl.SimUser(7, hates)],
                               {7: [QUESTION]}, 0, tmp_path, argparse.Namespace(max_new_tokens=32))
    return phase, db


async def test_retries_until_the_taste_is_met_then_pairs_for_each_turned_down_answer(catalog, tmp_path) -> None:
    phase, db = await run(catalog, tmp_path, ["된장찌개 어때요?", "김치찌개 어때요?", "불고기 어때요?"], "국물")
    assert [(s.first, s.turned_down, s.answer.text) for s in phase.shown] == [
        (True, True, "된장찌개 어때요?"), (False, True, "김치찌개 어때요?"), (False, False, "불고기 어때요?")]
    assert all(s.finish == "stop" for s in phase.shown)  # each sample's own finish reason, found by its seed
    c = fl.columns(phase, catalog)
    assert (c["answers"], c["rate"], c["presses"], c["dish"]) == (1, 1.0, 2.0, 1.0)
    out = tmp_path / "prefs.jsonl"
    report = export_feedback(f"sqlite+aiosqlite:///{db}", out, options=ExportOptions())
    rows = [line for line in out.read_text(encoding="utf-8").splitlines() if line]
    assert len(rows) == 2 and all('"chosen": " 불고기 어때요?"' in r for r in rows)  # kept, then moved on (/reset)
    assert report.no_chosen == 0 and report.open == 0


async def test_a_user_never_satisfied_gives_up_after_three_retries_with_a_thumbs_down(catalog, tmp_path) -> None:
    phase, db = await run(catalog, tmp_path, ["된장찌개 어때요?", "김치찌개 어때요?", "순두부찌개 어때요?",
                                              "부대찌개 어때요?", "갈비탕 어때요?"], "국물")
    assert len(phase.shown) == 1 + fl.MAX_RETRIES and all(s.turned_down for s in phase.shown)
    report = export_feedback(f"sqlite+aiosqlite:///{db}", tmp_path / "prefs.jsonl", options=ExportOptions())
    assert report.no_chosen == 1 and sum(report.rows.values()) == 0  # the 👎 leaves nothing chosen: no pair
