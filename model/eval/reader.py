"""What a reader sees in an answer, beyond what a loss can tell: broken characters and words never seen in training.

- A broken character is U+FFFD (`�`): a byte-level model emitted bytes that are not valid UTF-8.
- Word salad, measured on a closed corpus: an answer "uses only known words" when every word in it occurs somewhere in
  the text the model was trained on. For a model trained from scratch on our data (the demo) this catches invented
  words ("할엔탈이", "소고기미수로는"); for KoAlpaca, whose pretraining text is unknown, the proxy says little.

A word is a run of letters and digits (Hangul, Latin, numbers), particles included: "김치찌개는" is one word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

BROKEN = "\ufffd"
_WORD = re.compile(r"[\w\ufffd]+")
TRAINING_WORDS = "training_words.txt"  # the demo builder writes its corpus's words here, one per line


def is_broken(text: str) -> bool:
    return BROKEN in text


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def unknown_words(text: str, known: set[str] | frozenset[str]) -> list[str]:
    return [w for w in dict.fromkeys(words(text)) if w not in known]


def corpus_words(files: Iterable[str | Path]) -> frozenset[str]:
    """The words of training files: JSONL (Alpaca rows, or seed tasks with instances) or plain text, one word a line
    for a TRAINING_WORDS file."""
    found: set[str] = set()
    for file in files:
        path = Path(file)
        text = path.read_text(encoding="utf-8")
        if path.suffix != ".jsonl":
            found.update(words(text))
            continue
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                found.update(words(_row_text(row)))
    return frozenset(found)


def _row_text(row: dict) -> str:
    parts = [str(row.get(k, "")) for k in ("instruction", "input", "output")]
    for instance in row.get("instances", ()) or ():
        if isinstance(instance, dict):
            parts += [str(instance.get("input", "")), str(instance.get("output", ""))]
    return "\n".join(parts)


def model_corpus(model_dir: str | Path) -> frozenset[str] | None:
    """The training words a model folder carries (the demo model does), or None."""
    path = Path(model_dir) / TRAINING_WORDS
    return corpus_words([path]) if path.is_file() else None
