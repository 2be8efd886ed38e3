"""`mechuri generate` and `mechuri --help`, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mechuri.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command_fast() -> None:
    done = subprocess.run([sys.executable, "-m", "mechuri", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("generate", "tiny", "chat", "bot", "db", "dataset", "train", "eval", "demo"):
        assert f"    {command}" in done.stdout, command
    # --help must not pay for torch: check that the CLI module imports none of the heavy libraries.
    probe = "import sys, mechuri.cli as c; c.build_parser(); print(sorted(m for m in ('torch', 'transformers', " \
            "'telegram', 'sqlalchemy', 'openai') if m in sys.modules))"
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert heavy.stdout.strip() == "[]", heavy.stdout + heavy.stderr


def test_same_seed_same_answer_other_seed_other_answer(capsys, tiny_model_dir: Path) -> None:
    args = ("generate", "--model", str(tiny_model_dir), "--temperature", "1.2", "--max-new-tokens", "40",
            "매운 요리 추천해줘")
    first = run(capsys, *args, "--seed", "7")
    again = run(capsys, *args, "--seed", "7")
    assert first[0] == again[0] == 0
    assert first[1] == again[1] and first[1].strip()
    assert "seed 7" in first[2] and "tok/s" in first[2]  # the line of timings
    others = {run(capsys, *args, "--seed", str(s))[1] for s in (8, 9, 10)}
    assert others - {first[1]}


def test_streamed_4bit_with_adapter(capsys, tiny_model_dir: Path, tiny_adapter_dir: Path) -> None:
    code, out, err = run(capsys, "generate", "--model", str(tiny_model_dir), "--adapter", str(tiny_adapter_dir),
                         "--quantization", "4bit", "--seed", "3", "--stream", "--max-new-tokens", "20", "해장 추천")
    assert code == 0 and out.strip()
    assert "adapter spicy@" in err and "cpu/4bit" in err


def test_clear_errors_and_nonzero_exit(capsys, tmp_path: Path, tiny_adapter_dir: Path) -> None:
    code, _, err = run(capsys, "generate", "--model", str(tmp_path / "missing"), "x")
    assert code == 1 and "does not exist: check the path" in err and "Traceback" not in err
    code, _, err = run(capsys, "generate", "--model", str(tiny_adapter_dir), "x")
    assert code == 1 and "pass it as --adapter" in err
