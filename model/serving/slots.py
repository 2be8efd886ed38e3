"""The decode batch's memory, allocated once: a KV cache of `slots` rows × the context length, and each slot's
sampling state as device tensors.

A request takes a free slot: its prompt is prefilled on its own cache, copied into the slot's first columns, and
from then on the slot advances one column per decode step. A finished request frees its slot at once, and the next
request can take it at the next step. Nothing here grows, is concatenated or reallocated while decoding, so the
step has fixed shapes for a given (rows, window) and can be captured as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from model.types import GenerationRequest

_MASK32 = 0xFFFFFFFF


class SlotCache:
    """A model-forward cache (the `cache=` argument) over preallocated per-slot K/V tensors.

    Each decode step writes every row's new key and value at that row's own column (`write_at`), in place, and the
    attention sees columns `[0, window)`; the caller masks each row's columns past its own length. Rows are the first
    `rows` slots: the scheduler keeps the busy slots at the low indices, so a small batch computes a small bucket.
    """

    def __init__(self, layers: int, slots: int, heads: int, length: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        shape = (slots, heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.length = length
        self.write_at = torch.zeros(slots, dtype=torch.long, device=device)
        self.window = length

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        rows, heads, _, head_dim = key.shape
        at = self.write_at[:rows].view(rows, 1, 1, 1).expand(rows, heads, 1, head_dim)
        keys, values = self.keys[layer_idx][:rows], self.values[layer_idx][:rows]
        keys.scatter_(2, at, key)
        values.scatter_(2, at, value)
        return keys[:, :, : self.window], values[:, :, : self.window]

    def fill(self, slot: int, prefilled: object, row: int, start: int, count: int) -> None:
        """Copy one row of a prefill's DynamicCache (columns start..start+count) into `slot`'s first columns."""
        for layer, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            source = prefilled.layers[layer]
            keys[slot, :, :count] = source.keys[row, :, start:start + count]
            values[slot, :, :count] = source.values[row, :, start:start + count]


@dataclass
class Rows:
    """The sampling state of some slots, as tensors with one entry (or row) per slot."""

    position: torch.Tensor  # long: the column the next token is fed at (= tokens in the cache)
    last_token: torch.Tensor  # long: the token to feed next
    generated: torch.Tensor  # long: tokens chosen so far; also the counter of the row's random draws
    seed: torch.Tensor  # long
    greedy: torch.Tensor  # bool
    temperature: torch.Tensor  # float; 1 for greedy rows
    top_p: torch.Tensor  # float
    top_k: torch.Tensor  # long; the vocabulary size when off
    penalty: torch.Tensor  # float; repetition penalty
    min_new: torch.Tensor  # long: EOS is refused while generated < min_new
    presence: torch.Tensor  # bool [., V]: ids in the prompt or the answer, which the repetition penalty sees
    banned: torch.Tensor  # bool [., V]: phrase bans for the next token, written by the host between steps
    utf8: torch.Tensor  # long: the row's UTF-8 state (utf8.py)


ROW_FIELDS = tuple(f.name for f in fields(Rows))


class SlotState(Rows):
    """Every slot's state, allocated once. `rows(n)` views the first n slots (what a decode step reads)."""

    def __init__(self, slots: int, vocab_rows: int, device: torch.device | str) -> None:
        def zeros(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        super().__init__(
            position=zeros(slots), last_token=zeros(slots), generated=zeros(slots), seed=zeros(slots),
            greedy=zeros(slots, dtype=torch.bool), temperature=zeros(slots, dtype=torch.float32),
            top_p=zeros(slots, dtype=torch.float32), top_k=zeros(slots), penalty=zeros(slots, dtype=torch.float32),
            min_new=zeros(slots), presence=zeros(slots, vocab_rows, dtype=torch.bool),
            banned=zeros(slots, vocab_rows, dtype=torch.bool), utf8=zeros(slots),
        )
        self.active = zeros(slots)  # 1 for a slot that holds a request: only those advance their position
        self.vocab_rows = vocab_rows
        self.device = device
        self.index = torch.arange(slots, device=device)

    def rows(self, count: int) -> Rows:
        return Rows(**{name: getattr(self, name)[:count] for name in ROW_FIELDS})

    def pick(self, slots: torch.Tensor) -> Rows:
        return Rows(**{name: getattr(self, name)[slots] for name in ROW_FIELDS})

    def start(self, slot: int, request: GenerationRequest, prompt_ids: list[int]) -> None:
        """Set a slot up for a request whose prompt (`prompt_ids`, no padding) was just prefilled."""
        greedy = request.temperature == 0
        self.position[slot] = len(prompt_ids)
        self.generated[slot] = 0
        self.seed[slot] = request.seed % (1 << 63)
        self.greedy[slot] = greedy
        self.temperature[slot] = 1.0 if greedy else request.temperature
        self.top_p[slot] = request.top_p
        self.top_k[slot] = request.top_k if request.top_k > 0 else self.vocab_rows
        self.penalty[slot] = request.repetition_penalty
        self.min_new[slot] = request.min_new_tokens
        self.presence[slot] = False
        self.presence[slot, torch.tensor(prompt_ids, dtype=torch.long, device=self.device)] = True
        # `banned` is not reset here: the host wrote the slot's phrase bans just before its prefill, and they must
        # hold for the first token too. DecodeBatch.release clears them when the slot is freed.
        self.utf8[slot] = 0

    def advance(self, slots: torch.Tensor | slice, tokens: torch.Tensor, after_utf8: torch.Tensor) -> None:
        """Record the tokens just chosen for `slots` (in place, on the device, no host sync)."""
        self.presence[self.index[slots], tokens] = True
        self.utf8[slots] = after_utf8[self.utf8[slots], tokens]
        self.last_token[slots] = tokens
        self.generated[slots] += 1


def uniform(seed: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """A uniform number in [0, 1) from (seed, counter), the same on every device: a counter-based draw.

    A row's n-th draw depends only on its seed and n, so a seeded answer is the same alone, in a crowd, or when it
    joins a batch halfway, and it needs no per-row generator launch and no host sync. Integer arithmetic only
    (32-bit mixing in int64 lanes, never overflowing), so CPU and GPU agree bit for bit.
    """
    low = _mix(seed & _MASK32 ^ 0x68E31DA4)
    high = _mix((seed >> 32) & _MASK32 ^ 0xB5297A4D)
    h = _mix(_mix(low ^ high) ^ (counter & _MASK32))
    return (h >> 8).to(torch.float32) / float(1 << 24)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 32-bit x, in int64 without overflow (16-bit halves)."""
    low, high = x & 0xFFFF, x >> 16
    return (low * c + ((high * c) & 0xFFFF) * 65536) & _MASK32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Chris Wellons' lowbias32 integer hash: every input bit flips about half of the output bits."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)
