"""`mechuri dataset export`: merge, validate and write Alpaca JSONL for training (and optionally the Hub).

The output has exactly the keys `instruction, input, output`, one object a line, UTF-8, so both
`datasets.load_dataset("json", data_files=...)` and model/'s trainer read it. Inputs may be Alpaca JSONL or seed-task
JSONL (each instance becomes a row). Exact duplicate questions across the inputs are written once.

    mechuri dataset export --in data/generated.jsonl --in dataset_builder/seed_tasks.jsonl \\
        --out data/train.jsonl --eval-out data/eval.jsonl --eval-fraction 0.05

`--push-to-hub REPO` then uploads the files (hub.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dataset_builder.filter import normalize_key
from dataset_builder.schema import AlpacaRow, BadLine, read_alpaca_or_seed


@dataclass
class ExportReport:
    train_rows: int = 0
    eval_rows: int = 0
    duplicates: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)


def write_alpaca(rows: Sequence[AlpacaRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(row.to_json() + "\n")


def export_alpaca(
    inputs: Sequence[Path],
    out: Path,
    *,
    eval_out: Path | None = None,
    eval_fraction: float = 0.0,
    seed: int = 0,
) -> ExportReport:
    """Write the rows of `inputs` to `out` (and a random `eval_fraction` of them to `eval_out`)."""
    if eval_out is not None and not 0 < eval_fraction < 1:
        raise ValueError(f"--eval-fraction must be between 0 and 1 when --eval-out is given, got {eval_fraction}")
    report = ExportReport()
    rows: list[AlpacaRow] = []
    seen: set[str] = set()
    for path in inputs:
        for _, row in read_alpaca_or_seed(path, report.bad_lines):
            row = AlpacaRow(instruction=row.instruction.strip(), input=row.input.strip(), output=row.output.strip())
            key = normalize_key(row.question())
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            rows.append(row)
    eval_rows: list[AlpacaRow] = []
    if eval_out is not None:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        held_out = set(order[: max(1, round(eval_fraction * len(rows)))]) if rows else set()
        eval_rows = [r for i, r in enumerate(rows) if i in held_out]
        rows = [r for i, r in enumerate(rows) if i not in held_out]
        write_alpaca(eval_rows, eval_out)
    write_alpaca(rows, out)
    report.train_rows, report.eval_rows = len(rows), len(eval_rows)
    return report

