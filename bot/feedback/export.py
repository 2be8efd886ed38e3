"""Preference data from the history: `mechuri dataset feedback` writes TRL's DPO or KTO JSONL from users' feedback.

A *chain* is one user question and its answers in id order ("다른 거" answers the same question again). Only answers
with status ok/rejected and a stored prompt and completion count (failed/pending answers are no feedback).

- Turned down: status 'rejected' (a "다른 거" press) or a 👎 vote.
- Kept: a 👍 vote (on an answer not turned down); with no 👍 in the chain, the last ok answer if it has no 👎 and the
  user moved on (a later question in the conversation, or the conversation closed). Until then the chain is *open*.

Every row's prompt is the prompt of the chain's FIRST answer: what the model saw before anything was turned down
(retries' prompts list the turned-down dishes). Completions get the one leading space that follows "### 답변:" in
training (model.prompt.format_example): TRL concatenates prompt + completion as strings, and the stored completion
is stripped. Rows carry no user, chat, turn or seed, only an `adapter_version` key.

The database is only read (bot/store/feedback.py `read_feedback_turns`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from bot.store.feedback import FeedbackUnreadable, read_feedback_turns

FORMATS = ("dpo", "kto")
ANSWER_SPACE = " "  # "### 답변:" + " " + answer, as in model.prompt.format_example
MIXED = "mixed"  # a DPO pair whose two answers came from different adapter versions

# Kinds of labelled answers, for the counts.
RETRY, DOWN, UP, MOVED_ON = "retry", "down", "up", "moved_on"
KIND_NAMES = {RETRY: 'turned down by "다른 거"', DOWN: "👎", UP: "👍 chosen", MOVED_ON: "moved-on chosen"}


class FeedbackExportError(Exception):
    """The export cannot run; the message names the cause and the fix (and never a password)."""


@dataclass(frozen=True)
class ExportOptions:
    format: str = "dpo"
    since: date | None = None
    adapter_version: str | None = None
    min_pairs: int = 1
    eval_fraction: float = 0.0  # share of prompts held out; 0 = no held-out file


@dataclass(frozen=True)
class Answer:
    id: int  # internal only: counts answers once; never written
    status: str
    prompt: str | None
    completion: str | None
    vote: str | None
    adapter_version: str | None
    created_at: datetime | None

    @property
    def complete(self) -> bool:
        """Stored since migration 0003; a premise refusal stores neither (it is not the model's words)."""
        return bool(self.prompt) and self.completion is not None


@dataclass
class Chain:
    """One question's answers, labelled. `state`: labelled, open, partial or no_chosen."""

    prompt: str
    chosen: list[tuple[Answer, str]] = field(default_factory=list)
    rejected: list[tuple[Answer, str]] = field(default_factory=list)
    state: str = "labelled"
    conflicting: int = 0  # answers both 👍'd and turned down: counted as turned down


@dataclass(frozen=True)
class Row:
    data: dict[str, Any]  # exactly what is written
    answers: tuple[tuple[int, str], ...]  # (answer id, kind) of the answers in it, for the counts

    @property
    def key(self) -> str:
        # Identical training rows once; the adapter version is bookkeeping, not training content.
        return json.dumps({k: v for k, v in self.data.items() if k != "adapter_version"}, ensure_ascii=False,
                          sort_keys=True)


@dataclass
class ExportReport:
    format: str
    rows: dict[str, int] = field(default_factory=dict)  # file → rows written
    kinds: Counter[str] = field(default_factory=Counter)  # labelled answers in the written rows, by kind
    adapter_versions: Counter[str] = field(default_factory=Counter)  # rows written, by adapter version
    chains: int = 0
    open: int = 0
    partial: int = 0
    no_chosen: int = 0
    orphans: int = 0
    conflicting: int = 0
    filtered: int = 0
    duplicates: int = 0
    below_min_pairs: int = 0

    def summary(self) -> str:
        lines = [f"{n} {self.format.upper()} rows -> {path}" for path, n in self.rows.items()]
        lines.append("labelled answers: " + ", ".join(f"{KIND_NAMES[k]} {self.kinds[k]}" for k in KIND_NAMES))
        versions = ", ".join(f"{v} {n}" for v, n in sorted(self.adapter_versions.items())) or "none"
        lines.append(f"rows by adapter version: {versions}")
        lines.append(
            f"chains: {self.chains}; skipped: {self.partial} partial (answers without a stored prompt/completion, "
            f"e.g. from before migration 0003), {self.no_chosen} turned down with nothing chosen, {self.open} open "
            f"(latest answer not judged yet), {self.orphans} answers without their question"
        )
        lines.append(f"rows dropped: {self.filtered} by --since/--adapter-version, {self.duplicates} duplicates, "
                     f"{self.below_min_pairs} below --min-pairs")
        if self.conflicting:
            lines.append(f"{self.conflicting} answers both 👍'd and turned down: counted as turned down")
        return "\n".join(lines)


# --- reading ------------------------------------------------------------------------------------------------------


def read_chains(database_url: str, report: ExportReport) -> list[Chain]:
    try:
        return list(_chains(read_feedback_turns(database_url), report))
    except FeedbackUnreadable as exc:
        raise FeedbackExportError(str(exc)) from exc


def _chains(rows: Iterable[Any], report: ExportReport) -> Iterator[Chain]:
    for _, group in groupby(rows, key=lambda r: r.conversation_id):
        turns = list(group)
        closed = turns[0].closed_at is not None
        questions = [t.id for t in turns if t.role == "user"]
        answers: dict[int, list[Answer]] = defaultdict(list)
        for t in turns:
            if t.role != "assistant" or t.status not in ("ok", "rejected"):
                continue
            if t.reply_to not in questions:
                report.orphans += 1
                continue
            answers[t.reply_to].append(Answer(t.id, t.status, t.prompt, t.completion, t.vote, t.adapter_version,
                                              t.created_at))
        last_question = max(questions, default=0)
        for question in questions:
            if answers[question]:
                report.chains += 1
                yield label_chain(answers[question], moved_on=closed or question < last_question)


def label_chain(answers: list[Answer], *, moved_on: bool) -> Chain:
    """The chosen and turned-down answers of one question (answers in id order, status ok/rejected)."""
    if not all(a.complete for a in answers):
        return Chain(prompt="", state="partial")
    chain = Chain(prompt=answers[0].prompt or "")
    # An empty answer (the model said nothing) teaches nothing as either side; the rest of its chain still does.
    answers = [a for a in answers if a.completion]
    for a in answers:
        if a.status == "rejected" or a.vote == "down":
            chain.rejected.append((a, RETRY if a.status == "rejected" else DOWN))
            chain.conflicting += a.vote == "up"
        elif a.vote == "up":
            chain.chosen.append((a, UP))
    if not chain.chosen:
        if not moved_on:
            chain.state = "open"
        else:
            kept = [a for a in answers if a.status == "ok"]
            if kept and kept[-1].vote != "down":
                chain.chosen.append((kept[-1], MOVED_ON))
    if not chain.chosen and chain.state == "labelled":
        chain.state = "no_chosen"
    return chain


# --- rows ---------------------------------------------------------------------------------------------------------


def _version(*answers: Answer) -> str | None:
    versions = {a.adapter_version for a in answers}
    return versions.pop() if len(versions) == 1 else MIXED


def chain_rows(chain: Chain, fmt: str) -> list[tuple[Row, tuple[Answer, ...]]]:
    if fmt == "dpo":
        return [
            (Row({"prompt": chain.prompt, "chosen": ANSWER_SPACE + (c.completion or ""),
                  "rejected": ANSWER_SPACE + (r.completion or ""), "adapter_version": _version(c, r)},
                 ((c.id, ck), (r.id, rk))), (c, r))
            for c, ck in chain.chosen for r, rk in chain.rejected
        ]
    labelled = sorted([(a, k, True) for a, k in chain.chosen] + [(a, k, False) for a, k in chain.rejected],
                      key=lambda x: x[0].id)
    return [
        (Row({"prompt": chain.prompt, "completion": ANSWER_SPACE + (a.completion or ""), "label": label,
              "adapter_version": a.adapter_version}, ((a.id, kind),)), (a,))
        for a, kind, label in labelled
    ]


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment  # SQLite gives naive UTC values


def _passes(answer: Answer, options: ExportOptions) -> bool:
    if options.adapter_version is not None and answer.adapter_version != options.adapter_version:
        return False
    if options.since is not None:
        start = datetime(options.since.year, options.since.month, options.since.day, tzinfo=UTC)
        return answer.created_at is not None and _as_utc(answer.created_at) >= start
    return True


def held_out(prompt: str, fraction: float) -> bool:
    """Deterministic by the prompt alone, so all rows of one prompt land on the same side."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def build_rows(chains: list[Chain], options: ExportOptions, report: ExportReport) -> list[Row]:
    rows: list[Row] = []
    seen: set[str] = set()
    for chain in chains:
        report.conflicting += chain.conflicting
        if chain.state == "partial":
            report.partial += 1
            continue
        if chain.state == "open":
            report.open += 1
            if options.format == "dpo":
                continue  # KTO still takes its turned-down answers: each is a label on its own
        if chain.state == "no_chosen" and options.format == "dpo":
            report.no_chosen += 1
            continue
        for row, answers in chain_rows(chain, options.format):
            if not all(_passes(a, options) for a in answers):
                report.filtered += 1
            elif row.key in seen:
                report.duplicates += 1
            else:
                seen.add(row.key)
                rows.append(row)
    per_prompt = Counter(r.data["prompt"] for r in rows)
    kept = [r for r in rows if per_prompt[r.data["prompt"]] >= options.min_pairs]
    report.below_min_pairs += len(rows) - len(kept)
    return kept


# --- writing ------------------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row.data, ensure_ascii=False) + "\n")
    os.replace(partial, path)  # a reader never sees half a file


def export_feedback(database_url: str, out: Path, *, eval_out: Path | None = None,
                    options: ExportOptions = ExportOptions()) -> ExportReport:
    if options.format not in FORMATS:
        raise FeedbackExportError(f"unknown format {options.format!r}: use one of {', '.join(FORMATS)}")
    report = ExportReport(format=options.format)
    rows = build_rows(read_chains(database_url, report), options, report)
    fraction = options.eval_fraction if eval_out is not None else 0.0
    train = [r for r in rows if not held_out(r.data["prompt"], fraction)]
    heldout = [r for r in rows if held_out(r.data["prompt"], fraction)]
    _write_jsonl(out, train)
    report.rows[str(out)] = len(train)
    if eval_out is not None:
        _write_jsonl(eval_out, heldout)
        report.rows[str(eval_out)] = len(heldout)
    for row in rows:
        report.adapter_versions[row.data["adapter_version"] or "unknown"] += 1
    report.kinds.update(kind for _, kind in {a for row in rows for a in row.answers})
    return report
