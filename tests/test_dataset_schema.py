"""Seed-task and Alpaca schemas, the forgiving JSONL reader, and torn-line repair."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from dataset_builder.schema import (
    AlpacaRow,
    BadLine,
    SeedTask,
    read_alpaca_or_seed,
    read_jsonl,
    repair_torn_tail,
)

SEED = {
    "id": "seed_task_0",
    "name": "recommend_menu",
    "instruction": "편의점 간식 추천해줘",
    "instances": [{"input": "", "output": "젤리나 초콜릿은 어떠세요?"}],
    "is_classification": False,
}


def test_seed_task_from_the_report_validates_and_becomes_alpaca_rows():
    task = SeedTask.model_validate(SEED)
    assert task.to_alpaca_rows() == [AlpacaRow(instruction="편의점 간식 추천해줘", output="젤리나 초콜릿은 어떠세요?")]


@pytest.mark.parametrize(
    "change",
    [
        {"instances": []},
        {"instruction": "   "},
        {"instances": [{"input": ""}]},
        {"instances": [{"input": "", "output": "x", "extra": 1}]},
        {"id": 3},
        {"typo_field": True},
    ],
)
def test_seed_task_rejects_broken_tasks(change):
    with pytest.raises(ValidationError):
        SeedTask.model_validate({**SEED, **change})


def test_alpaca_row_needs_instruction_and_output_and_defaults_input():
    assert AlpacaRow.model_validate({"instruction": "해장 추천", "output": "북엇국 어떠세요?"}).input == ""
    with pytest.raises(ValidationError):
        AlpacaRow.model_validate({"instruction": "해장 추천", "input": "", "output": ""})
    with pytest.raises(ValidationError):
        AlpacaRow.model_validate({"instruction": 5, "output": "숫자는 안 돼요"})


def test_question_joins_input_only_when_present():
    assert AlpacaRow(instruction="뭐 만들까", input="계란, 파", output="볶음밥").question() == "뭐 만들까\n계란, 파"
    assert AlpacaRow(instruction="뭐 만들까", input=" ", output="볶음밥").question() == "뭐 만들까"


def test_reader_reports_bad_lines_with_numbers_and_keeps_going(tmp_path, caplog):
    path = tmp_path / "rows.jsonl"
    good = json.dumps({"instruction": "저녁 뭐 먹지", "input": "", "output": "김치찌개 어때요?"}, ensure_ascii=False)
    path.write_text(
        "\n".join(
            [
                good,
                '{"instruction": "잘린 줄", "output": ',  # line 2: not JSON
                "",  # line 3: blank, skipped silently
                '["not", "an", "object"]',  # line 4
                '{"instruction": "출력 없음"}',  # line 5: schema
                good.replace("저녁", "점심"),  # line 6
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    bad: list[BadLine] = []
    rows = list(read_jsonl(path, AlpacaRow, bad))
    assert [n for n, _ in rows] == [1, 6]
    assert [b.line for b in bad] == [2, 4, 5]
    assert "not valid JSON" in bad[0].error and "output" in bad[2].error
    assert f"{path}:2:" in caplog.text


def test_read_alpaca_or_seed_expands_seed_instances(tmp_path):
    path = tmp_path / "seeds.jsonl"
    task = {**SEED, "instances": [{"input": "", "output": "젤리 어때요?"}, {"input": "단 거 싫어", "output": "육포요."}]}
    path.write_text(json.dumps(task, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = [row for _, row in read_alpaca_or_seed(path)]
    assert [r.input for r in rows] == ["", "단 거 싫어"]


def test_repair_torn_tail_drops_a_cut_line_and_ends_a_whole_one(tmp_path):
    path = tmp_path / "out.jsonl"
    whole = '{"instruction": "해장 추천", "input": "", "output": "북엇국"}'
    path.write_text(whole + "\n" + '{"instruction": "잘', encoding="utf-8")
    assert repair_torn_tail(path) is True
    assert path.read_text(encoding="utf-8") == whole + "\n"
    path.write_text(whole, encoding="utf-8")
    assert repair_torn_tail(path) is False
    assert path.read_text(encoding="utf-8") == whole + "\n"
    assert repair_torn_tail(tmp_path / "missing.jsonl") is False
