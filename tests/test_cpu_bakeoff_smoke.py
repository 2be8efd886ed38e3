"""bench/cpu_bakeoff.py end to end on the Polyglot-faithful tiny model: every path in its own process, the table,
and llama.cpp skipped with the reason when xllamacpp is not installed (as in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_cpu_bakeoff_runs_each_path_and_reports_the_lora(polyglot_model_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "bench/cpu_bakeoff.py", "--paths", "bf16,int4,llama.cpp", "--base",
                           str(polyglot_model_dir), "--workdir", str(tmp_path / "bakeoff")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    for path in ("bf16", "int4"):
        cells = [c.strip() for c in rows[path].split("|")[1:-1]]
        assert float(cells[3]) > 0 and float(cells[4]) > 0 and float(cells[5]) > 0, cells  # tokens/s measured
        assert cells[6].startswith("yes"), cells  # the LoRA changed the logits
    assert (tmp_path / "bakeoff" / "int4" / "mechuri_quantized.json").exists()
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        assert "skipped: xllamacpp not installed" in rows["llama.cpp"]
    else:  # the product's converter and LlamaCppGenerator, measured like the torch paths
        cells = [c.strip() for c in rows["llama.cpp"].split("|")[1:-1]]
        assert float(cells[3]) > 0 and float(cells[4]) > 0 and cells[6].startswith("yes"), cells
