"""`mechuri dataset generate` against a fake OpenAI-compatible server on 127.0.0.1, with the real openai client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_openai import TASK_POOL, FakeOpenAI, completion, error, hang, not_json_body, pool_replies, tasks_json

from dataset_builder.filter import FilterConfig, normalize_key
from dataset_builder.generate import (
    GenerateConfig,
    GenerateError,
    generate,
    price_for,
    raw_path_for,
    resolve_api_key,
)
from dataset_builder.prompts import build_prompt, parse_tasks
from dataset_builder.schema import AlpacaRow, BadLine, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [
    ("편의점 간식 추천해줘", "젤리나 초콜릿은 어떠세요?"),
    ("삼겹살에 어울리는 술은?", "소주나 맥주가 잘 어울려요."),
    ("비빔밥에 들어가는 나물 종류", "시금치, 고사리, 콩나물이 기본이에요."),
]


@pytest.fixture
def seed_file(tmp_path) -> Path:
    path = tmp_path / "seeds.jsonl"
    tasks = [
        {"id": f"seed_task_{i}", "name": "recommend_menu", "instruction": q,
         "instances": [{"input": "", "output": a}], "is_classification": False}
        for i, (q, a) in enumerate(SEEDS)
    ]
    path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks), encoding="utf-8")
    return path


def config(seed_file: Path, out: Path, url: str, **overrides) -> GenerateConfig:
    values = dict(
        output=out, num=8, seed_file=seed_file, base_url=url, model="gpt-4o-mini", tasks_per_request=4,
        concurrency=2, progress=False, random_seed=0,
        filter=FilterConfig(mode="char"),
    )
    values.update(overrides)
    return GenerateConfig(**values)


def read_rows(path: Path) -> list[AlpacaRow]:
    bad: list[BadLine] = []
    rows = [r for _, r in read_jsonl(path, AlpacaRow, bad)]
    assert not bad, bad
    return rows


def assert_unique(rows: list[AlpacaRow]) -> None:
    keys = [normalize_key(r.question()) for r in rows]
    assert len(keys) == len(set(keys)), keys


# --- parsing model output -------------------------------------------------------------------------------------

def test_parse_plain_fenced_and_wrapped_lists():
    body = tasks_json(0, 2)
    for text in (body, f"```json\n{body}\n```", f"여기 있어요:\n{body}\n즐거운 식사!", json.dumps({"tasks": json.loads(body)})):
        result = parse_tasks(text)
        assert [r.instruction for r in result.rows] == [TASK_POOL[0][0], TASK_POOL[1][0]], text
        assert not result.problems


def test_parse_counts_problems_and_never_raises():
    truncated = tasks_json(0, 3)[:-60]
    result = parse_tasks(truncated)
    assert len(result.rows) == 2 and result.problems == {"truncated_list": 1}
    mixed = json.dumps([{"instruction": "해장 추천", "output": ""}, {"output": "국밥"}, "문자열", {"instruction": "x",
                        "input": 3, "output": "y"}, {"instruction": "야식 추천", "output": "족발 어때요?"}],
                       ensure_ascii=False)
    result = parse_tasks(mixed)
    assert [r.instruction for r in result.rows] == ["야식 추천"]
    assert result.problems == {"missing_output": 1, "missing_instruction": 1, "not_an_object": 1, "bad_input_type": 1}
    for text, reason in [(None, "empty_response"), ("   ", "empty_response"), ("JSON이 뭐죠?", "no_json_list"),
                         ("[", "bad_json"), ("[oops]", "bad_json"), ("[]", "empty_list")]:
        assert parse_tasks(text).problems == {reason: 1}, text


def test_prompt_shows_examples_and_asks_for_a_json_list():
    prompt = build_prompt([AlpacaRow(instruction="해장 추천", output="북엇국 어떠세요?")], 7)
    assert "7개" in prompt and '"instruction": "해장 추천"' in prompt and "JSON 배열" in prompt


# --- keys and prices -------------------------------------------------------------------------------------------

def test_api_key_rules():
    with pytest.raises(GenerateError, match="OPENAI_API_KEY is not set"):
        resolve_api_key("https://api.openai.com/v1", {})
    assert resolve_api_key("https://api.openai.com/v1", {"OPENAI_API_KEY": "sk-real"}) == "sk-real"
    assert resolve_api_key("http://127.0.0.1:8000/v1", {}) == "sk-local-no-key"


def test_prices():
    assert price_for("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert price_for("gpt-4o") == (2.50, 10.00)
    assert price_for("my-local-llama") is None
    assert price_for("my-local-llama", 1.0, 2.0) == (1.0, 2.0)
    with pytest.raises(GenerateError):
        price_for("gpt-4o", 1.0, None)


# --- end to end with the fake server ---------------------------------------------------------------------------

async def test_generate_retries_skips_malformed_output_and_audits(seed_file, tmp_path, caplog):
    out = tmp_path / "gen.jsonl"
    script = [
        error(429, retry_after=0.01),
        error(500, retry_after=0.01),
        not_json_body(),
        completion("죄송하지만 JSON으로는 못 드려요."),
        completion(tasks_json(0, 4)[:-40], finish_reason="length"),
    ]
    with FakeOpenAI(script=script, default=pool_replies(4)) as server:
        report = await generate(config(seed_file, out, server.url, num=10, concurrency=1))
        http_requests = len(server.requests)
    rows = read_rows(out)
    assert len(rows) == 10 and report.rows_total == 10
    assert_unique(rows)
    # The client retries the 429 and the 500; a 200 whose body is not JSON is no transient status, so that request
    # fails (counted, audited, its cause logged) and the run goes on with the next one.
    assert report.retries == 2
    assert report.failed_requests == 1 and report.problems["request_failed"] == 1
    assert "not JSON" in caplog.text and "check --base-url" in caplog.text
    assert report.problems["no_json_list"] == 1 and report.problems["truncated_list"] == 1
    assert http_requests == report.requests + report.retries
    answered = report.requests - report.failed_requests
    assert report.prompt_tokens == 1000 * answered and report.completion_tokens == 500 * answered
    assert report.cost_usd == pytest.approx((report.prompt_tokens * 0.15 + report.completion_tokens * 0.60) / 1e6)
    audit = [json.loads(line) for line in raw_path_for(out).read_text(encoding="utf-8").splitlines()]
    assert len(audit) == report.requests
    assert audit[0]["error"].startswith("JSONDecodeError")
    assert audit[1]["response"] == "죄송하지만 JSON으로는 못 드려요." and audit[1]["kept"] == 0
    assert sum(a.get("kept", 0) for a in audit) == 10


async def test_retry_after_is_honoured(seed_file, tmp_path):
    with FakeOpenAI(script=[error(429, retry_after=0.4)]) as server:
        report = await generate(config(seed_file, tmp_path / "g.jsonl", server.url, num=4, concurrency=1))
        times = server.times
    assert report.retries == 1 and report.rows_total == 4
    assert times[1] - times[0] >= 0.4


async def test_the_backoff_flags_set_the_clients_waits(seed_file, tmp_path):
    with FakeOpenAI(script=[error(429, retry_after=5), error(500)]) as server:
        report = await generate(config(seed_file, tmp_path / "g.jsonl", server.url, num=4, concurrency=1,
                                       retry_base_delay=0.2, retry_max_delay=0.3))
        times = server.times
    assert report.retries == 2 and report.rows_total == 4
    assert times[1] - times[0] < 2  # a Retry-After of 5 s, cut to --retry-max-delay
    assert times[2] - times[1] >= 0.2  # no Retry-After: base 0.2 s doubled (second retry), jittered by at most half


async def test_new_rows_are_filtered_against_seeds_and_each_other(seed_file, tmp_path):
    out = tmp_path / "gen.jsonl"
    dupes = [{"instruction": SEEDS[0][0] + "!", "input": "", "output": "사탕 어때요?"},
             {"instruction": "매운 음식 추천해줘", "input": "", "output": "떡볶이 어떠세요?"},
             {"instruction": "매운 음식을 추천해 줘", "input": "", "output": "불닭 어떠세요?"},
             {"instruction": "이 사진 속 음식 뭐야?", "input": "", "output": "비빔밥 같아요."}]
    with FakeOpenAI(script=[completion(json.dumps(dupes, ensure_ascii=False))]) as server:
        report = await generate(config(seed_file, out, server.url, num=5, concurrency=1))
    assert read_rows(out)[0].instruction == "매운 음식 추천해줘"
    assert report.problems["exact_duplicate"] == 1 and report.problems["near_duplicate"] == 1
    assert report.problems["blacklist"] == 1


async def test_concurrency_is_bounded(seed_file, tmp_path):
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow(n, body):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return completion(tasks_json(n * 2, 2))

    with FakeOpenAI(default=slow) as server:
        report = await generate(config(seed_file, tmp_path / "g.jsonl", server.url, num=12, tasks_per_request=2,
                                       concurrency=3))
    assert report.rows_total == 12
    assert state["peak"] == 3


async def test_later_prompts_show_machine_made_rows(seed_file, tmp_path):
    with FakeOpenAI() as server:
        await generate(config(seed_file, tmp_path / "g.jsonl", server.url, num=12, concurrency=1))
        last_prompt = server.requests[-1]["messages"][0]["content"]
    assert any(q in last_prompt for q, _, _ in TASK_POOL[:8])


async def test_bad_key_stops_with_a_clear_error(seed_file, tmp_path):
    with FakeOpenAI(script=[error(401, "Incorrect API key")]) as server, pytest.raises(GenerateError, match="API key"):
        await generate(config(seed_file, tmp_path / "g.jsonl", server.url, concurrency=1))


async def test_requests_the_server_rejects_stop_with_the_reason(seed_file, tmp_path):
    for reply, message in [(error(404, "no such model"), "check --model"),
                           (error(400, "temperature must be 1"), "temperature must be 1")]:
        with FakeOpenAI(script=[reply]) as server, pytest.raises(GenerateError, match=message):
            await generate(config(seed_file, tmp_path / "g.jsonl", server.url, concurrency=1))


async def test_switches_to_max_completion_tokens_when_asked(seed_file, tmp_path):
    renamed = error(400, "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead.")
    with FakeOpenAI(script=[renamed]) as server:
        report = await generate(config(seed_file, tmp_path / "g.jsonl", server.url, num=4, concurrency=1))
        sent = server.requests
    assert report.rows_total == 4 and report.retries == 0
    assert "max_tokens" in sent[0] and "max_completion_tokens" in sent[1] and "max_tokens" not in sent[1]


async def test_retries_exhausted_counts_a_failed_request_and_goes_on(seed_file, tmp_path, caplog):
    with FakeOpenAI(script=[error(503)] * 3) as server:
        report = await generate(config(seed_file, tmp_path / "g.jsonl", server.url, num=4, concurrency=1,
                                       max_retries=2))
        http_requests = len(server.requests)
    assert report.failed_requests == 1 and report.problems["request_failed"] == 1
    assert report.retries == 2 and http_requests == 4  # 503 three times (the first try and 2 retries), then rows
    assert report.rows_total == 4
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1 and "answered 503 after 2 retries" in failures[0] and "rerun later" in failures[0]


async def test_resume_after_a_budget_limited_run(seed_file, tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeOpenAI() as server:
        first = await generate(config(seed_file, out, server.url, num=12, max_requests=1))
    assert first.rows_total == 4 and len(read_rows(out)) == 4
    # A fresh server starts its pool again: its first answer repeats rows we have, which the filter drops.
    with FakeOpenAI() as server:
        second = await generate(config(seed_file, out, server.url, num=12))
    rows = read_rows(out)
    assert len(rows) == 12 and second.rows_before == 4 and second.written == 8
    assert_unique(rows)
    assert second.problems["exact_duplicate"] == 4
    with FakeOpenAI() as server:
        third = await generate(config(seed_file, out, server.url, num=12))
        assert third.requests == 0 and not server.requests


async def test_resume_after_kill_9(seed_file, tmp_path):
    """Kill the CLI while a request hangs; the rows already received are on disk, complete, and a rerun finishes."""
    out = tmp_path / "gen.jsonl"
    with FakeOpenAI(script=[completion(tasks_json(0, 4)), completion(tasks_json(4, 4))], default=lambda n, b: hang()) \
            as server:
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        cmd = [sys.executable, "-m", "mechuri.dataset_commands", "generate", "--out", str(out), "--num", "20",
               "--tasks-per-request", "4", "--concurrency", "1", "--tokenizer", "char", "--seed-tasks",
               str(seed_file), "--base-url", server.url, "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(server.requests) < 3:
                time.sleep(0.05)
            assert len(server.requests) == 3, proc.stdout.read().decode() if proc.poll() is not None else "timeout"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()
    assert len(read_rows(out)) == 8
    with out.open("a", encoding="utf-8") as f:
        f.write('{"instruction": "쓰다가 잘린')  # as if the crash had cut a write in half
    with FakeOpenAI(default=lambda n, b: completion(tasks_json(8 + n * 4, 4))) as server:
        report = await generate(config(seed_file, out, server.url, num=20))
    rows = read_rows(out)
    assert len(rows) == 20 and report.rows_before == 8
    assert_unique(rows)
