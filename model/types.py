"""The contract between `model/` and its callers: requests, results and errors. Pure Python, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

STOP_MARKER = "###"
# A row samples among its most likely tokens only, at most this many (model/serving/sampling.py): transformers'
# `generate` does the same (its default top_k is 50), so KoAlpaca's own `generate(do_sample=True, temperature=0.7,
# top_p=0.9)` never goes past the top 50. A fixed count keeps the decode step's shapes fixed, and `topk` is far cheaper
# than sorting the vocabulary (8 × 30,080 scores: 4 ms against 90 ms on a CPU).
MAX_TOP_K = 64


class ModelError(Exception):
    """Base class of every error `model/` raises on purpose. The message names the cause and the fix."""


class ModelLoadError(ModelError):
    """A base model or tokenizer could not be loaded."""


class AdapterError(ModelError):
    """A LoRA adapter folder is missing, broken, or made for another base."""


class GeneratorBusy(ModelError):
    """The generator's queue is full. Callers should tell the user to try again shortly."""


class GeneratorClosed(ModelError):
    """The generator was closed; no new requests are taken."""


@dataclass(frozen=True)
class GenerationRequest:
    """One generation. `temperature == 0` means greedy decoding (the seed is then irrelevant).

    `avoid` lists phrases never to generate (every spelling of the dishes the user turned down, or that carry their
    allergens: over a thousand for some allergies), banned on bytes while sampling (model/serving/bans.py). A
    spelling the caller does not list can still appear: callers that must be sure check the text afterwards.
    """

    prompt: str
    seed: int
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    repetition_penalty: float = 1.1
    stop: tuple[str, ...] = (STOP_MARKER,)
    min_new_tokens: int = 0
    avoid: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 means greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be between 0 (off) and {MAX_TOP_K}: a row samples among its "
                             f"{MAX_TOP_K} most likely tokens at most")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0 (1.0 means off)")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens")

    def sampling_params(self) -> dict[str, float | int]:
        """The parameters worth storing beside a turn, to reproduce it."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
        }


@dataclass(frozen=True)
class AdapterInfo:
    """The LoRA adapter serving right now. `version` is a content hash of the adapter weights."""

    name: str | None = None
    path: str | None = None
    version: str = "base"
    load_seconds: float = 0.0
    loaded_at: float = 0.0


@dataclass(frozen=True)
class GenerationResult:
    text: str
    seed: int
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # "eos" | "stop" | "length"
    ttft_s: float
    total_s: float
    adapter: AdapterInfo = field(default_factory=AdapterInfo)
    prompt_truncated: bool = False
    token_ids: tuple[int, ...] = ()  # the answer's tokens as generated (EOS and stop text included, if reached)

    @property
    def tokens_per_s(self) -> float:
        decode_s = self.total_s - self.ttft_s
        return (self.new_tokens - 1) / decode_s if self.new_tokens > 1 and decode_s > 0 else 0.0


@dataclass(frozen=True)
class GeneratorInfo:
    base: str
    adapter: AdapterInfo
    quantization: str
    device: str
    dtype: str
    max_context: int
    queue_length: int
    running: int
    max_batch_size: int
    max_queue: int
