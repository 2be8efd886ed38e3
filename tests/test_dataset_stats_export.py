"""`mechuri dataset stats` and `mechuri dataset export` (read back with datasets.load_dataset)."""

from __future__ import annotations

import json
from pathlib import Path

from dataset_builder.schema import AlpacaRow
from dataset_builder.similarity import CharTokenizer
from dataset_builder.stats import render, similar_pairs, table

ROWS = [
    ("오늘 저녁 뭐 먹지", "", "김치찌개 어떠세요? 뜨끈해요."),
    ("오늘 저녁 뭐 먹지?", "", "된장찌개도 좋아요."),
    ("해장 추천", "", "콩나물국밥이 최고예요."),
    ("편의점 야식 추천해줘", "", "삼각김밥과 컵라면 어때요?"),
    ("이 재료로 뭐 만들지", "계란, 대파", "계란볶음밥을 만들어 보세요. 김치찌개랑 먹어도 좋아요."),
]


def write_rows(path: Path, rows=ROWS) -> Path:
    path.write_text(
        "".join(json.dumps({"instruction": i, "input": n, "output": o}, ensure_ascii=False) + "\n" for i, n, o in rows),
        encoding="utf-8",
    )
    return path


def test_stats_tables(tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    with data.open("a", encoding="utf-8") as f:
        f.write("not json\n")
    catalog = tmp_path / "dishes.csv"
    catalog.write_text(
        "name,aliases,category,tags,allergens\n"
        "김치찌개,김치 찌개,찌개,매운|국물,돼지고기\n"
        "콩나물국밥,콩나물 국밥,국밥,해장,\n"
        "마라탕,,중식,매운,땅콩\n",
        encoding="utf-8",
    )
    text = render(data, CharTokenizer(), catalog)
    lines = text.splitlines()
    counts = lines[lines.index(next(line for line in lines if line.startswith("rows"))) + 2].split()
    assert counts == ["5", "1", "4", "4", "1"]  # rows, bad lines, unique questions, empty input, with input
    situation = {line.split()[0]: line.split()[1] for line in lines if line.split()[:1] in (["저녁"], ["해장"], ["편의점"])}
    assert situation == {"저녁": "2", "해장": "1", "편의점": "1"}
    assert "catalog dishes named in some answer: 2 / 3" in text
    assert "never named (1): 마라탕" in text
    assert "1.000" in text  # the "뭐 먹지" / "뭐 먹지?" pair leads the similar pairs


def test_similar_pairs_orders_by_score():
    rows = [AlpacaRow(instruction=i, input=n, output=o) for i, n, o in ROWS]
    pairs = similar_pairs(rows, CharTokenizer(), threshold=0.3, top=2)
    assert pairs[0][1:] == (0, 1) and pairs[0][0] == 1.0
    assert len(pairs) <= 2 and pairs == sorted(pairs, reverse=True)


def test_stats_tables_keep_one_row_per_line_when_a_question_has_newlines(tmp_path):
    rows = [("이 재료로 뭐 만들지", "냉장고:\n계란, 대파", "계란볶음밥 어때요?"),
            ("이 재료로 뭐 만들지", "냉장고:\n계란, 대파\t김치", "김치볶음밥 어때요?")]
    text = render(write_rows(tmp_path / "rows.jsonl", rows), CharTokenizer(), None)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ROUGE-L"))
    (pair,) = lines[header + 2 : header + 3]
    assert "이 재료로 뭐 만들지\\n냉장고:\\n계란," in pair and pair.split()[:2] == ["0.938", "1"]
    assert len(lines) == header + 3  # header, rule, one row: no stray line from the inputs' newlines


def test_table_aligns_hangul_as_double_width():
    lines = table(["이름", "n"], [["김치찌개", 3], ["밥", 12]]).splitlines()
    assert lines[2] == "김치찌개   3" and lines[3] == "밥        12"


def test_export_is_read_by_datasets_and_splits(tmp_path):
    from datasets import load_dataset

    alpaca = write_rows(tmp_path / "gen.jsonl")
    seeds = tmp_path / "seeds.jsonl"
    seed = {"id": "seed_task_0", "name": "recommend_menu", "instruction": "해장 추천",
            "instances": [{"input": "", "output": "북엇국"}, {"input": "매운 거", "output": "짬뽕"}],
            "is_classification": False}
    seeds.write_text(json.dumps(seed, ensure_ascii=False) + "\n", encoding="utf-8")
    from mechuri.dataset_commands import main

    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    code = main(["export", "--in", str(alpaca), "--in", str(seeds), "--out", str(train),
                 "--eval-out", str(evaluation), "--eval-fraction", "0.2"])
    assert code == 0
    ds = load_dataset("json", data_files={"train": str(train), "test": str(evaluation)}, cache_dir=str(tmp_path / "c"))
    assert ds["train"].column_names == ["instruction", "input", "output"]
    # 5 rows + 2 seed instances, less "뭐 먹지?" (same as "뭐 먹지") and the seed's "해장 추천": 5, 1 held out.
    assert (ds["train"].num_rows, ds["test"].num_rows) == (4, 1)
    questions = {r["instruction"] + r["input"] for split in ds.values() for r in split}
    assert "해장 추천매운 거" in questions and len(questions) == 5


def test_mechuri_cli_has_the_dataset_group(tmp_path, capsys):
    from mechuri.cli import main

    data = write_rows(tmp_path / "rows.jsonl")
    assert main(["dataset", "stats", str(data), "--tokenizer", "char", "--catalog", str(tmp_path / "none.csv")]) == 0
    assert "unique questions" in capsys.readouterr().out
