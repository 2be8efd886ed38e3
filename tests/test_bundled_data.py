"""The data we ship: seed tasks and the starter dataset match the schema and pass our own filter."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from dataset_builder.filter import FilterConfig, RowFilter, filter_rows
from dataset_builder.schema import AlpacaRow, BadLine, SeedTask, read_jsonl
from dataset_builder.similarity import make_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SEED_FILE = ROOT / "dataset_builder" / "seed_tasks.jsonl"
STARTER = ROOT / "data" / "mechuri_starter.jsonl"
STARTER_EVAL = ROOT / "data" / "mechuri_starter_eval.jsonl"


def load(path: Path, model):
    assert path.exists(), f"{path} is missing"
    bad: list[BadLine] = []
    rows = [row for _, row in read_jsonl(path, model, bad)]
    assert not bad, "\n".join(map(str, bad))
    return rows


@pytest.fixture(scope="module")
def kiwi():
    return make_tokenizer("kiwi")


@pytest.fixture(scope="module")
def starter() -> list[AlpacaRow]:
    return load(STARTER, AlpacaRow)


def test_seed_tasks_are_valid_and_unique():
    tasks = load(SEED_FILE, SeedTask)
    assert len(tasks) >= 200
    ids = Counter(t.id for t in tasks)
    assert not [i for i, n in ids.items() if n > 1], "duplicate seed ids"


def test_starter_data_is_valid(starter):
    assert len(starter) >= 400
    assert len(load(STARTER_EVAL, AlpacaRow)) >= 1


def test_starter_data_passes_the_filter_with_no_duplicates(starter, kiwi):
    result = filter_rows(starter, FilterConfig(mode="kiwi"), tokenizer=kiwi)
    duplicates = [
        f"{row.question()!r} ~ {d.nearest.question()!r} ({d.detail})"
        for row, d in result.dropped
        if d.reason in ("exact_duplicate", "near_duplicate")
    ]
    assert not duplicates, "\n".join(duplicates)
    broken = [f"{row.question()!r}: {d.reason} ({d.detail})" for row, d in result.dropped]
    assert not broken, "\n".join(broken)


def test_eval_rows_do_not_repeat_training_rows(starter, kiwi):
    # Leakage means the same question, so a stricter bar than the 0.7 diversity threshold: short requests built on
    # one pattern ("감기 기운 있을 때 먹을 음식" / "변비 있을 때 먹을 음식") score 0.73 and are different questions.
    train = RowFilter(FilterConfig(threshold=0.8, mode="kiwi"), references=starter, tokenizer=kiwi)
    leaks = []
    for row in load(STARTER_EVAL, AlpacaRow):
        decision = train.check(row)
        if decision.reason in ("exact_duplicate", "near_duplicate"):
            leaks.append(f"{row.question()!r} ~ {decision.nearest.question()!r} ({decision.detail})")
    assert not leaks, "\n".join(leaks)


def test_labelled_near_duplicate_pairs_cover_every_failure_class():
    pairs = [json.loads(line) for line in (ROOT / "data" / "near_duplicates.jsonl").read_text("utf-8").splitlines()]
    assert len(pairs) >= 300
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert len({frozenset((p["a"], p["b"])) for p in pairs}) == len(pairs), "a pair is listed twice"
    for p in pairs:
        assert set(p) == {"id", "split", "category", "a", "b", "label", "reason"}, p
        assert p["split"] in ("tune", "heldout") and p["label"] in ("duplicate", "distinct"), p
        assert p["a"].strip() and p["b"].strip() and p["a"] != p["b"] and p["reason"].strip(), p
    classes = {"paraphrase", "politeness", "spacing", "synonym", "word_order", "slot_dish", "slot_ingredient",
               "slot_cuisine", "slot_region", "slot_meal", "slot_person", "slot_constraint", "question_type"}
    for split in ("tune", "heldout"):
        assert classes <= {p["category"] for p in pairs if p["split"] == split}, split
