"""The first PhraseBan (commit 881110b), kept as the reference that the faster one must agree with token for token.
Shared by tests/test_avoid.py and bench/phrase_ban.py."""

from __future__ import annotations

from collections.abc import Sequence

from model.serving.bans import _TAIL_TOKENS, TokenBytes


class ReferencePhraseBan:
    """Every (phrase, k) rule tested at every step; `containing` by scanning the whole vocabulary."""

    def __init__(self, vocab: TokenBytes, phrases: Sequence[str]) -> None:
        self.vocab = vocab
        encoded = list(dict.fromkeys(p.encode("utf-8") for p in phrases if p.strip()))
        always: set[int] = set()
        self.rules: list[tuple[bytes, list[int]]] = []
        for phrase in encoded:
            always.update(i for i, piece in enumerate(vocab.by_id) if phrase in piece)
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
