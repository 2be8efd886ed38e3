"""bench/feedback_loop.py's simulated users on the real service, store and catalog (scripted answers): they turn down
exactly what breaks their hidden taste, press "다른 거" at most three times, vote, move on, and the real export turns
their chains into the pairs the benchmark trains on. (The DPO round itself is tests/test_pref_train.py's.)"""

from __future__ import annotations

import argparse
import json
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


async def run(catalog: DishCatalog, tmp_path: Path, script: list[str], hates: str, *, asked: tuple[str, ...] = (QUESTION,),
              state: bool = False, fake: FakeGenerator | None = None) -> tuple[fl.Phase, Path]:
    db = tmp_path / "collect.db"
    generator = fl.FinishLog(fake or FakeGenerator(script))
    phase = await fl.run_phase("collect", f"sqlite+aiosqlite:///{db}", generator, catalog, [fl.SimUser(7, hates)],
                               {7: list(asked)}, 0, tmp_path, argparse.Namespace(max_new_tokens=32), state=state)
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


# --- taste-aware users (issue 23, part 5) -------------------------------------------------------------------------

SOUP_NOTE = "싫어하는 것: 국물 요리."


def test_a_user_says_yes_only_to_the_question_about_their_own_taste() -> None:
    soup = fl.SimUser(1, "국물")
    assert soup.says_yes("국물 요리는 별로세요? 앞으로 덜 추천할까요?")
    assert not soup.says_yes("매운 음식은 별로세요? 앞으로 덜 추천할까요?")
    assert not soup.says_yes("따뜻한 음식은 별로세요? 앞으로 덜 추천할까요?")


def test_every_statement_a_fresh_user_makes_is_read_as_exactly_their_taste(catalog: DishCatalog) -> None:
    from bot.taste.parse import TasteReader

    reader = TasteReader.load(catalog)
    for hates in fl.TASTES:
        for uid in range(len(fl.STATEMENTS)):
            user = fl.SimUser(uid, hates)
            statement = reader.read(user.statement())
            assert statement is not None and statement.items == (user.taste,) and not statement.asks, user.statement()


async def test_turn_downs_teach_the_bot_the_taste_and_later_prompts_and_pairs_carry_it(catalog, tmp_path) -> None:
    fake = FakeGenerator(["된장찌개 어때요?", "김치찌개 어때요?", "갈비탕 어때요?", "불고기 어때요?",
                          "음… 잘 모르겠어요.", "비빔밥 어때요?"])
    phase, db = await run(catalog, tmp_path, [], "국물", asked=(QUESTION, "저녁 메뉴 추천해줘"), fake=fake)
    # asked about 국물 after three soups were turned down: yes; asked about the next thing they share: no
    assert phase.learned[0] == (7, "국물 요리는 별로세요? 앞으로 덜 추천할까요?", True)
    assert len(phase.learned) == 2 and not phase.learned[1][2]
    assert phase.remembered[7] == (fl.SimUser(7, "국물").taste,)
    last_question = [p.rsplit("### 질문:", 1)[1] for p in fake.prompts]  # earlier turns come before it
    asked_first = [q for q in last_question if QUESTION in q]
    asked_later = [q for q in last_question if "저녁 메뉴 추천해줘" in q]
    assert len(asked_first) == 4 and not any(SOUP_NOTE in q for q in asked_first)
    assert len(asked_later) == 2 and all(SOUP_NOTE in q for q in asked_later)
    out = tmp_path / "prefs.jsonl"
    export_feedback(f"sqlite+aiosqlite:///{db}", out, options=ExportOptions(format="dpo"))
    assert fl.exported(out) == (4, 1)  # three soups under 불고기, then 모르겠어요 under 비빔밥 with the taste said
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["chosen"] for r in rows if SOUP_NOTE in r["prompt"]] == [" 비빔밥 어때요?"]
    assert "2 learned questions asked, 1 yes, 1 no; 1 of 1 users end with their taste remembered" in fl.taste_line(phase)


@pytest.mark.parametrize("hates", fl.TASTES)
async def test_a_fresh_user_says_their_taste_first_and_every_prompt_carries_it(catalog, tmp_path, hates) -> None:
    fake = FakeGenerator(["불고기 어때요?"])
    phase, _ = await run(catalog, tmp_path, [], hates, state=True, fake=fake)
    user = fl.SimUser(7, hates)
    assert phase.stated == {7: True} and phase.remembered[7] == (user.taste,)
    assert fake.prompts and all(f"싫어하는 것: {user.taste.label}." in p for p in fake.prompts)
    assert [s.answer.text for s in phase.shown] == ["불고기 어때요?"]  # the statement itself cost no answer
