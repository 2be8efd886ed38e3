"""The decode step, on fixed shapes: prefill newcomers into free slots, then one token for every busy slot.

    prefill(newcomers)   their prompts in one padded forward; each row's K/V is copied into its slot; first token
                         (a prompt that starts with a kept prefix (prefix.py) runs only its remaining tokens)
    step(rows, window)   one forward of the first `rows` slots over `window` cache columns, then sampling

`step` allocates nothing persistent, has no host sync, and reads every input from tensors that live as long as the
batch, so on CUDA it is captured once per (rows, window, sampling) bucket as a CUDA graph and replayed: the 5.8B
model's ~1,200 kernel launches per token become one. The scheduler (model/serving/generator.py) copies the chosen ids to
the host after each step: the only device-to-host copy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from model.serving.prefix import Prefix, PrefixCache
from model.serving.sampling import choose
from model.serving.slots import ROW_FIELDS, SlotCache, SlotState
from model.serving.utf8 import Utf8Table
from model.types import GenerationRequest

log = logging.getLogger(__name__)

MIN_WINDOW = 64  # cache columns: windows are powers of two from here up to the context length


def bucket(needed: int, smallest: int, largest: int) -> int:
    """The power of two >= needed (at least `smallest`), capped at `largest`: few distinct shapes to capture."""
    return min(largest, max(smallest, 1 << max(needed - 1, 0).bit_length()))


@dataclass
class Newcomer:
    slot: int
    request: GenerationRequest
    prompt_ids: list[int]


class DecodeBatch:
    def __init__(self, model: Any, *, slots: int, context: int, vocab_rows: int, token_bytes: Sequence[bytes],
                 eos: int, pad: int, never: Sequence[int], device: str, capture: bool = False,
                 prefix_bytes: int = 0) -> None:
        self.model, self.slots, self.context, self.eos, self.pad = model, slots, context, eos, pad
        self.device = device
        self.state = SlotState(slots, vocab_rows, device)
        self.utf8 = Utf8Table(token_bytes, vocab_rows, device, boundary_only=(eos,))
        # Ids that may never be chosen: embedding rows past the tokenizer, and special tokens other than EOS.
        allowed = torch.zeros(vocab_rows, dtype=torch.bool)
        allowed[: len(token_bytes)] = True
        allowed[[i for i in never if 0 <= i < vocab_rows and i != eos]] = False
        allowed[eos] = True
        self.allowed = allowed.to(device)
        self.cache: SlotCache | None = None  # allocated on the first prefill, in the dtype the model's K/V have
        self.capture = capture and device.startswith("cuda")
        self._graphs: dict[tuple[int, int, bool], _Captured] = {}
        self._eager_mask = getattr(getattr(model, "config", None), "_attn_implementation", "sdpa") == "eager"
        self.prefix = PrefixCache(prefix_bytes) if prefix_bytes > 0 else None

    # ----- prefill -----

    def prefill(self, newcomers: Sequence[Newcomer]) -> torch.Tensor:
        """Run the newcomers' prompts, fill their slots, and choose each one's first token (returned, on device)."""
        found = [self.prefix.lookup(n.prompt_ids) if self.prefix is not None else None for n in newcomers]
        logits: list[torch.Tensor | None] = [None] * len(newcomers)
        fresh = [i for i, hit in enumerate(found) if hit is None]
        if fresh:
            for i, row in zip(fresh, self._prefill_fresh([newcomers[i] for i in fresh]), strict=True):
                logits[i] = row
        for i, hit in enumerate(found):
            if hit is not None:
                logits[i] = self._prefill_after(newcomers[i], *hit)
        for n in newcomers:
            self.state.start(n.slot, n.request, n.prompt_ids)
        slots = torch.tensor([n.slot for n in newcomers], device=self.device)
        tokens = choose(torch.stack(logits), self.state.pick(slots), allowed=self.allowed, utf8=self.utf8,
                        eos=self.eos, sample=any(n.request.temperature > 0 for n in newcomers))
        self.state.advance(slots, tokens, self.utf8.after)
        self.state.active[slots] = 1
        return tokens

    def _prefill_fresh(self, newcomers: Sequence[Newcomer]) -> torch.Tensor:
        """Whole prompts, left-padded into one forward. Returns each one's last logits."""
        from transformers import DynamicCache

        width = max(len(n.prompt_ids) for n in newcomers)
        ids = torch.full((len(newcomers), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(newcomers), width), dtype=torch.long)
        for row, n in enumerate(newcomers):
            ids[row, width - len(n.prompt_ids):] = torch.tensor(n.prompt_ids)
            mask[row, width - len(n.prompt_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        prefilled = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=prefilled, use_cache=True,
                         logits_to_keep=1)
        self._ensure_cache(prefilled)
        for row, n in enumerate(newcomers):
            self.cache.fill(n.slot, prefilled, row, width - len(n.prompt_ids), len(n.prompt_ids))
        return out.logits[:, -1, :]

    def _prefill_after(self, n: Newcomer, prefix: Prefix, length: int) -> torch.Tensor:
        """The prompt's tokens past a kept prefix of `length` tokens, on top of that prefix's K/V."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, (keys, values) in enumerate(zip(prefix.keys, prefix.values, strict=True)):
            cache.update(keys[None, :, :length], values[None, :, :length], layer)  # copied on the next update
        total = len(n.prompt_ids)
        out = self.model(input_ids=torch.tensor([n.prompt_ids[length:]], device=self.device),
                         attention_mask=torch.ones((1, total), dtype=torch.long, device=self.device),
                         position_ids=torch.arange(length, total, device=self.device)[None], cache=cache,
                         use_cache=True, logits_to_keep=1)
        self._ensure_cache(cache)
        self.cache.fill(n.slot, cache, 0, 0, total)
        return out.logits[0, -1, :]

    def _ensure_cache(self, prefilled: Any) -> None:
        if self.cache is None:
            keys = prefilled.layers[0].keys
            self.cache = SlotCache(len(prefilled.layers), self.slots, keys.shape[1], self.context, keys.shape[3],
                                   keys.dtype, keys.device)
            self.cache.write_at = self.state.position  # every step writes each row at its own position

    def keep(self, slot: int, ids: Sequence[int]) -> None:
        """Keep `slot`'s K/V for `ids` (what its cache holds: the prompt and the answer fed so far) for reuse."""
        if self.prefix is None or self.cache is None or not ids:
            return
        count = len(ids)
        self.prefix.store(Prefix(tuple(ids), [k[slot, :, :count].clone() for k in self.cache.keys],
                                 [v[slot, :, :count].clone() for v in self.cache.values]))

    def release(self, slot: int) -> None:
        self.state.active[slot] = 0
        self.state.position[slot] = 0
        self.state.banned[slot] = False  # the next request in this slot starts with no bans unless it sets its own

    def ban(self, slot: int, ids: Sequence[int]) -> None:
        """The tokens `slot` may not choose next (its phrase bans, recomputed by the host between steps)."""
        self.state.banned[slot] = False
        if ids:
            self.state.banned[slot, torch.tensor(ids, dtype=torch.long, device=self.device)] = True

    # ----- one decode step -----

    def step(self, rows: int, window: int, sample: bool) -> torch.Tensor:
        """One token for each of the first `rows` slots; the cache columns past `window` are not read."""
        if not self.capture:
            return self._step(rows, window, sample)
        key = (rows, window, sample)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = _Captured(self, key)
        return graph.replay()

    def _step(self, rows: int, window: int, sample: bool) -> torch.Tensor:
        assert self.cache is not None, "prefill runs before the first step"
        state, cache = self.state, self.cache
        view = state.rows(rows)
        cache.window = window
        visible = torch.arange(window, device=view.position.device) <= view.position.unsqueeze(1)
        mask = visible[:, None, None, :]
        if self._eager_mask:  # eager attention adds its mask; sdpa takes booleans
            dtype = cache.keys[0].dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        out = self.model(input_ids=view.last_token.unsqueeze(1), attention_mask=mask,
                         position_ids=view.position.unsqueeze(1), cache=cache, use_cache=True, logits_to_keep=1)
        tokens = choose(out.logits[:, -1, :], view, allowed=self.allowed, utf8=self.utf8, eos=self.eos, sample=sample)
        state.position[:rows] += state.active[:rows]
        state.advance(slice(0, rows), tokens, self.utf8.after)
        return tokens

    def forget_captures(self) -> None:
        """After an adapter swap the graphs point at the old adapter's weights: capture again on next use."""
        self._graphs.clear()


class _Captured:
    """One CUDA graph of `DecodeBatch._step` for one bucket."""

    _pool: Any = None  # shared by every graph: buckets never run at the same time

    def __init__(self, batch: DecodeBatch, key: tuple[int, int, bool]) -> None:
        rows, window, sample = key
        # Warm-up runs the step for real (kernel selection, lazy init); the state it advances is put back after.
        saved = {name: getattr(batch.state, name).clone() for name in ROW_FIELDS}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            batch._step(rows, window, sample)
        torch.cuda.current_stream().wait_stream(side)
        for name, value in saved.items():
            getattr(batch.state, name).copy_(value)
        if _Captured._pool is None:
            _Captured._pool = torch.cuda.graph_pool_handle()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=_Captured._pool):
            self.tokens = batch._step(rows, window, sample)
        log.info("captured the decode step for %d rows × %d columns (%s)", rows, window,
                 "sampled" if sample else "greedy")

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.tokens
