"""Food-safety notes: a question about a well-known hazard gets a short caution with its answer, and a question whose
premise is itself dangerous (drinking and driving) gets a polite refusal instead of a menu.

Data: data/safety_notes.csv, written by us, columns `id,kind,all_of,none_of,caution,avoid`:
- kind: `caution` (the answer carries the text) or `refuse` (the text is the whole answer);
- all_of: groups separated by `;`, alternatives inside a group by `|`. A note matches when every group has an
  alternative in the question and no `none_of` alternative is there. Alternatives are plain words ("꿀", "돌 전",
  "마시다"); both sides are compared as kiwipiepy lemmas (model/food/morph.py), so "아기한테 꿀 줘도 돼?" matches 꿀 + 아기
  while "꿀떡"/"꿀잼" do not give 꿀, and a negated word ("술 안 마시고 운전해") does not count;
- avoid: catalog dishes the answer should not name (`category:술` for a whole category); the bot bans them while
  sampling and resamples an answer that still names one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from model.food.morph import Lemma, contains, lemmas, negated, phrase
from model.food.table import table_rows

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "safety_notes.csv"
COLUMNS = ("id", "kind", "all_of", "none_of", "caution", "avoid")
KINDS = ("caution", "refuse")

Phrase = tuple[str, ...]


class SafetyNotesError(ValueError):
    """The safety table is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class SafetyNote:
    id: str
    kind: str
    all_of: tuple[tuple[Phrase, ...], ...]
    none_of: tuple[Phrase, ...]
    text: str
    avoid: tuple[str, ...] = ()

    def matches(self, found: Sequence[Lemma]) -> bool:
        return all(_present(found, group) for group in self.all_of) and not _present(found, self.none_of)


def _present(found: Sequence[Lemma], alternatives: Iterable[Phrase]) -> bool:
    for words in alternatives:
        start = contains(found, words)
        if start is not None and not negated(found, _last_index(found, start, words)):
            return True
    return False


def _last_index(found: Sequence[Lemma], start: int, words: Phrase) -> int:
    """Where the last lemma of a matched phrase sits: negation is read after it (술 마시고 → after 마시)."""
    i, seen = start, 0
    while i < len(found):
        if found[i].form == words[seen]:
            seen += 1
            if seen == len(words):
                return i
        i += 1
    return start


@dataclass(frozen=True)
class SafetyVerdict:
    notes: tuple[SafetyNote, ...] = ()

    @property
    def refusal(self) -> str | None:
        return next((n.text for n in self.notes if n.kind == "refuse"), None)

    @property
    def cautions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n.text for n in self.notes if n.kind == "caution"))

    def avoided_dishes(self, catalog: Any) -> tuple[str, ...]:
        """Catalog names of the dishes the matched notes keep out of the answer."""
        names: list[str] = []
        in_category, get = getattr(catalog, "in_category", None), getattr(catalog, "get", None)
        for note in self.notes:
            for item in note.avoid:
                if item.startswith("category:") and in_category is not None:
                    names += [d.name for d in in_category(item.removeprefix("category:"))]
                elif get is not None and (dish := get(item)) is not None:
                    names.append(dish.name)
        return tuple(dict.fromkeys(names))


class SafetyNotes:
    def __init__(self, notes: Iterable[SafetyNote], source: str = "<memory>") -> None:
        self.notes = tuple(notes)
        self.source = source

    @classmethod
    def load(cls, path: str | Path | None = None) -> SafetyNotes:
        path = Path(path) if path is not None else DEFAULT_PATH
        try:
            stat = path.resolve().stat()
        except FileNotFoundError:
            raise SafetyNotesError(f"safety notes not found: {path}; restore data/safety_notes.csv") from None
        return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)

    def check(self, question: str) -> SafetyVerdict:
        found = lemmas(question)
        return SafetyVerdict(tuple(n for n in self.notes if n.matches(found)))

    def __len__(self) -> int:
        return len(self.notes)

    def __iter__(self):
        return iter(self.notes)


def _phrases(field: str, where: str) -> tuple[Phrase, ...]:
    found = []
    for word in (w.strip() for w in field.split("|")):
        if not word:
            continue
        words = phrase(word)
        if not words:
            raise SafetyNotesError(f"{where}: {word!r} has no content word kiwipiepy can match; write a noun or verb")
        found.append(words)
    return tuple(found)


def parse_rows(lines: Iterable[str], source: str) -> list[SafetyNote]:
    notes: list[SafetyNote] = []
    hint = "alternatives are |-separated and groups ;-separated, never comma-separated"
    for where, _, (note_id, kind, all_of, none_of, text, avoid) in table_rows(lines, source, COLUMNS,
                                                                              SafetyNotesError, hint):
        if kind not in KINDS:
            raise SafetyNotesError(f"{where}: {note_id}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        groups = tuple(_phrases(group, where) for group in all_of.split(";") if group.strip())
        if not groups or not text:
            raise SafetyNotesError(f"{where}: {note_id}: all_of and caution must not be empty")
        notes.append(SafetyNote(note_id, kind, groups, _phrases(none_of, where), text,
                                tuple(a.strip() for a in avoid.split("|") if a.strip())))
    return notes


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> SafetyNotes:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return SafetyNotes(parse_rows(f, path), source=path)
