"""bench/demo_quality.py runs end to end through the conversation service on a tiny model, check on and off."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def test_demo_quality_bench_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from bench.demo_quality import main

    out = tmp_path / "answers.json"
    assert main(["--variant", f"off={tiny_model_dir},check=off,temperature=0.7", "--variant", f"on={tiny_model_dir}",
                 "--limit", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| off | first answers | 3 |" in printed and "| on | 다른 거 | 3 |" in printed
    answers = json.loads(out.read_text(encoding="utf-8"))
    assert [s["kind"] for s in answers["on"]] == ["first", "retry"] * 3
    assert all(s["samples"] == 1 for s in answers["off"] if s["kind"] == "first")  # no check, nothing to resample
    assert not any(s["repeats_turned_down"] for s in answers["on"] + answers["off"])
