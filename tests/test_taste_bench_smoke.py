"""bench/taste_week.py runs end to end (on the tiny model, two users, a few questions) and prints its table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_taste_week_runs_and_reports_zero_allergen_violations(tiny_model_dir: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "bench/taste_week.py", "--model", str(tiny_model_dir), "--users", "2",
                           "--questions", "3", "--max-new-tokens", "24"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Statements read exactly as meant: 2 of 2 users" in out
    taste = re.search(r"\| taste remembered, variety 7 days \| (\d+) \| (\d+) \| (\d+) \| \d+ \| \d+ \| (\d+) \|",
                      out)
    assert taste and int(taste.group(1)) >= 6 and taste.group(2) == taste.group(3) == taste.group(4) == "0"
    assert re.search(r"\| baseline: nothing remembered, variety off \| \d+ \|", out)
    assert re.search(r"Allergen violations with taste, dish or ingredient word: 0 over \d+ answers", out)
    assert re.search(r"Names a safe catalog dish: [\d.]+ % against the baseline's [\d.]+ %", out)
    assert re.search(r"in the model's own words, without the line of safe picks .*: [\d.]+ %", out)
