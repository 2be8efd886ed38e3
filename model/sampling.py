"""One decoding step for a batch whose rows each have their own seed and sampling parameters, and the text tracker
that turns generated tokens into safe deltas.

Each row samples from its own `torch.Generator`, so a row's tokens depend only on its own seed and logits, never on
which other requests share its batch. The processing order follows transformers' `generate`: repetition penalty,
temperature, top-k, top-p.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from model.avoid import PhraseBan, TokenBytes
from model.types import GenerationRequest

REPLACEMENT_CHAR = "\ufffd"


@dataclass
class BatchSampler:
    """Per-row sampling settings for one batch, as tensors, built once per batch."""

    temperature: torch.Tensor  # [B, 1]; 0 → greedy
    top_p: torch.Tensor  # [B, 1]
    top_k: torch.Tensor  # [B, 1]; 0 → off
    penalty: torch.Tensor  # [B, 1]
    greedy: list[bool]
    generators: list[torch.Generator | None]
    suppress_ids: list[int]
    any_penalty: bool
    any_top_k: bool
    any_top_p: bool
    bans: list[PhraseBan | None] = field(default_factory=list)  # per row: phrases never to complete

    @classmethod
    def for_requests(cls, requests: Sequence[GenerationRequest], device: torch.device | str,
                     suppress_ids: Sequence[int] = (), vocab: TokenBytes | None = None) -> BatchSampler:
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)

        greedy = [r.temperature == 0 for r in requests]
        generators: list[torch.Generator | None] = []
        for r, is_greedy in zip(requests, greedy, strict=True):
            if is_greedy:
                generators.append(None)
            else:
                g = torch.Generator(device=device)
                g.manual_seed(r.seed)
                generators.append(g)
        return cls(
            temperature=column([r.temperature or 1.0 for r in requests]),
            top_p=column([r.top_p for r in requests]),
            top_k=column([float(r.top_k) for r in requests]),
            penalty=column([r.repetition_penalty for r in requests]),
            greedy=greedy,
            generators=generators,
            suppress_ids=list(suppress_ids),
            any_penalty=any(r.repetition_penalty != 1.0 for r in requests),
            any_top_k=any(r.top_k > 0 for r in requests),
            any_top_p=any(r.top_p < 1.0 for r in requests),
            bans=[PhraseBan(vocab, r.avoid) if r.avoid and vocab is not None else None for r in requests],
        )

    def select(self, rows: torch.Tensor) -> BatchSampler:
        """The sampler for a subset of rows, after finished rows were dropped from the batch."""
        index = rows.tolist()
        return BatchSampler(
            temperature=self.temperature[rows], top_p=self.top_p[rows], top_k=self.top_k[rows],
            penalty=self.penalty[rows], greedy=[self.greedy[i] for i in index],
            generators=[self.generators[i] for i in index], suppress_ids=self.suppress_ids,
            any_penalty=self.any_penalty, any_top_k=self.any_top_k, any_top_p=self.any_top_p,
            bans=[self.bans[i] for i in index] if self.bans else [],
        )

    def next_tokens(self, logits: torch.Tensor, seen_ids: torch.Tensor, block_eos: Sequence[int],
                    eos_id: int, generated: Sequence[Sequence[int]] = ()) -> torch.Tensor:
        """Choose one token per row from `logits` [B, V]. `seen_ids` [B, T] are penalised as in transformers;
        `block_eos` lists the rows that may not end yet (min_new_tokens); `generated` (each row's new tokens so far)
        is what banned phrases are matched against. Both are host-side, so choosing costs no extra device sync."""
        scores = logits.float()
        if self.any_penalty:
            seen = scores.gather(1, seen_ids)
            seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
            scores = scores.scatter(1, seen_ids, seen)
        if self.suppress_ids:
            scores[:, self.suppress_ids] = float("-inf")
        if any(self.bans):
            for row, (ban, history) in enumerate(zip(self.bans, generated, strict=False)):
                banned = ban.banned(history) if ban is not None else []
                if banned:
                    scores[row, banned] = float("-inf")
        if block_eos:
            scores[list(block_eos), eos_id] = float("-inf")
        greedy_choice = scores.argmax(dim=-1)
        if all(self.greedy):
            return greedy_choice
        scores = scores / self.temperature
        if self.any_top_k:
            k = self.top_k.clamp(min=0).long()
            largest = int(k.max())
            kth = torch.topk(scores, min(largest, scores.shape[-1]), dim=-1).values.gather(
                1, (k - 1).clamp(min=0, max=min(largest, scores.shape[-1]) - 1))
            scores = torch.where((k > 0) & (scores < kth), float("-inf"), scores)
        probs = scores.softmax(dim=-1)
        if self.any_top_p:
            weights, candidates = _nucleus(probs, self.top_p)
        else:
            weights, candidates = probs, None
        # One uniform number per row, from the row's own generator: an inverse-CDF lookup then picks the token.
        draws = torch.stack([
            torch.rand((), generator=g, device=probs.device) if g is not None else probs.new_zeros(())
            for g in self.generators
        ])
        cdf = weights.cumsum(dim=-1)
        picked = torch.searchsorted(cdf, (draws * cdf[:, -1]).unsqueeze(1)).clamp(max=cdf.shape[-1] - 1)
        sampled = (candidates.gather(1, picked) if candidates is not None else picked).squeeze(1)
        return torch.where(torch.tensor(self.greedy, device=probs.device), greedy_choice, sampled)


# The nucleus usually lies within the few most likely tokens: looking there first avoids sorting the whole vocabulary.
_NUCLEUS_CANDIDATES = 64


def _nucleus(probs: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and token ids of each row's top-p set: the fewest most likely tokens holding `top_p` of the mass.
    Exact: the top candidates are used only when they hold that mass, else the whole vocabulary is sorted."""
    count = min(_NUCLEUS_CANDIDATES, probs.shape[-1])
    top_probs, top_ids = probs.topk(count, dim=-1)
    if not bool((top_probs.sum(dim=-1, keepdim=True) >= top_p).all()):
        top_probs, top_ids = probs.sort(dim=-1, descending=True)
    before = top_probs.cumsum(dim=-1) - top_probs
    keep = before < top_p
    keep[:, 0] = True
    return top_probs * keep, top_ids


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
        added = after[len(before):]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        search_from = max(len(self.text) - self.longest_stop, 0)
        self.text += added
        cut = min((i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self.finish(self.text[:cut])
        safe = self.text.lstrip().rstrip(REPLACEMENT_CHAR).rstrip()
        safe = safe[: len(safe) - self._stop_prefix_len(safe)].rstrip()
        return self._release(safe)

    def finish(self, text: str | None = None) -> str:
        """The last delta. Afterwards `final` holds the whole answer."""
        if text is None:
            text = self.text + self._decode(self.ids[self._read_offset:])
        final = text.strip().rstrip(REPLACEMENT_CHAR).rstrip()
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
