"""Follow-up turns skip the prefill: finished conversations' K/V, kept by token-id prefix, bounded in bytes (LRU).

A finished request leaves its slot's cache columns (prompt + answer) here, keyed by those token ids. The next
prompt that starts with the same ids (turn 2 repeats turn 1's prompt and answer as history; "다른 거" repeats the
question) takes the longest common prefix from here and prefills only the rest. Keyed by ids, not by user: a
prefix is reusable whoever sent it, and a user whose history was re-tokenised differently simply reuses less.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

import torch

MIN_REUSE = 8  # tokens: a shorter shared prefix (the template's first words) saves less than the copy costs


@dataclass
class Prefix:
    """K/V of `ids`, one [heads, len(ids), head_dim] tensor per layer each."""

    ids: tuple[int, ...]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[tuple[int, ...], Prefix] = collections.OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ids: Sequence[int]) -> tuple[Prefix, int] | None:
        """The entry sharing the longest prefix with `ids`, and that length (at most len(ids) - 1: the last prompt
        token is always run, for its logits). None below MIN_REUSE."""
        best, length = None, 0
        for entry in self._entries.values():
            shared = min(common_length(entry.ids, ids), len(ids) - 1)
            if shared > length:
                best, length = entry, shared
        if best is None or length < MIN_REUSE:
            return None
        self._entries.move_to_end(best.ids)
        self.hits += 1
        self.reused_tokens += length
        return best, length

    def store(self, prefix: Prefix) -> None:
        if prefix.nbytes > self.max_bytes or len(prefix.ids) < MIN_REUSE:
            return
        # An entry that the new one extends is redundant: every lookup it could serve, the new one serves.
        for ids in [ids for ids in self._entries if prefix.ids[: len(ids)] == ids]:
            self.bytes -= self._entries.pop(ids).nbytes
        self._entries[prefix.ids] = prefix
        self.bytes += prefix.nbytes
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.nbytes

    def clear(self) -> None:
        """After an adapter swap every kept K/V belongs to the old adapter."""
        self._entries.clear()
        self.bytes = 0
