"""The hand-written statement set (tests/data/taste_statements.jsonl) read by the real taste reader: an allergy said
clearly is never missed nor heard as a dislike, and what the bot proposes to remember was meant (issue 23).
bench/taste_statements.py prints the same scores per phrasing family, with the misses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.taste_statements import hear, load_rows, score  # noqa: E402
from bot.taste.parse import TasteReader  # noqa: E402
from model import DishCatalog  # noqa: E402

ROWS = load_rows()


@pytest.fixture(scope="module")
def reader() -> TasteReader:
    return TasteReader.load(DishCatalog.load())


def test_the_set_is_large_varied_and_has_a_held_out_part() -> None:
    assert len(ROWS) >= 200 and len({r["text"] for r in ROWS}) == len(ROWS)
    families = {r["family"] for r in ROWS}
    assert {"particles", "cant_eat", "reaction", "lists", "endings", "household", "negatives", "unsure"} <= families
    held = [r for r in ROWS if r["split"] == "held"]
    assert len(held) >= len(ROWS) // 5 and {r["family"] for r in held} == families


@pytest.mark.parametrize("row", [r for r in ROWS if r["clear"] and r["allergies"]], ids=lambda r: r["text"])
def test_every_clear_allergy_is_heard_as_an_allergy(reader: TasteReader, row: dict) -> None:
    heard = hear(reader, row["text"])
    assert set(row["allergies"]) <= heard.allergies, (row["text"], heard)
    assert not heard.dislikes & set(row["allergies"]), "an allergen heard as a dislike"


@pytest.mark.parametrize("row", [r for r in ROWS if r["family"] == "negatives"], ids=lambda r: r["text"])
def test_negatives_questions_and_cured_allergies_remember_nothing(reader: TasteReader, row: dict) -> None:
    assert not hear(reader, row["text"]).proposes


def test_precision_and_the_other_kinds_on_the_whole_set(reader: TasteReader) -> None:
    total = score(reader, ROWS)
    assert total.precision >= 0.95 and total.proposal_precision >= 0.95, total.misses
    for kind in ("diets", "dislikes", "likes"):
        assert total.accuracy(kind) >= 0.9, (kind, total.misses)
