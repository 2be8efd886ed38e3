"""Row cleaning and the text checks the filter's rules use: exact-duplicate keys, Korean answers, repeated inputs."""

from __future__ import annotations

import re
import unicodedata

from dataset_builder.schema import AlpacaRow


def normalize_key(text: str) -> str:
    """Exact-duplicate key: NFKC, lower case, letters and digits only."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())


def is_hangul(c: str) -> bool:
    return "가" <= c <= "힣" or "ᄀ" <= c <= "ᇿ" or "ㄱ" <= c <= "ㆎ"


_SENTENCE_END = re.compile(r"[.!?。！？\n]+")


def korean_sentence_share(text: str) -> float:
    """Share of sentences that are Korean: their last word holds Hangul, where Korean grammar (endings) lives.

    Letters are the wrong unit: "Carbonara, Aglio e olio, Cacio e pepe 중에서 골라 보세요." is 33 % Hangul and a good
    Korean answer. A short line with no Hangul at all ("- Carbonara") is a name in a list and does not count either
    way; an answer with no Korean sentence scores 0.
    """
    korean = foreign = 0
    for sentence in _SENTENCE_END.split(text):
        words = [w for w in sentence.split() if any(c.isalpha() for c in w)]
        if not words:
            continue
        if any(is_hangul(c) for c in words[-1]):
            korean += 1
        elif any(is_hangul(c) for w in words for c in w) or len(words) > 4:
            foreign += 1
    return korean / (korean + foreign) if korean else 0.0


def _cut_prefix(text: str, key: str) -> str:
    """`text` without its leading part whose normalize_key is `key` (the caller checked that it starts so)."""
    seen = 0
    for i, c in enumerate(text):
        if seen == len(key):
            return text[i:].lstrip(" \t\n.,:;!?~-")
        seen += len(normalize_key(c))
    return ""


def clean_row(row: AlpacaRow) -> tuple[AlpacaRow, str]:
    """Remove an input that only repeats the instruction (or the answer); returns (row, what changed or "")."""
    if not row.input.strip():
        return row, ""
    instruction, inp = normalize_key(row.instruction), normalize_key(row.input)
    if inp == instruction:
        return row.model_copy(update={"input": ""}), "input repeated the instruction"
    if inp == normalize_key(row.output):
        return row.model_copy(update={"input": ""}), "input repeated the output"
    if instruction and inp.startswith(instruction):
        rest = _cut_prefix(row.input, instruction)
        return row.model_copy(update={"input": rest}), "input began with the instruction"
    return row, ""
