"""Never generate a phrase: the dishes a user turned down.

Matching token sequences is not enough with byte-level BPE: "된장찌개는" may be one token, or " 된장" + "찌개는".
So the ban works on bytes. At each step a token is banned when the answer so far ends with the first k bytes of a
phrase and the token's bytes start with the rest (k = 0 included), or when the token contains the whole phrase.
Every way of spelling the phrase must pass one of these checks at the token that completes it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

# A phrase of a few syllables spans at most this many tokens back; only that tail of the answer is joined each step.
_TAIL_TOKENS = 48


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode table, which byte-level BPE vocabularies are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


class TokenBytes:
    """The bytes of every token of a tokenizer, and a sorted index to find tokens by their first bytes."""

    def __init__(self, tokenizer: Any) -> None:
        table = _byte_decoder()
        size = len(tokenizer)
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        self.by_id: list[bytes] = []
        for token_id, piece in enumerate(pieces):
            if piece is not None and all(ch in table for ch in piece):
                self.by_id.append(bytes(table[ch] for ch in piece))
            else:  # not a byte-level piece (a special or added token): its text is the best we have
                self.by_id.append(tokenizer.decode([token_id]).encode("utf-8", "ignore"))
        order = sorted(range(size), key=self.by_id.__getitem__)
        self._sorted = [self.by_id[i] for i in order]
        self._sorted_ids = order

    def starting_with(self, prefix: bytes) -> list[int]:
        start = bisect.bisect_left(self._sorted, prefix)
        found = []
        for i in range(start, len(self._sorted)):
            if not self._sorted[i].startswith(prefix):
                break
            found.append(self._sorted_ids[i])
        return found

    def containing(self, phrase: bytes) -> list[int]:
        return [i for i, piece in enumerate(self.by_id) if phrase in piece]


class PhraseBan:
    """Which tokens to forbid next, given the tokens generated so far, so that no phrase is ever completed."""

    def __init__(self, vocab: TokenBytes, phrases: Sequence[str]) -> None:
        self.vocab = vocab
        encoded = list(dict.fromkeys(p.encode("utf-8") for p in phrases if p.strip()))
        always: set[int] = set()
        self.rules: list[tuple[bytes, list[int]]] = []
        for phrase in encoded:
            always.update(vocab.containing(phrase))
            for k in range(1, len(phrase)):
                completing = vocab.starting_with(phrase[k:])
                if completing:
                    self.rules.append((phrase[:k], completing))
        self.always = sorted(always)

    def banned(self, generated: Sequence[int]) -> list[int]:
        tail = b"".join(self.vocab.by_id[i] for i in generated[-_TAIL_TOKENS:])
        ids = list(self.always)
        for prefix, completing in self.rules:
            if tail.endswith(prefix):
                ids.extend(completing)
        return ids
