"""Preference data for `mechuri train --method dpo|kto` and `mechuri eval --prefs`: TRL's standard JSONL formats.

- DPO: {"prompt", "chosen", "rejected"}
- KTO: {"prompt", "completion", "label"}

`prompt` is the exact text the model saw at serving (model.prompt.build_prompt: it ends with "### 답변:"); the answers
are the model's text without EOS. Extra keys (e.g. "adapter_version") are ignored.

The files load with `datasets.load_dataset("json", data_files=...)` (the exporter's contract), but we read them line by
line: one broken line must cost that line, not the run. Tokenization is ours, not TRL's: the prompt is encoded alone,
exactly as the generator encodes it, and the answer is encoded apart as in SFT (one space + text, then EOS; a leading
space the exporter wrote is not doubled), so no token can
merge across the prompt/answer boundary and the preference loss sees the ids serving produced.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.prompt import ANSWER, neutralise
from model.training.sft_data import DataError, DataReport, Problem, jsonl_rows

log = logging.getLogger(__name__)

KEYS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label")}
FIX = {"dpo": "export DPO pairs (`mechuri dataset feedback` DPO format), or train with --method kto",
       "kto": "export KTO rows (`mechuri dataset feedback` KTO format), or train with --method dpo"}


@dataclass(frozen=True)
class PairRow:
    prompt: str
    chosen: str
    rejected: str
    line: int


@dataclass(frozen=True)
class KtoRow:
    prompt: str
    completion: str
    label: bool
    line: int


def _fmt(keys: Sequence[str]) -> str:
    return ", ".join(f'"{k}"' for k in keys)


def _parse(raw: str, method: str, number: int) -> tuple[list[PairRow | KtoRow], str]:
    """The rows of one line (a DPO pair read for KTO gives two), or a reason it was skipped."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return [], f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(data, dict):
        return [], f"expected a JSON object, got {type(data).__name__}"
    as_pair = method == "kto" and "completion" not in data and all(k in data for k in KEYS["dpo"])
    wanted = KEYS["dpo"] if as_pair else KEYS[method]
    missing = [k for k in wanted if k not in data]
    if missing:
        return [], f"missing key(s) {_fmt(missing)}"
    for key in wanted:
        value = data[key]
        if key == "label":
            if not isinstance(value, bool):
                return [], '"label" must be true or false'
        elif not isinstance(value, str) or not value.strip():
            return [], f'"{key}" must be a non-empty string'
    prompt = data["prompt"]
    if not prompt.endswith(ANSWER):
        return [], f'"prompt" does not end with "{ANSWER}": give the exact serving prompt (model.prompt.build_prompt)'
    if method == "dpo" or as_pair:
        if data["chosen"].strip() == data["rejected"].strip():
            return [], '"chosen" and "rejected" are the same answer: nothing to prefer'
        if as_pair:  # KTO learns from each answer alone: the pair is one desirable and one undesirable row
            return [KtoRow(prompt, data["chosen"], True, number), KtoRow(prompt, data["rejected"], False, number)], ""
        return [PairRow(prompt, data["chosen"], data["rejected"], number)], ""
    return [KtoRow(prompt, data["completion"], data["label"], number)], ""


def read_prefs(path: str | Path, method: str) -> tuple[list[Any], DataReport]:
    """Rows of a DPO or KTO file; bad lines are counted, reported with their numbers and skipped.

    Zero usable rows is an error whose message names the missing keys and the fix (most often: the wrong --method).
    """
    if method not in KEYS:
        raise ValueError(f"unknown preference method {method!r}: choose dpo or kto")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"preference file {path} does not exist: give a JSONL file of {_fmt(KEYS[method])} objects "
                        "(`mechuri dataset feedback` writes one)")
    report = DataReport(path=str(path))
    rows: list[Any] = jsonl_rows(path, report, lambda raw, number: _parse(raw, method, number))
    if not rows:  # one clear error, not a warning per line first
        raise DataError(_no_rows_message(path, method, report))
    for problem in report.bad[:20]:
        log.warning("%s: skipped %s", path, problem)
    if len(report.bad) > 20:
        log.warning("%s: … and %d more bad lines", path, len(report.bad) - 20)
    return rows, report


def _no_rows_message(path: Path, method: str, report: DataReport) -> str:
    missing = [p.reason for p in report.bad if p.reason.startswith("missing key(s)")]
    if missing:
        other = "kto" if method == "dpo" else "dpo"
        return (f"{path} holds no usable {method.upper()} rows: {missing[0]} on {len(missing)} line(s); "
                f"--method {method} needs {_fmt(KEYS[method])} (the {other.upper()} format is "
                f"{_fmt(KEYS[other])}): {FIX[method]}")
    reasons = "; ".join(str(p) for p in report.bad[:3]) or "the file is empty"
    return f"{path} holds no usable rows ({reasons}): each line must be a JSON object with {_fmt(KEYS[method])}"


def pairs_from_kto(rows: Sequence[KtoRow]) -> tuple[list[PairRow], int]:
    """DPO pairs from KTO rows that share a prompt: every desirable answer against every undesirable one.
    Returns the pairs and how many rows found no partner."""
    by_prompt: dict[str, tuple[list[KtoRow], list[KtoRow]]] = {}
    for row in rows:
        by_prompt.setdefault(row.prompt, ([], []))[0 if row.label else 1].append(row)
    pairs, unpaired = [], 0
    for good, bad in by_prompt.values():
        if not good or not bad:
            unpaired += len(good) + len(bad)
        pairs += [PairRow(g.prompt, g.completion, b.completion, g.line) for g in good for b in bad
                  if g.completion.strip() != b.completion.strip()]
    return pairs, unpaired


def answer_ids(tokenizer: Any, text: str, eos_id: int) -> list[int]:
    """The answer as SFT trains it (model.prompt.format_example): one space after the marker, the text, then EOS.
    `mechuri dataset feedback` already writes that space (TRL joins prompt and answer as strings) and the bare stored
    text has none; both give the same ids here."""
    return [*tokenizer.encode(" " + neutralise(text.lstrip()), add_special_tokens=False), eos_id]


def tokenize_prefs(tokenizer: Any, rows: Sequence[Any], report: DataReport, *, eos_id: int,
                   max_length: int) -> list[dict[str, Any]]:
    """TRL's tokenized columns: prompt_ids + chosen_ids/rejected_ids (DPO) or completion_ids/label (KTO)."""
    out: list[dict[str, Any]] = []
    prompts: dict[str, list[int]] = {}  # a KTO file repeats each prompt
    for row in rows:
        prompt_ids = prompts.setdefault(row.prompt, tokenizer.encode(row.prompt, add_special_tokens=False))
        if isinstance(row, PairRow):
            answers = {"chosen_ids": answer_ids(tokenizer, row.chosen, eos_id),
                       "rejected_ids": answer_ids(tokenizer, row.rejected, eos_id)}
        else:
            answers = {"completion_ids": answer_ids(tokenizer, row.completion, eos_id), "label": row.label}
        longest = max(len(v) for v in answers.values() if isinstance(v, list))
        if len(prompt_ids) + longest > max_length:
            report.too_long.append(Problem(row.line, f"{len(prompt_ids) + longest} tokens > max-length {max_length}"))
            continue
        report.prompt_tokens += len(prompt_ids)
        report.answer_tokens += sum(len(v) for v in answers.values() if isinstance(v, list))
        out.append({"prompt_ids": list(prompt_ids), **answers})
    report.examples = len(out)
    if report.too_long:
        log.warning("%s: dropped %d row(s) longer than %d tokens (raise --max-length to keep them)",
                    report.path, len(report.too_long), max_length)
    return out


def load_prefs(path: str | Path, method: str, tokenizer: Any, *, eos_id: int, max_length: int,
               seed: int | None = None) -> tuple[list[dict[str, Any]], DataReport]:
    """Read, check and tokenize a preference file. KTO rows are shuffled with `seed`: TRL's KTO reads them in order
    (its KL estimate pairs neighbours), and an export grouped by label would give one-label batches."""
    rows, report = read_prefs(path, method)
    if method == "kto" and seed is not None:
        random.Random(seed).shuffle(rows)
    examples = tokenize_prefs(tokenizer, rows, report, eos_id=eos_id, max_length=max_length)
    if not examples:
        raise DataError(f"{path}: every row is longer than --max-length {max_length} tokens: raise --max-length")
    return examples, report
