"""`mechuri dataset generate`: Self-Instruct with any OpenAI-compatible endpoint.

Each request shows the model k seed tasks and m rows it made earlier and asks for `tasks_per_request` new rows as a
JSON array (see prompts.py). Rows that parse are filtered against the seeds and every row kept so far (filter.py),
then appended to the output and flushed one by one, so a crash loses only the requests in flight. On restart the
output is read back and only the missing rows, up to `--num`, are generated. Every answer, good or bad, is appended to
`<out>.raw.jsonl` for audit.

Retries: the client's own retry is off (max_retries=0) and this module retries 408/409/429/5xx and connection errors
with exponential backoff and jitter, honouring Retry-After, so the delays are ours to set (tests make them tiny).
Errors no retry can fix (bad key, unknown model, wrong URL) stop the run with the cause and the fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from dataset_builder.filter import FilterConfig, RowFilter
from dataset_builder.prompts import build_prompt, parse_tasks, sample_examples
from dataset_builder.schema import AlpacaRow, BadLine, SeedTask, read_jsonl, repair_torn_tail

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_SEED_FILE = Path(__file__).with_name("seed_tasks.jsonl")
LOCAL_DUMMY_KEY = "sk-local-no-key"
# USD per 1M tokens (input, output), list prices as published in 2025. Check before trusting a bill to them, and
# override with --price-in/--price-out. Longest matching prefix wins ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini").
PRICES_PER_MILLION = {
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}
RETRYABLE_STATUS = frozenset({408, 409, 429})


class GenerateError(RuntimeError):
    """A problem that stops the run; the message names the cause and the fix."""


@dataclass
class GenerateConfig:
    output: Path
    num: int
    seed_file: Path = DEFAULT_SEED_FILE
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    concurrency: int = 4
    tasks_per_request: int = 10
    num_seed_examples: int = 3
    num_machine_examples: int = 2
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 3000
    request_timeout: float = 120.0
    max_retries: int = 6
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    max_requests: int | None = None  # a budget for this run; None means enough to reach `num`
    max_idle_rounds: int = 3  # rounds in a row that keep nothing before giving up
    price_in: float | None = None
    price_out: float | None = None
    random_seed: int | None = None
    progress: bool = True
    filter: FilterConfig = field(default_factory=FilterConfig)


@dataclass
class GenerateReport:
    rows_before: int = 0
    rows_total: int = 0
    requests: int = 0
    failed_requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    problems: Counter = field(default_factory=Counter)  # parse problems and filter reasons
    seconds: float = 0.0

    @property
    def written(self) -> int:
        return self.rows_total - self.rows_before

    def summary(self) -> str:
        cost = f"${self.cost_usd:.4f}" if self.cost_usd is not None else "unknown (set --price-in/--price-out)"
        lines = [
            f"rows: {self.rows_total} ({self.written} new, {self.rows_before} already there)",
            f"requests: {self.requests} ({self.failed_requests} failed, {self.retries} retries) in {self.seconds:.1f} s",
            f"tokens: {self.prompt_tokens} in, {self.completion_tokens} out; estimated cost: {cost}",
        ]
        if self.problems:
            lines.append("skipped: " + ", ".join(f"{k}={v}" for k, v in self.problems.most_common()))
        return "\n".join(lines)


def price_for(model: str, price_in: float | None = None, price_out: float | None = None) -> tuple[float, float] | None:
    if (price_in is None) != (price_out is None):
        raise GenerateError("give both --price-in and --price-out (USD per 1M tokens), or neither")
    if price_in is not None and price_out is not None:
        return price_in, price_out
    for name in sorted(PRICES_PER_MILLION, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return PRICES_PER_MILLION[name]
    return None


def resolve_api_key(base_url: str, environ: dict[str, str] | None = None) -> str:
    environ = dict(os.environ) if environ is None else environ
    key = environ.get("OPENAI_API_KEY", "").strip()
    if key:
        return key
    host = urlparse(base_url).hostname or ""
    if host == "openai.com" or host.endswith(".openai.com"):
        raise GenerateError(
            "OPENAI_API_KEY is not set. Export it (export OPENAI_API_KEY=sk-...), or pass --base-url for a local "
            "OpenAI-compatible server (vLLM, llama.cpp, Ollama), which accepts any key."
        )
    return LOCAL_DUMMY_KEY  # local servers ignore the key, but the client insists on one


def raw_path_for(output: Path) -> Path:
    name = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(name + ".raw.jsonl")


def _retry_delay(cfg: GenerateConfig, attempt: int, exc: Exception) -> float:
    delay = cfg.retry_base_delay * 2**attempt * random.uniform(0.5, 1.0)
    response = getattr(exc, "response", None)
    retry_after = response.headers.get("retry-after") if response is not None else None
    if retry_after:
        try:
            delay = max(delay, float(retry_after))
        except ValueError:
            pass  # an HTTP date; the exponential delay will do
    return min(delay, cfg.retry_max_delay)


class _Run:
    """State of one generate run: shared by the request tasks, all on one event loop, so no locks are needed."""

    def __init__(self, cfg: GenerateConfig, seeds: list[SeedTask], rows: list[AlpacaRow], row_filter: RowFilter):
        self.cfg = cfg
        self.seeds = seeds
        self.rows = rows
        self.filter = row_filter
        self.report = GenerateReport(rows_before=len(rows), rows_total=len(rows))
        self.rng = random.Random(cfg.random_seed)
        self.price = price_for(cfg.model, cfg.price_in, cfg.price_out)
        self.token_param = "max_tokens"
        self.answered = False  # a 400 before any answer means the request itself is wrong: stop, don't loop
        self.out = None
        self.raw = None
        self.bar = None

    def done(self) -> bool:
        return len(self.rows) >= self.cfg.num

    def audit(self, record: dict) -> None:
        self.raw.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.raw.flush()

    async def call(self, client, prompt: str):
        import openai

        cfg = self.cfg
        attempt = 0
        while True:
            try:
                return await client.chat.completions.create(
                    model=cfg.model,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    **{self.token_param: cfg.max_tokens},
                )
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise GenerateError(
                    f"{cfg.base_url} refused the API key ({exc.status_code}): check OPENAI_API_KEY for this server"
                ) from exc
            except openai.NotFoundError as exc:
                raise GenerateError(
                    f"{cfg.base_url} answered 404 for model {cfg.model!r}: check --model and that --base-url ends "
                    "in /v1"
                ) from exc
            except openai.BadRequestError as exc:
                if self.token_param == "max_tokens" and "max_completion_tokens" in str(exc):
                    self.token_param = "max_completion_tokens"  # newer OpenAI models renamed the limit
                    continue
                if not self.answered:
                    raise GenerateError(
                        f"{cfg.base_url} rejected the first request (400: {exc.message}): check --model and the "
                        "sampling options (--temperature, --top-p, --max-tokens) for this server"
                    ) from exc
                raise
            except (openai.APIConnectionError, openai.APIStatusError, ValueError) as exc:
                # ValueError: a 200 whose body is not JSON (a proxy's error page), usually passing.
                status = getattr(exc, "status_code", None)
                retryable = status is None or status in RETRYABLE_STATUS or status >= 500
                if not retryable or attempt >= cfg.max_retries:
                    raise
                delay = _retry_delay(cfg, attempt, exc)
                attempt += 1
                self.report.retries += 1
                log.debug("request failed (%s), retry %d in %.2f s", status or type(exc).__name__, attempt, delay)
                await asyncio.sleep(delay)

    async def one_request(self, client, sem: asyncio.Semaphore, request_no: int) -> int:
        """Send one prompt, keep what survives parsing and filtering; returns the number of rows written."""
        import openai

        async with sem:
            if self.done():
                return 0
            cfg = self.cfg
            examples = sample_examples(self.seeds, self.rows, cfg.num_seed_examples, cfg.num_machine_examples, self.rng)
            prompt = build_prompt(examples, cfg.tasks_per_request)
            self.report.requests += 1
            try:
                completion = await self.call(client, prompt)
            except (openai.APIError, ValueError) as exc:  # retries used up, a 400, or a body that is not JSON
                self.report.failed_requests += 1
                self.report.problems["request_failed"] += 1
                self.audit({"request": request_no, "error": f"{type(exc).__name__}: {exc}"})
                log.warning("request %d failed after retries: %s", request_no, exc)
                return 0
        return self.accept(request_no, examples, completion)

    def accept(self, request_no: int, examples: list[AlpacaRow], completion) -> int:
        self.answered = True
        usage = getattr(completion, "usage", None)
        if usage is not None:
            self.report.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
            self.report.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
        choices = getattr(completion, "choices", None) or [None]
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None)
        if not isinstance(text, str):
            text = None
        parsed = parse_tasks(text)
        self.report.problems.update(parsed.problems)
        written = 0
        for row in parsed.rows:
            if self.done():
                self.report.problems["over_num"] += 1
                continue
            decision = self.filter.offer(row)
            if not decision.kept:
                self.report.problems[decision.reason] += 1
                continue
            row = decision.row or row  # cleaned: an input that only repeated the instruction is gone
            self.out.write(row.to_json() + "\n")
            self.out.flush()
            self.rows.append(row)
            written += 1
        self.audit(
            {
                "request": request_no,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "model": getattr(completion, "model", self.cfg.model),
                "examples": [ex.instruction for ex in examples],
                "finish_reason": getattr(choice, "finish_reason", None),
                "usage": usage.model_dump() if usage is not None and hasattr(usage, "model_dump") else None,
                "response": text,
                "parse_problems": dict(parsed.problems),
                "kept": written,
            }
        )
        self.report.cost_usd = self.cost()
        if self.bar is not None:
            self.bar.update(written)
            cost = f"${self.report.cost_usd:.3f}" if self.report.cost_usd is not None else "?"
            self.bar.set_postfix(tok=self.report.prompt_tokens + self.report.completion_tokens, cost=cost)
        return written

    def cost(self) -> float | None:
        if self.price is None:
            return None
        return (self.report.prompt_tokens * self.price[0] + self.report.completion_tokens * self.price[1]) / 1e6


def load_seeds(path: Path) -> list[SeedTask]:
    if not path.exists():
        raise GenerateError(f"seed task file {path} not found: pass --seed-tasks FILE (Self-Instruct JSONL)")
    bad: list[BadLine] = []
    seeds = [task for _, task in read_jsonl(path, SeedTask, bad)]
    if not seeds:
        raise GenerateError(f"no valid seed tasks in {path} ({len(bad)} bad lines): fix the file or pass another")
    return seeds


async def generate(cfg: GenerateConfig, api_key: str | None = None) -> GenerateReport:
    """Generate rows into `cfg.output` until it holds `cfg.num` rows (or the request budget runs out)."""
    from openai import AsyncOpenAI
    from tqdm.auto import tqdm

    start = time.perf_counter()
    api_key = api_key or resolve_api_key(cfg.base_url)
    seeds = load_seeds(cfg.seed_file)
    rows: list[AlpacaRow] = []
    if cfg.output.exists():
        repair_torn_tail(cfg.output)
        rows = [row for _, row in read_jsonl(cfg.output, AlpacaRow)]
    seed_rows = [row for task in seeds for row in task.to_alpaca_rows()]
    row_filter = RowFilter(cfg.filter, references=[*seed_rows, *rows])
    run = _Run(cfg, seeds, rows, row_filter)
    if run.done():
        log.info("%s already holds %d rows (>= --num %d): nothing to do", cfg.output, len(rows), cfg.num)
        run.report.seconds = time.perf_counter() - start
        return run.report

    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    repair_torn_tail(raw_path_for(cfg.output))
    client = AsyncOpenAI(base_url=cfg.base_url, api_key=api_key, max_retries=0, timeout=cfg.request_timeout)
    sem = asyncio.Semaphore(cfg.concurrency)
    idle_rounds = 0
    with (
        cfg.output.open("a", encoding="utf-8") as run.out,
        raw_path_for(cfg.output).open("a", encoding="utf-8") as run.raw,
        tqdm(total=cfg.num, initial=len(rows), unit="row", disable=not cfg.progress) as run.bar,
    ):
        try:
            while not run.done():
                # One round asks for just enough rows to finish if every one survives, so little is thrown away.
                wanted = math.ceil((cfg.num - len(rows)) / cfg.tasks_per_request)
                if cfg.max_requests is not None:
                    wanted = min(wanted, cfg.max_requests - run.report.requests)
                if wanted <= 0:
                    log.warning("stopping: request budget (--max-requests %s) used up", cfg.max_requests)
                    break
                first = run.report.requests
                tasks = [asyncio.create_task(run.one_request(client, sem, first + i)) for i in range(wanted)]
                kept_this_round = 0
                try:
                    for next_done in asyncio.as_completed(tasks):
                        kept_this_round += await next_done
                        if run.done():
                            break
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                idle_rounds = 0 if kept_this_round else idle_rounds + 1
                if idle_rounds >= cfg.max_idle_rounds:
                    log.warning("stopping: %d rounds in a row kept no row (all failed or duplicates)", idle_rounds)
                    break
        finally:
            await client.close()
    run.report.rows_total = len(rows)
    run.report.seconds = time.perf_counter() - start
    return run.report
