"""`mechuri dataset generate`: Self-Instruct with any OpenAI-compatible endpoint.

Each request shows the model k seed tasks and m rows it made earlier and asks for `tasks_per_request` new rows as a
JSON array (see prompts.py). Rows that parse are filtered against the seeds and every row kept so far (filter.py),
then appended to the output and flushed one by one, so a crash loses only the requests in flight. On restart the
output is read back and only the missing rows, up to `--num`, are generated. Every answer, good or bad, is appended to
`<out>.raw.jsonl` for audit.

Retries are the openai client's own (`max_retries`): it retries timeouts, connection errors, 408/409/429 and 5xx with
exponential backoff and jitter, and honours Retry-After. A request whose retries ran out is logged with its cause and
the fix, counted as failed, and the run goes on. Errors no retry can fix (bad key, unknown model, wrong URL) stop the
run with the cause and the fix.
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
from typing import IO, Any
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletion
from tqdm.auto import tqdm

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
# The openai client numbers each attempt of a call in this request header, 0 for the first: any other is a retry.
RETRY_COUNT_HEADER = "x-stainless-retry-count"


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
    retry_base_delay: float = 1.0  # the first backoff, doubled at each retry (jittered)
    retry_max_delay: float = 60.0  # the cap on one backoff, Retry-After included
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


def failure_hint(exc: Exception, cfg: GenerateConfig) -> str:
    """The cause of a request that failed for good (its retries ran out, or no retry could help) and the fix."""
    retries = f"after {cfg.max_retries} retries (--max-retries)"
    if isinstance(exc, openai.APITimeoutError):
        return (f"no answer within {cfg.request_timeout:g} s {retries}: raise --timeout, or lower --max-tokens or "
                "--concurrency")
    if isinstance(exc, openai.APIConnectionError):
        return f"could not reach {cfg.base_url} {retries}: check --base-url and that the server is running"
    if isinstance(exc, openai.RateLimitError):
        return f"rate limited (429) {retries}: lower --concurrency, or rerun later to resume"
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return (f"{cfg.base_url} answered {exc.status_code} {retries}: the server is failing; rerun later to "
                "resume, or raise --max-retries")
    if isinstance(exc, ValueError):
        return (f"{cfg.base_url} answered with a body that is not JSON (a proxy's error page?): check --base-url; "
                "rerun to resume")
    return f"{type(exc).__name__}: {exc}"


class _BackoffClient(openai.AsyncOpenAI):
    """The SDK's client and its retries (which failures, how many, Retry-After honoured), with the waits our flags
    set: --retry-base-delay doubling at each retry, jittered, and no wait longer than --retry-max-delay (a longer
    Retry-After is cut to it). The SDK has no public setting for its waits; this is its one seam for them
    (docs/decisions.md)."""

    def __init__(self, *, base_delay: float, max_delay: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_delay, self.max_delay = base_delay, max_delay

    def _calculate_retry_timeout(self, remaining_retries: int, options: Any, response_headers: Any = None) -> float:
        retry_after = self._parse_retry_after_header(response_headers)
        if retry_after is not None and retry_after > 0:
            return min(retry_after, self.max_delay)
        attempt = options.get_max_retries(self.max_retries) - remaining_retries
        return min(self.base_delay * 2 ** min(attempt, 30) * random.uniform(0.5, 1.0), self.max_delay)


def open_client(cfg: GenerateConfig, api_key: str, report: GenerateReport) -> openai.AsyncOpenAI:
    """The client, retrying as `cfg` says; every retry it sends is counted in `report.retries`."""

    async def count_retry(request: Any) -> None:
        if request.headers.get(RETRY_COUNT_HEADER, "0") != "0":
            report.retries += 1

    http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [count_retry]})
    return _BackoffClient(base_url=cfg.base_url, api_key=api_key, max_retries=cfg.max_retries,
                          timeout=cfg.request_timeout, http_client=http, base_delay=cfg.retry_base_delay,
                          max_delay=cfg.retry_max_delay)


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
        self.out: IO[str] | None = None
        self.raw: IO[str] | None = None
        self.bar: Any = None

    def done(self) -> bool:
        return len(self.rows) >= self.cfg.num

    def audit(self, record: dict) -> None:
        self.raw.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.raw.flush()

    async def rounds(self, client: openai.AsyncOpenAI) -> None:
        """Ask in rounds until `num` rows are kept, the request budget is used up, or rounds keep nothing."""
        sem = asyncio.Semaphore(self.cfg.concurrency)
        idle_rounds = 0
        while not self.done():
            kept = await self.round(client, sem)
            if kept is None:
                log.warning("stopping: request budget (--max-requests %s) used up", self.cfg.max_requests)
                return
            idle_rounds = 0 if kept else idle_rounds + 1
            if idle_rounds >= self.cfg.max_idle_rounds:
                log.warning("stopping: %d rounds in a row kept no row (all failed or duplicates)", idle_rounds)
                return

    async def round(self, client: openai.AsyncOpenAI, sem: asyncio.Semaphore) -> int | None:
        """One round of requests; returns the rows it kept, or None when the request budget allows no request."""
        cfg = self.cfg
        # One round asks for just enough rows to finish if every one survives, so little is thrown away.
        wanted = math.ceil((cfg.num - len(self.rows)) / cfg.tasks_per_request)
        if cfg.max_requests is not None:
            wanted = min(wanted, cfg.max_requests - self.report.requests)
        if wanted <= 0:
            return None
        first = self.report.requests
        tasks = [asyncio.create_task(self.one_request(client, sem, first + i)) for i in range(wanted)]
        kept = 0
        try:
            for next_done in asyncio.as_completed(tasks):
                kept += await next_done
                if self.done():
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return kept

    async def one_request(self, client: openai.AsyncOpenAI, sem: asyncio.Semaphore, request_no: int) -> int:
        """Send one prompt, keep what survives parsing and filtering; returns the number of rows written."""
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
                log.error("request %d failed: %s", request_no, failure_hint(exc, cfg))
                return 0
        return self.accept(request_no, examples, completion)

    async def call(self, client: openai.AsyncOpenAI, prompt: str) -> ChatCompletion:
        cfg = self.cfg
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
                f"{cfg.base_url} answered 404 for model {cfg.model!r}: check --model and that --base-url ends in /v1"
            ) from exc
        except openai.BadRequestError as exc:
            if self.token_param == "max_tokens" and "max_completion_tokens" in str(exc):
                self.token_param = "max_completion_tokens"  # newer OpenAI models renamed the limit
                return await self.call(client, prompt)
            if not self.answered:
                raise GenerateError(
                    f"{cfg.base_url} rejected the first request (400: {exc.message}): check --model and the "
                    "sampling options (--temperature, --top-p, --max-tokens) for this server"
                ) from exc
            raise

    def accept(self, request_no: int, examples: list[AlpacaRow], completion: ChatCompletion) -> int:
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


def load_run(cfg: GenerateConfig) -> _Run:
    """The seeds, and the rows `cfg.output` already holds (a torn last line is cut off): what a run resumes from."""
    seeds = load_seeds(cfg.seed_file)
    rows: list[AlpacaRow] = []
    if cfg.output.exists():
        repair_torn_tail(cfg.output)
        rows = [row for _, row in read_jsonl(cfg.output, AlpacaRow)]
    seed_rows = [row for task in seeds for row in task.to_alpaca_rows()]
    return _Run(cfg, seeds, rows, RowFilter(cfg.filter, references=[*seed_rows, *rows]))


async def generate(cfg: GenerateConfig, api_key: str | None = None) -> GenerateReport:
    """Generate rows into `cfg.output` until it holds `cfg.num` rows (or the request budget runs out)."""
    start = time.perf_counter()
    api_key = api_key or resolve_api_key(cfg.base_url)
    run = load_run(cfg)
    if run.done():
        log.info("%s already holds %d rows (>= --num %d): nothing to do", cfg.output, len(run.rows), cfg.num)
    else:
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(raw_path_for(cfg.output))
        client = open_client(cfg, api_key, run.report)
        with (
            cfg.output.open("a", encoding="utf-8") as run.out,
            raw_path_for(cfg.output).open("a", encoding="utf-8") as run.raw,
            tqdm(total=cfg.num, initial=len(run.rows), unit="row", disable=not cfg.progress) as run.bar,
        ):
            try:
                await run.rounds(client)
            finally:
                await client.close()
    run.report.rows_total = len(run.rows)
    run.report.seconds = time.perf_counter() - start
    return run.report
