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

    def next_tokens(self, logits: torch.Tensor, seen_ids: torch.Tensor, block_eos: torch.Tensor | None,
                    eos_id: int, generated: Sequence[Sequence[int]] = ()) -> torch.Tensor:
        """Choose one token per row from `logits` [B, V]. `seen_ids` [B, T] are penalised as in transformers;
        `generated` (each row's new tokens so far) is what banned phrases are matched against."""
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
        if block_eos is not None and bool(block_eos.any()):
            scores[block_eos, eos_id] = float("-inf")
        greedy_choice = scores.argmax(dim=-1)
        if all(self.greedy):
            return greedy_choice
        scores = scores / self.temperature
        if self.any_top_k:
            k = self.top_k.clamp(min=0).long()
            kth = torch.sort(scores, dim=-1, descending=True).values.gather(
                1, (k - 1).clamp(min=0, max=scores.shape[-1] - 1))
            scores = torch.where((k > 0) & (scores < kth), float("-inf"), scores)
        if self.any_top_p:
            sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            remove_sorted = cumulative <= (1 - self.top_p)
            remove_sorted[:, -1] = False  # always keep the most likely token
            remove = remove_sorted.scatter(1, order, remove_sorted)
            scores = scores.masked_fill(remove, float("-inf"))
        probs = scores.softmax(dim=-1)
        chosen = greedy_choice.clone()
        for row, generator in enumerate(self.generators):
            if generator is not None:
                chosen[row] = torch.multinomial(probs[row], 1, generator=generator)[0]
        return chosen


class TextTracker:
    """Decodes one row's tokens and releases only text that is final: never a stop marker or a piece of one, never
    half a character, and no surrounding whitespace. The deltas joined are exactly the final text."""

    def __init__(self, tokenizer, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False
        self.final: str | None = None

    def add(self, token_id: int) -> str:
        """Take one token; return the new safe text (possibly empty). Sets `stopped` at a stop marker."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self.finish(text[:cut])
        safe = text.lstrip().rstrip(REPLACEMENT_CHAR).rstrip()
        safe = safe[: len(safe) - self._stop_prefix_len(safe)].rstrip()
        return self._release(safe)

    def finish(self, text: str | None = None) -> str:
        """The last delta. Afterwards `final` holds the whole answer."""
        if text is None:
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
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
