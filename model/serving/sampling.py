"""Choosing each row's next token on the device, and the text tracker that turns tokens into safe deltas.

`choose()` works on whole tensors with fixed shapes: no host sync, no Python loop over rows, nothing built from
Python lists. Each row has its own seed and sampling parameters (slots.Rows), and its draws come from a
counter-based generator keyed by (seed, tokens so far), so a row's tokens depend only on its own seed and logits,
never on which other requests share its batch. The processing order follows transformers' `generate`: repetition
penalty, temperature, top-k, top-p (on the mass renormalised after top-k, as there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.serving.slots import Rows, uniform
from model.serving.utf8 import Utf8Table
from model.types import MAX_TOP_K

REPLACEMENT_CHAR = "\ufffd"


def choose(logits: torch.Tensor, rows: Rows, *, allowed: torch.Tensor, utf8: Utf8Table, eos: int,
           sample: bool = True) -> torch.Tensor:
    """One token per row from `logits` [B, V].

    `allowed` [V] are the ids that may ever be generated (not padding rows of the embedding, not special tokens
    other than EOS). On top of it each row refuses its banned phrases' tokens, tokens that would break a UTF-8
    character, and EOS before its min_new_tokens. `sample=False` (every row greedy) skips the sampling arithmetic.
    """
    scores = logits.float()
    penalty = rows.penalty.unsqueeze(1)
    scores = torch.where(rows.presence, torch.where(scores < 0, scores * penalty, scores / penalty), scores)
    ok = utf8.allowed[rows.utf8] & ~rows.banned & allowed
    ok[:, eos] &= rows.generated >= rows.min_new
    ok = torch.where(ok.any(dim=-1, keepdim=True), ok, allowed)  # never nothing at all (no byte-level vocab does it)
    scores = scores.masked_fill(~ok, float("-inf"))
    greedy = scores.argmax(dim=-1)
    if not sample:
        return greedy
    best, ids = scores.topk(min(MAX_TOP_K, scores.shape[-1]), dim=-1)  # sorted, most likely first
    rank = torch.arange(best.shape[-1], device=best.device)
    best = (best / rows.temperature.unsqueeze(1)).masked_fill(rank >= rows.top_k.unsqueeze(1), float("-inf"))
    probs = best.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs
    keep = before < rows.top_p.unsqueeze(1)
    keep[:, 0] = True
    cdf = (probs * keep).cumsum(dim=-1)
    # One uniform number per row picks the token from the inverse of the nucleus' CDF.
    draw = uniform(rows.seed, rows.generated) * cdf[:, -1]
    picked = torch.searchsorted(cdf, draw.unsqueeze(1)).clamp(max=cdf.shape[-1] - 1)
    return torch.where(rows.greedy, greedy, ids.gather(1, picked).squeeze(1))


class TextTracker:
    """Decodes one row's tokens and releases only text that is final: never a stop marker or a piece of one, never
    half a character, and no surrounding whitespace. The deltas joined are exactly the final text.

    Decoding is incremental (as in vLLM): only the tokens since the last complete character are decoded each step, so
    a long answer costs the same per token as a short one.
    """

    def __init__(self, tokenizer, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.ids: list[int] = []
        self.text = ""
        self._prefix_offset = 0
        self._read_offset = 0
        self.emitted = ""
        self.stopped = False
        self.final: str | None = None

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        """Take one token; return the new safe text (possibly empty). Sets `stopped` at a stop marker."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix_offset:self._read_offset])
        after = self._decode(self.ids[self._prefix_offset:])
        if len(after) <= len(before) or after.endswith(REPLACEMENT_CHAR):
            return ""  # half a character so far: wait for the rest of its bytes
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        return self.add_text(after[len(before):])

    def add_text(self, added: str) -> str:
        """Take text decoded elsewhere (llama.cpp streams whole characters): the same stop and whitespace rules."""
        search_from = max(len(self.text) - self.longest_stop, 0)
        self.text += added
        cut = min((i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self.finish(self.text[:cut])
        # Sampling keeps the bytes valid UTF-8 (utf8.py); a replacement character that still shows up (a
        # tokenizer's own decoding quirk) is dropped rather than shown.
        safe = self.text.replace(REPLACEMENT_CHAR, "").strip()
        safe = safe[: len(safe) - self._stop_prefix_len(safe)].rstrip()
        return self._release(safe)

    def finish(self, text: str | None = None) -> str:
        """The last delta. Afterwards `final` holds the whole answer."""
        if text is None:
            text = self.text + self._decode(self.ids[self._read_offset:])
        final = text.replace(REPLACEMENT_CHAR, "").strip()
        delta = self._release(final)
        self.final = self.emitted
        return delta

    def _stop_prefix_len(self, text: str) -> int:
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    longest = max(longest, n)
                    break
        return longest

    def _release(self, safe: str) -> str:
        if len(safe) <= len(self.emitted) or not safe.startswith(self.emitted):
            return ""
        delta = safe[len(self.emitted):]
        self.emitted = safe
        return delta
