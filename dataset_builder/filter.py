"""Quality filter for Alpaca rows: length, blacklist, Korean answer, leaked answers, exact and near duplicates.

Library use:
    result = filter_rows(rows, FilterConfig(), references=seed_rows)
    result.kept, result.dropped, result.counts

or, one row at a time (as `generate` does): `RowFilter(config, references).offer(row) -> Decision`.

What is compared: the user's side of a row, `instruction` plus `input` when there is one, so two rows that ask the
same question of different inputs ("이 재료로 뭐 만들 수 있어?" + different fridge contents) both stay.
Rows are cleaned first: an input that repeats the instruction is removed (and so is an input equal to the output),
so exact duplicates are caught on what the model would actually see; kept rows are written cleaned.
Rules run in this order and the first that fails names the reason:
    too_short / too_long   instruction has < 2 letters (keeps "해장 추천"), or a field is over its bound
    blacklist              asks for something a text bot cannot do (사진, 이미지, 그래프, 파일, 영상, 음악, ...)
    not_korean             the instruction has no Hangul
    bad_answer             the output is blank or not Korean (most sentences must end in Hangul: English dish names
                           inside a Korean answer are fine, an English answer is not)
    prompt_marker          a field contains "###", which would close a turn in the KoAlpaca prompt
    answer_in_input        the input holds the whole answer: the row teaches copying, not answering
    exact_duplicate        same question once spaces, punctuation and case are removed
    near_duplicate         mode "slots" (default): same question type and slots, rest ROUGE-L > 0.7 (slots.py);
                           mode "kiwi" / "char": ROUGE-L F1 > 0.7 on the whole question (Self-Instruct's rule)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dataset_builder.cleaning import clean_row, is_hangul, korean_sentence_share, normalize_key
from dataset_builder.schema import AlpacaRow, BadLine, read_alpaca_or_seed
from dataset_builder.similarity import Match, NearDupIndex, RougeMatcher, Tokenizer, make_tokenizer
from dataset_builder.slots import DEFAULT_CATALOG, SlotExtractor, SlotMatcher

REASONS = (
    "too_short",
    "too_long",
    "blacklist",
    "not_korean",
    "bad_answer",
    "prompt_marker",
    "answer_in_input",
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


MODES = ("slots", "kiwi", "char")
# Slots mode compares only what is left once slots, particles, endings and fillers are gone, so 0.7 there is far
# looser than 0.7 on the whole question; 0.5 would also let one unknown extra word ("배달 빨리 오는 거") through.
DEFAULT_THRESHOLDS = {"slots": 0.7, "kiwi": 0.7, "char": 0.7}


@dataclass
class FilterConfig:
    mode: str = "slots"
    threshold: float | None = None  # None: DEFAULT_THRESHOLDS[mode]
    catalog: Path | None = DEFAULT_CATALOG  # dish names for the slots mode; without it dishes count as plain nouns
    min_instruction_letters: int = 2
    max_instruction_chars: int = 300
    max_input_chars: int = 1000
    min_output_letters: int = 2
    max_output_chars: int = 2000
    min_korean_sentences: float = 0.5
    min_leaked_answer_letters: int = 10
    blacklist: tuple[str, ...] = BLACKLIST_PATTERNS

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.threshold is None:
            self.threshold = DEFAULT_THRESHOLDS[self.mode]
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


@dataclass
class Decision:
    kept: bool
    reason: str | None = None
    detail: str = ""
    score: float | None = None
    nearest: AlpacaRow | None = None
    nearest_source: str = ""  # where the nearest row came from, e.g. "in.jsonl:3"
    compared: dict | None = None  # near duplicates in slots mode: both frames
    row: AlpacaRow | None = None  # the row as cleaned (what is kept and written)
    cleaned: str = ""  # what cleaning changed, if anything


@dataclass
class FilterResult:
    kept: list[AlpacaRow] = field(default_factory=list)
    dropped: list[tuple[AlpacaRow, Decision]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)  # one per input row, in input order
    counts: Counter = field(default_factory=Counter)
    cleaned: int = 0  # kept rows that were cleaned (input removed)
    seconds: float = 0.0
    tokenize_seconds: float = 0.0


def make_matcher(config: FilterConfig, tokenizer: Tokenizer | None = None, index_factory=NearDupIndex):
    """The near-duplicate decision for config.mode (a Tokenizer may be passed to share Kiwi in tests)."""
    if config.mode == "slots":
        return SlotMatcher(SlotExtractor(config.catalog), config.threshold, index_factory)
    if tokenizer is None or tokenizer.name != config.mode:
        tokenizer = make_tokenizer(config.mode)
    return RougeMatcher(tokenizer, config.threshold, index_factory)


@dataclass
class _Known:
    """A row that later rows are compared with: a reference, or a row kept so far."""

    row: AlpacaRow
    source: str


class RowFilter:
    """The filter's state: rows kept so far (plus references), their exact keys and the near-duplicate matcher."""

    def __init__(
        self,
        config: FilterConfig | None = None,
        references: Iterable[AlpacaRow] = (),
        *,
        tokenizer: Tokenizer | None = None,
        index_factory=NearDupIndex,
    ) -> None:
        self.config = config or FilterConfig()
        self.matcher = make_matcher(self.config, tokenizer, index_factory)
        self._blacklist = re.compile("|".join(f"(?:{p})" for p in self.config.blacklist), re.IGNORECASE)
        self._known: list[_Known] = []  # matcher index -> row, references included
        self._keys: dict[str, int] = {}
        references = [clean_row(r)[0] for r in references]
        for n, (ref, prepared) in enumerate(zip(references, self.prepare(references), strict=True)):
            self.add(ref, prepared, source=f"reference {n + 1}")

    def __len__(self) -> int:
        return len(self._known)

    def prepare(self, rows: Sequence[AlpacaRow]) -> list:
        """Tokens or frames for many (cleaned) rows in one batch: Kiwi's batch call is much faster."""
        return self.matcher.prepare([r.question() for r in rows])

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
        if not any(map(is_hangul, row.instruction)):
            return "not_korean", "instruction has no Hangul"
        share = korean_sentence_share(row.output)
        if share < cfg.min_korean_sentences:
            return "bad_answer", f"{share:.0%} of the output's sentences are Korean (< {cfg.min_korean_sentences:.0%})"
        if any("###" in getattr(row, name) for name in ("instruction", "input", "output")):
            return "prompt_marker", "contains '###', the KoAlpaca turn marker"
        answer = normalize_key(row.output)
        if len(answer) >= cfg.min_leaked_answer_letters and answer in normalize_key(row.input):
            return "answer_in_input", "the input contains the whole output"
        return None

    def check(self, row: AlpacaRow, prepared=None) -> Decision:
        """Would this row be kept? `prepared` are its tokens or frame, from prepare() on the cleaned row."""
        row, cleaned = clean_row(row)
        failure = self.rule_failure(row)
        if failure:
            return Decision(False, *failure, row=row, cleaned=cleaned)
        key = normalize_key(row.question())
        if key in self._keys:
            known = self._known[self._keys[key]]
            detail = "same question" + (f" once cleaned ({cleaned})" if cleaned else "")
            return Decision(False, "exact_duplicate", detail, 1.0, known.row, known.source, row=row, cleaned=cleaned)
        if prepared is None:
            (prepared,) = self.prepare([row])
        match: Match | None = self.matcher.best(prepared)
        if match is not None:
            known = self._known[match.index]
            return Decision(False, "near_duplicate", match.detail, match.score, known.row, known.source,
                            match.compared, row=row, cleaned=cleaned)
        return Decision(True, row=row, cleaned=cleaned)

    def add(self, row: AlpacaRow, prepared=None, *, source: str = "") -> None:
        """Record a (cleaned) row as kept, so later rows are compared against it."""
        if prepared is None:
            (prepared,) = self.prepare([row])
        self.matcher.add(prepared)
        self._keys.setdefault(normalize_key(row.question()), len(self._known))
        self._known.append(_Known(row, source))

    def offer(self, row: AlpacaRow, prepared=None, *, source: str = "") -> Decision:
        decision = self.check(row, prepared)
        if decision.kept:
            self.add(decision.row, prepared, source=source)
        return decision

    @property
    def candidates_checked(self) -> int:
        return self.matcher.candidates_checked


def filter_rows(
    rows: Sequence[AlpacaRow],
    config: FilterConfig | None = None,
    references: Sequence[AlpacaRow] = (),
    *,
    tokenizer: Tokenizer | None = None,
    index_factory=NearDupIndex,
    sources: Sequence[str] | None = None,
) -> FilterResult:
    """Filter rows in order; each is compared with the references and the rows kept before it.

    `sources` names each row (e.g. "in.jsonl:3") in the decisions of the rows that later match it.
    """
    start = time.perf_counter()
    state = RowFilter(config, tokenizer=tokenizer, index_factory=index_factory)
    cleaned = [clean_row(r)[0] for r in (*references, *rows)]
    prepared = state.prepare(cleaned)  # one batch for references and rows
    tokenized = time.perf_counter()
    for n, (ref, p) in enumerate(zip(cleaned[: len(references)], prepared, strict=False)):
        state.add(ref, p, source=f"reference {n + 1}")
    result = FilterResult()
    for n, (row, p) in enumerate(zip(rows, prepared[len(references) :], strict=True)):
        decision = state.offer(row, p, source=sources[n] if sources else f"row {n + 1}")
        result.decisions.append(decision)
        if decision.kept:
            result.kept.append(decision.row)
            result.counts["kept"] += 1
            result.cleaned += bool(decision.cleaned)
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
    if decision.cleaned:
        record["cleaned"] = decision.cleaned
    if decision.score is not None:
        record["score"] = round(decision.score, 4)
    if decision.nearest is not None:
        record["nearest"] = json.loads(decision.nearest.to_json())
        record["nearest_source"] = decision.nearest_source
    if decision.compared is not None:
        record["slots"] = decision.compared
    return record


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def explain(decision: Decision, row: AlpacaRow, source: str) -> str:
    """A near-duplicate drop in a few lines a person can audit: both questions, the score, what was compared."""
    lines = [
        f"{source}: near_duplicate, score {decision.score:.3f}",
        f"  dropped: {_one_line(decision.row.question() if decision.row else row.question())}",
        f"  matched: {_one_line(decision.nearest.question())}  ({decision.nearest_source})",
    ]
    if decision.compared is not None:
        for name in ("row", "nearest"):
            frame = decision.compared[name]
            slots = "; ".join(f"{k}={'/'.join(v)}" for k, v in frame["slots"].items()) or "no slots"
            rest = " ".join(frame["rest"]) or "-"
            lines.append(f"  {'slots' if name == 'row' else '     '}  {frame['qtype']} | {slots} | rest: {rest}")
    lines.append(f"  why:     {decision.detail}")
    return "\n".join(lines)


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
    if args.threshold is not None and not 0 < args.threshold <= 1:
        print(f"--threshold must be in (0, 1], got {args.threshold}", file=sys.stderr)
        return 2
    if args.out.resolve() == args.input.resolve():
        print("--out must differ from --in: the input is read while the output is written", file=sys.stderr)
        return 2
    catalog = args.catalog or DEFAULT_CATALOG
    if args.mode == "slots" and not catalog.exists():
        if args.catalog is not None:
            print(f"error: dish catalog {catalog} not found: pass an existing --catalog CSV", file=sys.stderr)
            return 1
        print(f"warning: dish catalog {catalog} not found; dishes are compared as plain nouns", file=sys.stderr)
    config = FilterConfig(mode=args.mode, threshold=args.threshold, catalog=catalog)
    bad: list[BadLine] = []
    references = [row for path in args.reference for _, row in read_alpaca_or_seed(path, bad)]
    numbered = list(read_alpaca_or_seed(args.input, bad))
    rows = [row for _, row in numbered]
    sources = [f"{args.input}:{line}" for line, _ in numbered]
    result = filter_rows(rows, config, references, sources=sources)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in result.kept:
            f.write(row.to_json() + "\n")
    dropped = [(line, row, d) for (line, row), d in zip(numbered, result.decisions, strict=True) if not d.kept]
    if args.dropped:
        args.dropped.parent.mkdir(parents=True, exist_ok=True)
        with args.dropped.open("w", encoding="utf-8") as f:
            for line, row, decision in dropped:
                f.write(json.dumps(dropped_record(row, decision, line), ensure_ascii=False) + "\n")
    for b in bad:
        print(f"bad line {b}", file=sys.stderr)
    if args.explain:
        for line, row, decision in dropped:
            if decision.reason == "near_duplicate":
                print(explain(decision, row, f"{args.input}:{line}") + "\n")
    print(format_counts(result.counts, len(rows), len(bad)))
    cleaned = f", {result.cleaned} cleaned" if result.cleaned else ""
    how = f"{config.mode} mode, threshold {config.threshold}"
    print(f"{len(result.kept)} rows{cleaned} -> {args.out} in {result.seconds:.1f} s ({how})")
    return 0
