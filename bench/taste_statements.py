"""How well the taste reader hears statements as people say them (issue 23, part 1).

The set is tests/data/taste_statements.jsonl: Korean statements written by hand, each with what it should remember
(allergies, diets, dislikes, likes), a phrasing family (particles, cant_eat, reaction, lists, endings, household,
negatives, diet, dislike, like, mixed, unsure), whether it is *clear*, and a split: a quarter of each family is held
out ("held") and was never looked at while tuning the parser. For an unclear statement ("새우 먹으면 배가 아파") the
right answer is to ask "알레르기인가요, 그냥 싫어하시는 건가요?", so an allergy or that question both count as heard.

Scores, on each split and per family:
- allergy recall on clear statements: expected allergens heard as allergies (target 100 %: never missed, never a
  dislike);
- allergy precision: allergies heard that were meant;
- proposal precision: statements where the bot would ask "기억해 둘까요?" (or which kind) and everything it proposes
  was meant (target ≥ 95 %); a negative ("알레르기 없어요", a question, a cured allergy) must propose nothing;
- diet / dislike / like accuracy: statements about one of them read exactly (targets ≥ 90 %).

    .venv/bin/python bench/taste_statements.py                 # prints the table and the misses
    .venv/bin/python bench/taste_statements.py --append-docs   # also writes docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data" / "taste_statements.jsonl"
HEADING = "## Issue 23: taste statements as people say them"
KINDS = ("diets", "dislikes", "likes")


def load_rows(path: Path = DATA) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class Heard:
    """What the reader made of one statement, in the set's terms."""

    allergies: set[str] = field(default_factory=set)
    unsure: set[str] = field(default_factory=set)  # allergens it would ask about: allergy or dislike?
    diets: set[str] = field(default_factory=set)
    dislikes: set[str] = field(default_factory=set)
    likes: set[str] = field(default_factory=set)

    @property
    def proposes(self) -> bool:
        return bool(self.allergies or self.unsure or self.diets or self.dislikes or self.likes)


def hear(reader, text: str) -> Heard:
    statement = reader.read(text)
    heard = Heard()
    if statement is None:
        return heard
    for item in statement.items:
        if item.kind == "allergy":
            heard.allergies.add(item.value)
        elif item.kind == "diet":
            heard.diets.add(item.value)
        elif item.kind == "dislike":
            heard.dislikes.add(item.value)
        else:
            heard.likes.add(item.value)
    heard.unsure = set(getattr(statement, "unsure", ()))
    return heard


@dataclass
class Score:
    expected_allergies: int = 0  # on clear statements
    heard_allergies: int = 0
    unclear_expected: int = 0  # on unclear ones, heard as an allergy or asked about
    unclear_heard: int = 0
    allergies_said: int = 0
    allergies_right: int = 0
    proposals: int = 0
    proposals_right: int = 0
    kind_rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    kind_right: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    rows: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, row: dict, heard: Heard) -> None:
        self.rows += 1
        meant = set(row["allergies"])
        # An unclear statement is heard when it is asked about (or taken as an allergy); a clear one only as an allergy.
        caught = heard.allergies | (heard.unsure if not row["clear"] else set())
        wrong: list[str] = []
        if meant:
            if row["clear"]:
                self.expected_allergies += len(meant)
                self.heard_allergies += len(meant & caught)
            else:
                self.unclear_expected += len(meant)
                self.unclear_heard += len(meant & caught)
            if meant - caught:
                wrong.append(f"allergy missed {sorted(meant - caught)}")
        said = heard.allergies | heard.unsure
        self.allergies_said += len(said)
        self.allergies_right += len(said & meant)
        if said - meant:
            wrong.append(f"allergy not meant {sorted(said - meant)}")
        for kind in KINDS:
            expected, got = set(row[kind]), getattr(heard, kind)
            if expected or got:
                self.kind_rows[kind] += 1
                self.kind_right[kind] += expected == got
                if expected != got:
                    wrong.append(f"{kind} {sorted(got)} ≠ {sorted(expected)}")
        if heard.proposes:
            self.proposals += 1
            extra = (said - meant) or any(getattr(heard, k) - set(row[k]) for k in KINDS)
            self.proposals_right += not extra
        if wrong:
            self.misses.append(f"[{row['family']}/{row['split']}] {row['text']}: {'; '.join(wrong)}")

    @property
    def recall(self) -> float:
        return self.heard_allergies / self.expected_allergies if self.expected_allergies else 1.0

    @property
    def precision(self) -> float:
        return self.allergies_right / self.allergies_said if self.allergies_said else 1.0

    @property
    def proposal_precision(self) -> float:
        return self.proposals_right / self.proposals if self.proposals else 1.0

    def accuracy(self, kind: str) -> float:
        return self.kind_right[kind] / self.kind_rows[kind] if self.kind_rows[kind] else 1.0


def score(reader, rows: Iterable[dict]) -> Score:
    total = Score()
    for row in rows:
        total.add(row, hear(reader, row["text"]))
    return total


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def table(reader, rows: list[dict]) -> tuple[str, list[str]]:
    from common import markdown_table

    groups: dict[str, list[dict]] = {"all": rows, "tune": [r for r in rows if r["split"] == "tune"],
                                     "held out": [r for r in rows if r["split"] == "held"]}
    for family in dict.fromkeys(r["family"] for r in rows):
        groups[f"family: {family}"] = [r for r in rows if r["family"] == family]
    lines, misses = [], []
    for name, group in groups.items():
        s = score(reader, group)
        lines.append([name, s.rows, f"{s.heard_allergies}/{s.expected_allergies} = {pct(s.recall)}",
                      f"{s.unclear_heard}/{s.unclear_expected}", pct(s.precision), f"{s.proposals_right}/{s.proposals} = {pct(s.proposal_precision)}",
                      *(f"{s.kind_right[k]}/{s.kind_rows[k]}" for k in KINDS)])
        if name == "all":
            misses = s.misses
    headers = ["rows", "statements", "allergy recall (clear)", "unclear: asked or heard", "allergy precision",
               "proposal precision",
               "diet right", "dislike right", "like right"]
    return markdown_table(headers, lines), misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("all", "tune", "held"), default="all")
    parser.add_argument("--append-docs", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from common import append_docs, command_line, cpu_line, today

    from bot.taste.parse import TasteReader
    from model import DishCatalog

    reader = TasteReader.load(DishCatalog.load())
    rows = [r for r in load_rows() if args.split == "all" or r["split"] == args.split]
    text, misses = table(reader, rows)
    body = (f"Measured {today()} with `{command_line()}` on {cpu_line()}. The set: {len(rows)} hand-written "
            f"statements in `tests/data/taste_statements.jsonl`; a quarter of each family held out while tuning.\n\n"
            f"{text}\n\nMisses ({len(misses)}):\n\n" + "\n".join(f"- {m}" for m in misses or ["none"]))
    print(body)
    if args.append_docs:
        append_docs(HEADING, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
