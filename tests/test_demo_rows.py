"""Rows from the catalog's tags for the demo model: each question asks for its wish, each dish fits it, and no row is
one of the held-out questions the demo is measured on."""

from __future__ import annotations

import json
import random
from pathlib import Path

from model.demo.rows import ENDINGS, TEXTS, tag_rows
from model.food.dishes import DishCatalog
from model.food.fit import WISHES, dish_fits, wishes_in

HELD_OUT = Path(__file__).resolve().parents[1] / "data" / "demo_eval_questions.jsonl"


def test_every_wording_asks_for_its_wish() -> None:
    assert set(TEXTS) <= set(WISHES)
    for wish, text in TEXTS.items():
        for ask in text.asks:
            for ending in ENDINGS[:3]:
                assert wish in wishes_in(ask + ending), (wish, ask + ending)


def test_rows_fit_and_stay_apart_from_the_held_out_questions() -> None:
    catalog = DishCatalog.load()
    rows = tag_rows(list(catalog), random.Random(0), per_wish=20, retries_per_wish=10)
    assert len(rows) == 30 * len(TEXTS)
    held_out = {json.loads(line)["instruction"] for line in HELD_OUT.read_text(encoding="utf-8").splitlines()}
    assert not {r.question for r in rows} & held_out
    for row in rows:
        named = catalog.names_in(row.answer)
        assert len(named) == 1 and dish_fits(catalog[named[0]], wishes_in(row.question)), row
        assert named[0] not in row.turned_down
    retries = [r for r in rows if r.turned_down]
    assert len(retries) == 10 * len(TEXTS) and all(r.answer.split()[0] in ("그럼", "그렇다면", "이번엔", "대신")
                                                    for r in retries)


def test_the_answer_words_name_no_dish_of_their_own() -> None:
    catalog = DishCatalog.load()
    for text in TEXTS.values():
        for sentence in (*text.opens, *text.reasons):
            assert catalog.names_in(sentence) == [], sentence


def test_thread_picker_keeps_the_faster_choice() -> None:
    from model.demo.build import ThreadPicker

    picker = ThreadPicker(2, every=20, probe=3)
    slow = {1: 0.1, 2: 1.0}  # a loaded machine: one thread wins
    for step in range(40):
        threads = picker.for_step(step)
        picker.record(step, slow[threads])
    assert picker.history == [1, 1] and picker.for_step(10) == 1
    assert [picker.for_step(s) for s in range(40, 46)] == [1, 1, 1, 2, 2, 2]  # the next probe tries both again
    assert ThreadPicker(1).for_step(0) == 1


def test_the_cache_key_reads_files_that_exist(tmp_path: Path) -> None:
    """cache_key skips a missing file silently, so a moved file would stop keying the cache: every file is there,
    and a change to one of them changes the key."""
    from model.demo.build import DATA_FILES, KEY_FILES, QUICK_RECIPE, cache_key

    assert all(path.is_file() for path in (*DATA_FILES, *KEY_FILES))
    rows = tmp_path / "rows.py"
    rows.write_text(KEY_FILES[1].read_text(encoding="utf-8"), encoding="utf-8")
    before = cache_key(QUICK_RECIPE, (*DATA_FILES, rows))
    rows.write_text(rows.read_text(encoding="utf-8") + "# changed\n", encoding="utf-8")
    assert cache_key(QUICK_RECIPE, (*DATA_FILES, rows)) != before
