"""The demo build runs its whole recipe however slow the machine is, and says how long is left (issue 24)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from model.demo import build
from model.demo.build import DemoRecipe, demo_lr, encode_pairs, fit_demo


def test_a_slow_machine_still_runs_every_step(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = GPTNeoXForCausalLM.from_pretrained(tiny_model_dir)
    pairs = [("### 질문: 매운 거 추천해줘\n\n### 답변:", " 떡볶이 어때요?"), ("### 질문: 해장\n\n### 답변:", " 콩나물국밥!")]
    features = encode_pairs(tokenizer, pairs * 4, 64)
    recipe = DemoRecipe(steps=30, batch_size=2, warmup=5)
    # Every clock reading is a minute later: a machine where each step takes minutes (the old cap was 7).
    ticks = itertools.count(0, 60.0)
    monkeypatch.setattr(build.time, "perf_counter", lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger="model.demo.build"):
        fit = fit_demo(model, tokenizer, features, recipe, progress=True)
    assert fit.steps_done == 30 and len(fit.losses) == 30
    # Not a terminal here: one line per tenth of the steps, each with the time left (none at the end).
    lines = [r.getMessage() for r in caplog.records if "left" in r.getMessage()]
    assert len(lines) == 10 and lines[0].startswith("demo model: step 3 of 30, about")
    assert lines[-1].endswith("about 0 min 00 s left")


def test_the_schedule_follows_the_steps_only() -> None:
    recipe = DemoRecipe(steps=100, warmup=10, lr=1e-3)
    assert demo_lr(recipe, 0) == pytest.approx(1e-4)
    assert demo_lr(recipe, 10) == pytest.approx(1e-3)
    assert demo_lr(recipe, 100) == pytest.approx(1e-4)  # fully decayed at the last step, whatever the clock says
    assert not hasattr(recipe, "max_minutes")
