"""Near-duplicate decisions a Korean reader agrees with: precision and recall on hand-labelled pairs, per mode, and
the filter's speed on 10,000 rows.

    .venv/bin/python bench/near_duplicates.py [--pairs data/near_duplicates.jsonl] [--rows 10000] [--sample 1000]
                                              [--quality-only] [--write-docs]

Each labelled pair (a, b) is decided the way `mechuri dataset filter` decides it: a is kept, then b is checked; b
dropped as an exact or near duplicate = "duplicate". Positive class: duplicate. The tuning split was used to build
the slot lexicon and choose the threshold; the held-out split was not, and is the one the targets are read on
(precision >= 0.90, recall >= 0.85). Speed: bench/filter_speed.py's synthetic rows, every mode at its default
threshold, with the pruned index checked against brute force on the first --sample rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_docs, command_line, markdown_table, today
from bench.filter_speed import measure, synthetic_rows
from dataset_builder.filter import DEFAULT_THRESHOLDS, MODES, FilterConfig, RowFilter
from dataset_builder.schema import AlpacaRow

PAIRS = Path(__file__).resolve().parents[1] / "data" / "near_duplicates.jsonl"
SPLITS = ("heldout", "tune")
SWEEP = {"slots": (0.5, 0.7, 0.8), "kiwi": (0.7, 0.8, 0.9), "char": (0.7, 0.8, 0.9)}
HEADING = "## Near-duplicate decisions: labelled pairs and speed, per mode"
NOTES = """
How to read it: P and R are for the "duplicate" class (the row the filter would drop). The pairs were written by
hand for this benchmark (data/near_duplicates.jsonl, data/README.md); every third pair of each category is held out,
and that split was fixed before the slot lexicon was written and never used to change it. Both splits come from the
same writers and the same style, so expect lower numbers on other people's requests. On the shipped starter data
against the seed tasks (another source; read by hand 2026-12-01), 46 of the 47 near-duplicate drops are right; the
miss: Kiwi reads the 전 of "비 오니까 전 땡긴다" as 저+는, so the craving for 전 is lost. The kiwi and char rows are plain
ROUGE-L on the whole question, as before: no threshold fixes them, because the slot that matters is one token of
four to six.
"""


@dataclass(frozen=True)
class Pair:
    id: str
    split: str
    category: str
    a: str
    b: str
    duplicate: bool
    reason: str


def load_pairs(path: Path = PAIRS) -> list[Pair]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        pairs.append(Pair(rec["id"], rec["split"], rec["category"], rec["a"], rec["b"],
                          rec["label"] == "duplicate", rec["reason"]))
    return pairs


def _row(text: str) -> AlpacaRow:
    return AlpacaRow(instruction=text, output="김치찌개 어떠세요? 든든해요.")


def decide(pairs: list[Pair], mode: str, threshold: float | None = None) -> list[bool]:
    """For each pair: would the filter drop b once a is kept?"""
    config = FilterConfig(mode=mode, threshold=threshold)
    texts = [_row(t) for p in pairs for t in (p.a, p.b)]
    prepared = RowFilter(config).prepare(texts)  # one Kiwi batch for every text
    out = []
    for n in range(len(pairs)):
        state = RowFilter(config)
        state.add(texts[2 * n], prepared[2 * n])
        decision = state.check(texts[2 * n + 1], prepared[2 * n + 1])
        out.append(decision.reason in ("exact_duplicate", "near_duplicate"))
    return out


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score(pairs: list[Pair], predicted: list[bool], split: str) -> Score:
    s = Score()
    for pair, drop in zip(pairs, predicted, strict=True):
        if pair.split != split:
            continue
        if drop and pair.duplicate:
            s.tp += 1
        elif drop:
            s.fp += 1
        elif pair.duplicate:
            s.fn += 1
        else:
            s.tn += 1
    return s


def quality(pairs: list[Pair]) -> tuple[list[list[object]], dict[str, list[bool]], str]:
    """The precision/recall table (every mode at its default, and a threshold sweep), decisions, and the errors."""
    rows: list[list[object]] = []
    defaults: dict[str, list[bool]] = {}
    for mode in MODES:
        for threshold in SWEEP[mode]:
            predicted = decide(pairs, mode, threshold)
            if threshold == DEFAULT_THRESHOLDS[mode]:
                defaults[mode] = predicted
            label = f"{mode} > {threshold}" + (" (default)" if threshold == DEFAULT_THRESHOLDS[mode] else "")
            cells: list[object] = [label]
            for split in SPLITS:
                s = score(pairs, predicted, split)
                cells += [f"{s.precision:.2f}", f"{s.recall:.2f}", f"{s.f1:.2f}", f"{s.tp}/{s.fp}/{s.fn}/{s.tn}"]
            rows.append(cells)
    errors = []
    for pair, drop in zip(pairs, defaults["slots"], strict=True):
        if drop != pair.duplicate:
            kind = "false drop" if drop else "false keep"
            errors.append(f"- {pair.split} `{pair.id}` {kind}: {pair.a} / {pair.b} ({pair.reason})")
    return rows, defaults, "\n".join(errors) or "- none"


def by_category(pairs: list[Pair], defaults: dict[str, list[bool]]) -> list[list[object]]:
    """Share of pairs decided right, per category, all splits together."""
    totals = Counter(p.category for p in pairs)
    out = []
    for category in dict.fromkeys(p.category for p in pairs):
        cells: list[object] = [category, totals[category], "dup" if _is_dup(pairs, category) else "distinct"]
        for mode in MODES:
            right = sum(d == p.duplicate for p, d in zip(pairs, defaults[mode], strict=True) if p.category == category)
            cells.append(f"{right}/{totals[category]}")
        out.append(cells)
    return out


def _is_dup(pairs: list[Pair], category: str) -> bool:
    return all(p.duplicate for p in pairs if p.category == category)


def startup_seconds() -> tuple[float, float]:
    """(Kiwi built and its model loaded, slot lexicon and catalog compiled), in a process that has neither yet."""
    import time

    from dataset_builder.similarity import get_kiwi
    from dataset_builder.slots import SlotExtractor

    start = time.perf_counter()
    get_kiwi().tokenize("매운 음식 추천해줘")
    kiwi = time.perf_counter()
    SlotExtractor()
    return kiwi - start, time.perf_counter() - kiwi


def machine() -> str:
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()}-core CPU, Python {platform.python_version()}, kiwipiepy {version('kiwipiepy')}, "
            f"rouge-score {version('rouge-score')}; load average at the end {load}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=1_000)
    parser.add_argument("--quality-only", action="store_true", help="skip the speed runs")
    parser.add_argument("--write-docs", action="store_true", help=f"write the '{HEADING[3:]}' section of docs/benchmarks.md")
    args = parser.parse_args()

    startup = startup_seconds()  # first: every later step reuses what this builds
    pairs = load_pairs(args.pairs)
    counts = Counter((p.split, p.duplicate) for p in pairs)
    intro = (f"{len(pairs)} labelled pairs: held-out {counts['heldout', True]} duplicate + "
             f"{counts['heldout', False]} distinct, tuning {counts['tune', True]} + {counts['tune', False]}.")
    rows, defaults, errors = quality(pairs)
    split_headers = [f"{split} {m}" for split in SPLITS for m in ("P", "R", "F1", "tp/fp/fn/tn")]
    parts = [
        intro,
        "",
        markdown_table(["mode", *split_headers], rows),
        "",
        markdown_table(["category", "pairs", "label", *(f"{m} right" for m in MODES)], by_category(pairs, defaults)),
        "",
        "Slots-mode mistakes (default threshold):",
        "",
        errors,
    ]
    if not args.quality_only:
        rows_in = synthetic_rows(args.rows)
        speed = []
        for mode in MODES:
            s = measure(mode, rows_in, args.sample)
            kept, near, exact = (s.counts.get(k, 0) for k in ("kept", "near_duplicate", "exact_duplicate"))
            speed.append([mode, f"{s.seconds:.1f} s", f"{s.rows / s.seconds:,.0f}",
                          f"{s.tokenize_seconds:.1f} s", f"{kept:,}", f"{near:,}", f"{exact:,}",
                          f"{s.agree}/{s.sample}", f"{s.brute_s:.1f} s (pruned {s.pruned_s:.2f} s)"])
        parts += [
            "",
            f"Speed on {args.rows:,} synthetic rows (bench/filter_speed.py's generator), default thresholds:",
            "",
            markdown_table(["mode", f"{args.rows:,} rows", "rows/s", "of which Kiwi", "kept", "near dup",
                            "exact dup", f"agreement ({args.sample:,} rows)", "brute force"], speed),
            "",
            f"Start-up, once per process and not in the times above: Kiwi {startup[0]:.1f} s (its model loads on the "
            f"first call), then the slot lexicon and dish catalog {startup[1]:.1f} s (slots mode only).",
        ]
    parts += ["", NOTES.strip()]
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        parts += ["", f"The machine was shared with other jobs (load average {load:.1f} on {os.cpu_count()} cores at the "
                      "end), so the times are pessimistic."]
    body = "\n".join(parts)
    print(body)
    print(f"\n{machine()}")
    if args.write_docs:
        header = (f"- Command: `{command_line()}`\n- Machine: {machine()}\n- Date: {today()}\n\n")
        path = append_docs(HEADING, header + body)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
