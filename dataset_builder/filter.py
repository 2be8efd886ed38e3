"""Quality filter for Alpaca rows: length, blacklist, Korean answer, exact and near duplicates.

Library use:
    result = filter_rows(rows, FilterConfig(threshold=0.7), references=seed_rows)
    result.kept, result.dropped, result.counts

or, one row at a time (as `generate` does): `RowFilter(config, references).offer(row) -> Decision`.

What is compared: the user's side of a row, `instruction` plus `input` when there is one, so two rows that ask the
same question of different inputs ("이 재료로 뭐 만들 수 있어?" + different fridge contents) both stay.
Rules run in this order and the first that fails names the reason:
    too_short / too_long   instruction has < 2 letters (keeps "해장 추천"), or a field is over its bound
    blacklist              asks for something a text bot cannot do (사진, 이미지, 그래프, 파일, 영상, 음악, ...)
    not_korean             the instruction has no Hangul
    bad_answer             the output is blank or not mostly Hangul
    prompt_marker          a field contains "###", which would close a turn in the KoAlpaca prompt
    exact_duplicate        same question once spaces, punctuation and case are removed
    near_duplicate         ROUGE-L F1 > threshold against a kept row or a reference row (Self-Instruct's rule)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dataset_builder.schema import AlpacaRow, BadLine, read_alpaca_or_seed
from dataset_builder.similarity import NearDupIndex, Tokenizer, make_tokenizer, tokenize_all

REASONS = (
    "too_short",
    "too_long",
    "blacklist",
    "not_korean",
    "bad_answer",
    "prompt_marker",
    "exact_duplicate",
    "near_duplicate",
)

# Requests a text-only menu bot cannot serve. "영상 5도" (above zero) and "노래방" are weather and places, not media.
BLACKLIST_PATTERNS = (
    r"사진",
    r"이미지",
    r"그림(?!자)",
    r"그려",
    r"그래프",
    r"차트",
    r"도표",
    r"다이어그램",
    r"파일",
    r"첨부",
    r"영상(?!\s*[0-9])",
    r"음악",
    r"노래(?!방)",
    r"음성",
    r"녹음",
    r"링크",
    r"엑셀",
    r"\b(?:image|photo|picture|video|file|graph|chart|audio|music|url)s?\b",
    r"https?://",
)


@dataclass
class FilterConfig:
    threshold: float = 0.7
    tokenizer: str = "kiwi"
    min_instruction_letters: int = 2
    max_instruction_chars: int = 300
    max_input_chars: int = 1000
    min_output_letters: int = 2
    max_output_chars: int = 2000
    min_hangul_ratio: float = 0.5
    blacklist: tuple[str, ...] = BLACKLIST_PATTERNS


@dataclass
class Decision:
    kept: bool
    reason: str | None = None
    detail: str = ""
    score: float | None = None
    nearest: AlpacaRow | None = None


@dataclass
class FilterResult:
    kept: list[AlpacaRow] = field(default_factory=list)
    dropped: list[tuple[AlpacaRow, Decision]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)  # one per input row, in input order
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    tokenize_seconds: float = 0.0


def normalize_key(text: str) -> str:
    """Exact-duplicate key: NFKC, lower case, letters and digits only."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())


def _is_hangul(c: str) -> bool:
    return "가" <= c <= "힣" or "ᄀ" <= c <= "ᇿ" or "ㄱ" <= c <= "ㆎ"


def hangul_ratio(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(map(_is_hangul, letters)) / len(letters) if letters else 0.0


class RowFilter:
    """The filter's state: rows kept so far (plus references), their exact keys and their near-duplicate index."""

    def __init__(
        self,
        config: FilterConfig | None = None,
        references: Iterable[AlpacaRow] = (),
        *,
        tokenizer: Tokenizer | None = None,
        index_factory=NearDupIndex,
    ) -> None:
        self.config = config or FilterConfig()
        self.tokenizer = tokenizer or make_tokenizer(self.config.tokenizer)
        self._blacklist = re.compile("|".join(f"(?:{p})" for p in self.config.blacklist), re.IGNORECASE)
        self._index = index_factory(self.config.threshold)
        self._rows: list[AlpacaRow] = []  # index position -> row, references included
        self._keys: dict[str, int] = {}
        references = list(references)
        for row, tokens in zip(references, tokenize_all(self.tokenizer, [r.question() for r in references]), strict=True):
            self.add(row, tokens)

    def __len__(self) -> int:
        return len(self._rows)

    def rule_failure(self, row: AlpacaRow) -> tuple[str, str] | None:
        """The first rule (other than duplicates) the row breaks, as (reason, detail); None if it passes."""
        cfg = self.config
        letters = len(normalize_key(row.instruction))
        if letters < cfg.min_instruction_letters:
            return "too_short", f"instruction has {letters} letters (< {cfg.min_instruction_letters})"
        if len(normalize_key(row.output)) < cfg.min_output_letters:
            return "too_short", f"output has fewer than {cfg.min_output_letters} letters"
        for name, limit in (
            ("instruction", cfg.max_instruction_chars),
            ("input", cfg.max_input_chars),
            ("output", cfg.max_output_chars),
        ):
            if len(getattr(row, name)) > limit:
                return "too_long", f"{name} is {len(getattr(row, name))} chars (> {limit})"
        hit = self._blacklist.search(row.question())
        if hit:
            return "blacklist", f"asks for {hit.group(0)!r}"
        if not any(map(_is_hangul, row.instruction)):
            return "not_korean", "instruction has no Hangul"
        ratio = hangul_ratio(row.output)
        if ratio < cfg.min_hangul_ratio:
            return "bad_answer", f"output is {ratio:.0%} Hangul (< {cfg.min_hangul_ratio:.0%})"
        if any("###" in getattr(row, name) for name in ("instruction", "input", "output")):
            return "prompt_marker", "contains '###', the KoAlpaca turn marker"
        return None

    def check(self, row: AlpacaRow, tokens: Sequence[str] | None = None) -> Decision:
        failure = self.rule_failure(row)
        if failure:
            return Decision(False, *failure)
        key = normalize_key(row.question())
        if key in self._keys:
            return Decision(False, "exact_duplicate", "same question", 1.0, self._rows[self._keys[key]])
        if tokens is None:
            tokens = self.tokenizer.tokenize(row.question())
        best = self._index.best(tokens)
        if best is not None:
            score, idx = best
            return Decision(False, "near_duplicate", f"ROUGE-L {score:.3f}", score, self._rows[idx])
        return Decision(True)

    def add(self, row: AlpacaRow, tokens: Sequence[str] | None = None) -> None:
        """Record a row as kept, so later rows are compared against it."""
        if tokens is None:
            tokens = self.tokenizer.tokenize(row.question())
        self._index.add(tokens)
        self._keys.setdefault(normalize_key(row.question()), len(self._rows))
        self._rows.append(row)

    def offer(self, row: AlpacaRow, tokens: Sequence[str] | None = None) -> Decision:
        decision = self.check(row, tokens)
        if decision.kept:
            self.add(row, tokens)
        return decision

    @property
    def candidates_checked(self) -> int:
        return self._index.candidates_checked


def filter_rows(
    rows: Sequence[AlpacaRow],
    config: FilterConfig | None = None,
    references: Sequence[AlpacaRow] = (),
    *,
    tokenizer: Tokenizer | None = None,
    index_factory=NearDupIndex,
) -> FilterResult:
    """Filter rows in order; each is compared with the references and the rows kept before it."""
    start = time.perf_counter()
    config = config or FilterConfig()
    tokenizer = tokenizer or make_tokenizer(config.tokenizer)
    all_tokens = tokenize_all(tokenizer, [r.question() for r in (*references, *rows)])
    ref_tokens, row_tokens = all_tokens[: len(references)], all_tokens[len(references) :]
    tokenized = time.perf_counter()
    state = RowFilter(config, tokenizer=tokenizer, index_factory=index_factory)
    for ref, tokens in zip(references, ref_tokens, strict=True):
        state.add(ref, tokens)
    result = FilterResult()
    for row, tokens in zip(rows, row_tokens, strict=True):
        decision = state.offer(row, tokens)
        result.decisions.append(decision)
        if decision.kept:
            result.kept.append(row)
            result.counts["kept"] += 1
        else:
            result.dropped.append((row, decision))
            result.counts[decision.reason] += 1
    result.seconds = time.perf_counter() - start
    result.tokenize_seconds = tokenized - start
    return result


def dropped_record(row: AlpacaRow, decision: Decision, line: int | None = None) -> dict:
    record = {**json.loads(row.to_json()), "reason": decision.reason, "detail": decision.detail}
    if line is not None:
        record["line"] = line
    if decision.score is not None:
        record["score"] = round(decision.score, 4)
    if decision.nearest is not None:
        record["nearest"] = json.loads(decision.nearest.to_json())
    return record


def format_counts(counts: Counter, total: int, bad_lines: int = 0) -> str:
    lines = [f"{'reason':<18}{'rows':>8}{'share':>8}"]
    for reason in ("kept", *REASONS):
        if counts.get(reason):
            lines.append(f"{reason:<18}{counts[reason]:>8}{counts[reason] / max(total, 1):>8.1%}")
    if bad_lines:
        lines.append(f"{'bad_line':<18}{bad_lines:>8}   (unreadable, see warnings)")
    lines.append(f"{'total':<18}{total:>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.threshold <= 1:
        print(f"--threshold must be in (0, 1], got {args.threshold}", file=sys.stderr)
        return 2
    if args.out.resolve() == args.input.resolve():
        print("--out must differ from --in: the input is read while the output is written", file=sys.stderr)
        return 2
    bad: list[BadLine] = []
    references = [row for path in args.reference for _, row in read_alpaca_or_seed(path, bad)]
    numbered = list(read_alpaca_or_seed(args.input, bad))
    rows = [row for _, row in numbered]
    result = filter_rows(rows, FilterConfig(threshold=args.threshold, tokenizer=args.tokenizer), references)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in result.kept:
            f.write(row.to_json() + "\n")
    if args.dropped:
        args.dropped.parent.mkdir(parents=True, exist_ok=True)
        line_of = {id(row): line for line, row in numbered}
        with args.dropped.open("w", encoding="utf-8") as f:
            for row, decision in result.dropped:
                f.write(json.dumps(dropped_record(row, decision, line_of.get(id(row))), ensure_ascii=False) + "\n")
    for b in bad:
        print(f"bad line {b}", file=sys.stderr)
    print(format_counts(result.counts, len(rows), len(bad)))
    print(f"{len(result.kept)} rows -> {args.out} in {result.seconds:.1f} s ({args.tokenizer} tokens)")
    return 0
