"""The generation benchmarks run end to end on CPU and print every table and configuration.

Both scripts run as subprocesses, started together so their imports overlap: `bench/gpu_generate.py --tiny` (the GPU
benchmark's CPU smoke mode, every configuration included) and `bench/generator_overhead.py --quick`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import replace_section  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("bench")
    # CUDA hidden: these are CPU smoke runs, and on a GPU machine the plain command would build the 5.8B model.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    commands = {
        "gpu": [sys.executable, "bench/gpu_generate.py", "--tiny", "--reps", "1", "--jsonl", str(tmp / "rows.jsonl")],
        "overhead": [sys.executable, "bench/generator_overhead.py", "--quick"],
        # No --tiny and no CUDA here: the script must refuse, and say how to run it.
        "refuse": [sys.executable, "bench/gpu_generate.py"],
    }
    started = {name: subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for name, cmd in commands.items()}
    done = {}
    for name, proc in started.items():
        out, err = proc.communicate(timeout=240)
        done[name] = subprocess.CompletedProcess(commands[name], proc.returncode, out, err)
    done["rows"] = [json.loads(line) for line in (tmp / "rows.jsonl").read_text().splitlines()] \
        if (tmp / "rows.jsonl").exists() else []
    # What a GPU session does with the rows it brought back: render them without measuring anything.
    done["report"] = subprocess.run([sys.executable, "bench/gpu_generate.py", "--tiny", "--report-only", "--jsonl",
                                     str(tmp / "rows.jsonl")], cwd=REPO, env=env, capture_output=True, text=True,
                                    timeout=60)
    return done


def test_gpu_generate_tiny_measures_every_configuration(runs) -> None:
    run = runs["gpu"]
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for label in ("a: HF generate, 4-bit NF4, LoRA unmerged (reference)", "b: HF generate, float32, LoRA merged",
                  "c: Generator, 4-bit NF4, LoRA unmerged", "c: Generator, 8-bit, LoRA unmerged",
                  "c: Generator, float32, LoRA merged", "d: Generator, float32, LoRA merged"):
        assert f"| {label} |" in out, f"no table row for {label}"
    assert "| configuration | prompt | TTFT | decode tok/s |" in out
    assert "| configuration | users at once | max batch | aggregate tok/s |" in out
    targets = re.search(r"Targets \(c, merged, unquantized\): (.*)", out)
    assert targets and targets.group(1).count(";") == 3, "each of the four GPU targets gets its number"
    rows = runs["rows"]
    singles = {(r["config"], r["prompt_tokens"]) for r in rows if r["config"] != "d"}
    assert singles == {(c, n) for c in ("a", "b", "c4", "c8", "cnone") for n in (8, 32, 64)}
    assert sorted((r["users"], r["max_batch"]) for r in rows if r["config"] == "d") == [(1, 16), (8, 16), (32, 16),
                                                                                         (32, 32)]
    for r in rows:
        assert r["new_tokens"] == 16 and r["decode_tps"] > 0 and 0 < r["ttft_s"] <= r["e2e_s"]
        assert r["weight_bytes"] > 0 and r["bandwidth"] > 0
    # The reference's own ratio is exactly 1, and every other row's ratio is a number.
    assert re.search(r"\| a: HF generate.*?\| 8 \|.*?\| 1\.00× \| 1\.00× \|", out)
    assert not re.search(r"\| [bc]: .*\| n/a \| n/a \| \d+ % \|", out)


def test_report_only_renders_the_saved_rows(runs) -> None:
    run = runs["report"]
    assert run.returncode == 0, run.stderr[-3000:]
    measured = runs["gpu"].stdout
    table = measured[measured.index("| configuration | prompt |"):]
    assert table in run.stdout, "rendering the saved rows gives the table the measuring run printed"
    assert "Machine: CPU (1 thread(s)), tiny model" in run.stdout


def test_generator_overhead_quick_prints_both_tables(runs) -> None:
    run = runs["overhead"]
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert re.search(r"\| sampled \(T 0\.7, top-p 0\.9, rep 1\.1\) \| \d+ \| \d+ \| [+-]\d+\.\d % \|", out)
    assert re.search(r"\| greedy \(rep 1\.1\) \| \d+ \| \d+ \| [+-]\d+\.\d % \|", out)
    assert re.search(r"\| one after another \| [\d.]+ s \| \d+ \| 1\.00× \|", out)
    assert re.search(r"\| 16 at once \| [\d.]+ s \| \d+ \| [\d.]+× \|", out)
    for n in (1, 4, 8, 16):
        assert re.search(rf"\n\| {n} \| \d+ \| [\d.]+× \| \d+ ms \|", out), f"no scaling row for {n} requests"
    assert "target ≤ 5 %" in out and "target ≥ 3×" in out


def test_gpu_generate_refuses_without_cuda(runs) -> None:
    run = runs["refuse"]
    assert run.returncode == 2
    assert "needs a CUDA GPU" in run.stderr and "--tiny" in run.stderr


def test_replace_section_keeps_the_other_sections() -> None:
    doc = "# Benchmarks\n\n## Filter speed\n\nfast\n\n## GPU generation\n\nold\n\n### sub\n\nold too\n\n## Bot\n\nok\n"
    new = replace_section(doc, "## GPU generation", "new table")
    assert new == "# Benchmarks\n\n## Filter speed\n\nfast\n\n## GPU generation\n\nnew table\n\n## Bot\n\nok\n"
    assert replace_section(new, "## GPU generation", "new table") == new
    appended = replace_section("# Benchmarks\n", "## Generator overhead (CPU)", "numbers")
    assert appended == "# Benchmarks\n\n## Generator overhead (CPU)\n\nnumbers\n"
