"""Alpaca rows → tokenized examples for supervised fine-tuning, with answer-only labels that keep the EOS.

The common KoAlpaca recipe sets `pad_token = eos_token` and uses `DataCollatorForLanguageModeling`, which masks every
pad id out of the labels, and with it every EOS: the model never learns to stop. Here the labels are built from the
prompt/answer split itself, never from pad ids, so the EOS stays a target whatever the pad token is; we still insist on
a pad token distinct from EOS, so nothing downstream can confuse the two.

Train/serve parity: the prompt comes from `model.prompt.format_example`, which is `build_prompt`, the function the bot
serves with, and the prompt is tokenized on its own, exactly as the generator tokenizes it. The answer (which starts
with a space) is tokenized separately and followed by EOS.

Rows longer than `max_length` are dropped and counted, never cut: a cut answer loses its EOS (the one thing this module
exists to keep), and a cut prompt teaches the model to answer a question it cannot see.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from model.loading import eos_id_of
from model.prompt import format_example
from model.types import ModelError

T = TypeVar("T")

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
# Tried in order when a tokenizer has no pad token of its own, or pad == EOS. Polyglot-ko ships unused specials.
PAD_CANDIDATES = ("<|pad|>", "<pad>", "[PAD]", "<|unused0|>", "<|unused1|>")
NEW_PAD = "<|pad|>"


class DataError(ModelError):
    """A training or evaluation data file is missing or holds no usable rows."""


@dataclass(frozen=True)
class AlpacaRow:
    instruction: str
    input: str
    output: str
    line: int  # 1-based line in the file, for messages


@dataclass(frozen=True)
class Problem:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class DataReport:
    """What happened to each line of a data file: kept, skipped as bad, or dropped as too long."""

    path: str
    lines: int = 0
    rows: int = 0
    examples: int = 0
    bad: list[Problem] = field(default_factory=list)
    too_long: list[Problem] = field(default_factory=list)
    prompt_tokens: int = 0
    answer_tokens: int = 0  # EOS included

    def summary(self) -> str:
        text = (f"{self.path}: {self.examples} examples from {self.lines} lines "
                f"({self.prompt_tokens + self.answer_tokens} tokens, {self.answer_tokens} of them trained)")
        if self.bad:
            text += f"; skipped {len(self.bad)} bad line(s)"
        if self.too_long:
            text += f"; dropped {len(self.too_long)} row(s) longer than max-length"
        return text

    def details(self, limit: int = 10) -> list[str]:
        out = [f"  skipped {p}" for p in self.bad[:limit]]
        out += [f"  dropped {p}" for p in self.too_long[:limit]]
        hidden = max(len(self.bad) - limit, 0) + max(len(self.too_long) - limit, 0)
        if hidden:
            out.append(f"  … and {hidden} more")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "lines": self.lines, "rows": self.rows, "examples": self.examples,
            "bad_lines": [{"line": p.line, "reason": p.reason} for p in self.bad],
            "too_long": [{"line": p.line, "reason": p.reason} for p in self.too_long],
            "prompt_tokens": self.prompt_tokens, "answer_tokens": self.answer_tokens,
        }


def jsonl_lines(path: Path, report: DataReport) -> Iterator[tuple[int, str]]:
    """Each non-blank line of a JSONL file, decoded, with its number. A line that is not UTF-8 goes into
    `report.bad` and is skipped; a BOM on the first line is allowed (editors on Windows write one)."""
    with path.open("rb") as f:
        for number, data in enumerate(f, start=1):
            report.lines = number
            try:
                raw = data.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                report.bad.append(Problem(number, f"not UTF-8 (byte {exc.start + 1}): save the file as UTF-8"))
                continue
            if raw.strip():
                yield number, raw


def jsonl_rows(path: Path, report: DataReport, parse: Callable[[str, int], tuple[list[T], str]]) -> list[T]:
    """The rows `parse(line, number)` makes of each line; a line it makes none of goes into `report.bad` with the
    reason it gives."""
    rows: list[T] = []
    for number, raw in jsonl_lines(path, report):
        parsed, reason = parse(raw, number)
        if parsed:
            rows += parsed
        else:
            report.bad.append(Problem(number, reason))
    report.rows = len(rows)
    return rows


def read_alpaca_jsonl(path: str | Path) -> tuple[list[AlpacaRow], DataReport]:
    """Read `instruction, input, output` rows. Bad lines are reported with their numbers and skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist: give an Alpaca JSONL file "
                        "(one {\"instruction\", \"input\", \"output\"} object per line)")
    report = DataReport(path=str(path))
    rows = jsonl_rows(path, report, _parse_numbered)
    for problem in report.bad:
        log.warning("%s: skipped %s", path, problem)
    return rows, report


def _parse_numbered(raw: str, number: int) -> tuple[list[AlpacaRow], str]:
    row, reason = _parse_line(raw)
    return ([dataclasses.replace(row, line=number)] if row is not None else []), reason


def _parse_line(raw: str) -> tuple[AlpacaRow | None, str]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    instruction, input_text, output = data.get("instruction"), data.get("input", ""), data.get("output")
    if not isinstance(instruction, str) or not instruction.strip():
        return None, "missing or empty \"instruction\""
    if not isinstance(output, str) or not output.strip():
        return None, "missing or empty \"output\""
    if input_text is None:
        input_text = ""
    if not isinstance(input_text, str):
        return None, "\"input\" must be a string"
    return AlpacaRow(instruction, input_text, output, 0), ""


def ensure_distinct_pad(tokenizer: Any, embedding_rows: int | None = None) -> int:
    """Give the tokenizer a pad token that is not EOS, and return its id.

    An existing unused special token is preferred; otherwise `<|pad|>` is added, which must fit in the embedding
    matrix (Polyglot pads its vocabulary to a multiple of 64, so there is room) — resizing would put the embeddings in
    the adapter.
    """
    eos = eos_id_of(tokenizer)
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return int(tokenizer.pad_token_id)
    vocab = tokenizer.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab and vocab[candidate] != eos:
            tokenizer.pad_token = candidate
            return int(vocab[candidate])
    tokenizer.add_special_tokens({"pad_token": NEW_PAD})
    pad = int(tokenizer.pad_token_id)
    if embedding_rows is not None and pad >= embedding_rows:
        raise ModelError(f"the tokenizer has no pad token distinct from EOS and no room to add one (vocabulary "
                         f"{len(tokenizer)} > {embedding_rows} embedding rows): add a pad token to the base model")
    return pad


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    line: int

    def as_features(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids, "labels": self.labels}


def tokenize_row(tokenizer: Any, row: AlpacaRow, eos_id: int) -> Example:
    """One row as prompt tokens (label -100) followed by answer tokens and EOS (all trained)."""
    prompt, answer = format_example(row.instruction, row.input, row.output)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    answer_ids = [*tokenizer.encode(answer, add_special_tokens=False), eos_id]
    return Example(prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids, row.line)


def tokenize_rows(tokenizer: Any, rows: Sequence[AlpacaRow], report: DataReport, *, eos_id: int,
                  max_length: int) -> list[Example]:
    examples: list[Example] = []
    for row in rows:
        example = tokenize_row(tokenizer, row, eos_id)
        if len(example.input_ids) > max_length:
            report.too_long.append(Problem(row.line, f"{len(example.input_ids)} tokens > max-length {max_length}"))
            continue
        trained = sum(1 for label in example.labels if label != IGNORE_INDEX)
        report.prompt_tokens += len(example.input_ids) - trained
        report.answer_tokens += trained
        examples.append(example)
    report.examples = len(examples)
    if report.too_long:
        log.warning("%s: dropped %d row(s) longer than %d tokens (raise --max-length to keep them)",
                    report.path, len(report.too_long), max_length)
    return examples


def load_examples(path: str | Path, tokenizer: Any, *, eos_id: int, max_length: int) -> tuple[list[Example],
                                                                                               DataReport]:
    rows, report = read_alpaca_jsonl(path)
    examples = tokenize_rows(tokenizer, rows, report, eos_id=eos_id, max_length=max_length)
    if not examples:
        reasons = "; ".join(report.details(3)) or "the file is empty"
        raise DataError(f"{path} holds no usable rows ({reasons.strip()}): each line must be a JSON object with "
                        "non-empty \"instruction\" and \"output\"")
    return examples, report


def answer_collator(tokenizer: Any) -> Any:
    """transformers' `DataCollatorForSeq2Seq`: right-pads `input_ids` with the pad id, `attention_mask` with 0 and
    `labels` with -100. The labels come padded from our examples, never from pad ids, so the EOS stays a target.

    It pads on the tokenizer's side, and `load_tokenizer` pads left for generation: the collator gets a shallow copy
    that pads right, so the caller's tokenizer (often the generator's) is left as it was.
    """
    from transformers import DataCollatorForSeq2Seq

    right = copy.copy(tokenizer)
    right.padding_side = "right"
    return DataCollatorForSeq2Seq(right, label_pad_token_id=IGNORE_INDEX)
