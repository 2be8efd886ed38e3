"""Never generate a phrase: the dishes a user turned down, or must never be offered (allergies).

Matching token sequences is not enough with byte-level BPE: "된장찌개는" may be one token, or " 된장" + "찌개는".
So the ban works on bytes. At each step a token is banned when the answer so far ends with the first k bytes of a
phrase and the token's bytes start with the rest (k = 0 included), or when the token contains the whole phrase.
Every way of spelling the phrase must pass one of these checks at the token that completes it.

The list can be long: an allergy to 밀 or 대두 covers hundreds of catalog dishes, each with its spellings, so well over
a thousand phrases. Two things keep that cheap (bench/phrase_ban.py):
- per step, the answer's tail is looked up in a dict of phrase prefixes, one probe per prefix length, instead of
  testing every (phrase, k) rule: the cost follows the longest phrase, not the number of phrases;
- building a ban reuses each phrase's token sets, which `TokenBytes` computes once per phrase and keeps (the
  generator keeps one `TokenBytes` for its lifetime), and finds the tokens that contain a phrase through an index of
  the tokens' 3-byte windows instead of scanning the vocabulary.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

# A phrase of a few syllables spans at most this many tokens back; only that tail of the answer is joined each step.
_TAIL_TOKENS = 48
# Tokens are indexed by their windows of this many bytes (one Hangul syllable in UTF-8).
_WINDOW = 3


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode table, which byte-level BPE vocabularies are written in."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # ~1 s: only when a tokenizer is in use

    return {char: byte for byte, char in bytes_to_unicode().items()}


class TokenBytes:
    """The bytes of every token of a tokenizer, indexes to find tokens by their bytes, and each phrase's token sets
    (computed once per phrase, then kept: a catalog has a few thousand spellings at most)."""

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
        self._windows: dict[bytes, list[int]] | None = None
        self._rules: dict[bytes, PhraseRules] = {}

    def starting_with(self, prefix: bytes) -> list[int]:
        start = bisect.bisect_left(self._sorted, prefix)
        found = []
        for i in range(start, len(self._sorted)):
            if not self._sorted[i].startswith(prefix):
                break
            found.append(self._sorted_ids[i])
        return found

    def containing(self, phrase: bytes) -> list[int]:
        if len(phrase) < _WINDOW:
            return [i for i, piece in enumerate(self.by_id) if phrase in piece]
        return [i for i in self._window_index().get(phrase[:_WINDOW], ()) if phrase in self.by_id[i]]

    def rules_for(self, phrase: bytes) -> PhraseRules:
        """The tokens that contain `phrase`, and for each split k the tokens that complete it after its first k
        bytes. Kept per phrase: a user's allergy bans the same spellings in every request."""
        rules = self._rules.get(phrase)
        if rules is None:
            splits = []
            for k in range(1, len(phrase)):
                completing = self.starting_with(phrase[k:])
                if completing:
                    splits.append((k, tuple(completing)))
            rules = PhraseRules(tuple(self.containing(phrase)), tuple(splits))
            self._rules[phrase] = rules
        return rules

    def _window_index(self) -> dict[bytes, list[int]]:
        if self._windows is None:
            index: dict[bytes, list[int]] = {}
            for token_id, piece in enumerate(self.by_id):
                for window in {piece[i:i + _WINDOW] for i in range(len(piece) - _WINDOW + 1)}:
                    index.setdefault(window, []).append(token_id)
            self._windows = index
        return self._windows


class PhraseRules:
    __slots__ = ("containing", "splits")

    def __init__(self, containing: tuple[int, ...], splits: tuple[tuple[int, tuple[int, ...]], ...]) -> None:
        self.containing = containing
        self.splits = splits


class PhraseBan:
    """Which tokens to forbid next, given the tokens generated so far, so that no phrase is ever completed."""

    def __init__(self, vocab: TokenBytes, phrases: Sequence[str]) -> None:
        self.vocab = vocab
        encoded = list(dict.fromkeys(p.encode("utf-8") for p in phrases if p.strip()))
        always: set[int] = set()
        # phrase prefix -> the token sets that complete a phrase after it (shared tuples, not copies)
        by_prefix: dict[bytes, list[tuple[int, ...]]] = {}
        for phrase in encoded:
            rules = vocab.rules_for(phrase)
            always.update(rules.containing)
            for k, completing in rules.splits:
                by_prefix.setdefault(phrase[:k], []).append(completing)
        self.always = sorted(always)
        self._by_prefix = by_prefix
        self._lengths = sorted({len(prefix) for prefix in by_prefix})

    def banned(self, generated: Sequence[int]) -> list[int]:
        ids = list(self.always)
        if not self._lengths or not generated:
            return ids
        by_id = self.vocab.by_id
        tail = b"".join(by_id[i] for i in generated[-_TAIL_TOKENS:])
        for length in self._lengths:
            if length > len(tail):
                break
            hit = self._by_prefix.get(tail[-length:])
            if hit is not None:
                for completing in hit:
                    ids.extend(completing)
        return ids
