"""Helpers the benchmarks share: medians, interleaved timing, markdown tables, the machine line, writing one section
of docs/benchmarks.md without touching the others, device timing, and the model-side pieces of the generation
benchmarks (timing a plain HF `generate`, prompts of an exact token count, weight bytes per token)."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_FILE = REPO_ROOT / "docs" / "benchmarks.md"
DOCS_TITLE = "# Benchmarks"
KOALPACA_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleaved(variants: dict[str, Callable[[int], float]], reps: int) -> dict[str, list[float]]:
    """Run each variant `reps` times, alternating the order every round (A B, B A, …) so that a machine getting
    busier or quieter during the run hits every variant alike. Each callable takes the round number (a seed) and
    returns the seconds it measured."""
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            seconds[name].append(variants[name](rep))
    return seconds


def paired_overhead(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of the per-round ratios candidate/baseline − 1, in %: each round's pair ran back to back, so the
    ratio cancels the machine's load at that moment better than a ratio of medians."""
    return 100 * (median([c / b for c, b in zip(candidate, baseline, strict=True)]) - 1)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def versions() -> str:
    import torch
    import transformers

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
    for name in ("peft", "bitsandbytes"):
        try:
            module = __import__(name)
            parts.append(f"{name} {module.__version__}")
        except Exception:  # bitsandbytes may be absent, or fail to find its native library: say so, don't crash
            parts.append(f"{name} n/a")
    return ", ".join(parts)


def cpu_line() -> str:
    import torch

    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()}-core CPU dev box, no GPU; torch threads {torch.get_num_threads()}; "
            f"load average at the end {load}")


def today() -> str:
    return datetime.date.today().isoformat()


def command_line() -> str:
    """How this run was started, relative to the repository root, to paste into the docs."""
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO_ROOT)
    return shlex.join(["python", script, *sys.argv[1:]])


def replace_section(document: str, heading: str, body: str) -> str:
    """`document` with the section that starts at `heading` (up to the next `## ` heading) replaced by
    `heading` + `body`, or with it appended when absent. Other sections keep their text byte for byte."""
    section = f"{heading}\n\n{body.strip()}\n"
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if start is None:
        text = document.rstrip("\n")
        return f"{text}\n\n{section}" if text else section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + after if after else "")


def append_docs(heading: str, body: str, path: Path = DOCS_FILE) -> Path:
    """Write one `## ` section into docs/benchmarks.md, creating the file with its title if it is absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = path.read_text(encoding="utf-8") if path.exists() else f"{DOCS_TITLE}\n"
    path.write_text(replace_section(document, heading, body), encoding="utf-8")
    return path


def sync(device: str) -> None:
    """Wait for queued GPU work, so that a wall-clock reading means something."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_bandwidth(device: str) -> float:
    """Bytes per second, read + written, of a large device-to-device copy (median of 5 timings of 10 copies)."""
    import torch

    size = (2 << 30) if device.startswith("cuda") else (256 << 20)
    src = torch.ones(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    timings = []
    for _ in range(5):
        sync(device)
        started = time.perf_counter()
        for _ in range(10):
            dst.copy_(src)
        sync(device)
        timings.append(time.perf_counter() - started)
    del src, dst
    free_memory()
    return 2 * size * 10 / median(timings)


# ----- model-side helpers shared by the generation benchmarks -----


def polyglot_config(**overrides):
    """Polyglot-ko-5.8B's exact shape; eos_token_id 0 as its config says (the real EOS comes from the tokenizer)."""
    from transformers import GPTNeoXConfig

    values = dict(
        vocab_size=30080, hidden_size=4096, num_hidden_layers=28, num_attention_heads=16, intermediate_size=16384,
        rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True, tie_word_embeddings=False,
        hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
    )
    return GPTNeoXConfig(**{**values, **overrides})


@dataclass
class Timing:
    ttft_s: float
    e2e_s: float
    new_tokens: int

    @property
    def decode_tps(self) -> float:
        return (self.new_tokens - 1) / max(self.e2e_s - self.ttft_s, 1e-9)


def weight_bytes(model) -> int:
    """Bytes of weights one decoding step reads: every parameter as stored (packed for 4-bit and 8-bit, plus the
    4-bit block scales) except the input embedding, of which one row per token is read."""
    total = 0
    for name, param in model.named_parameters():
        if "embed_in" in name:
            continue
        total += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)
        for part in (getattr(state, "absmax", None), getattr(getattr(state, "state2", None), "absmax", None)):
            if part is not None:
                total += part.numel() * part.element_size()
    return total


_CORPUS_IDS: list[int] = []


def prompt_of_length(tokenizer, length: int) -> str:
    """Korean text that the tokenizer encodes to exactly `length` tokens."""
    from model.demo.tiny import korean_corpus

    if not _CORPUS_IDS:
        _CORPUS_IDS.extend(tokenizer.encode("\n".join(korean_corpus()), add_special_tokens=False))
    ids = _CORPUS_IDS * (1 + (length + 32) // len(_CORPUS_IDS))
    for cut in sorted(range(max(1, length - 16), length + 17), key=lambda k: abs(k - length)):
        text = tokenizer.decode(ids[:cut], skip_special_tokens=True)
        if "\ufffd" not in text and len(tokenizer.encode(text, add_special_tokens=False)) == length:
            return text
    raise RuntimeError(f"found no text of exactly {length} tokens in the corpus")


def hf_generate(model, loaded, text: str, new_tokens: int, seed: int) -> Timing:
    """The plain transformers way, timed as a bot would see it: tokenize, generate with a streamer, decode."""
    import torch
    from transformers import set_seed
    from transformers.generation.streamers import BaseStreamer

    class TokenClock(BaseStreamer):
        def __init__(self) -> None:
            self.calls: list[float] = []

        def put(self, value) -> None:  # the first call carries the prompt, then one call per new token
            self.calls.append(time.perf_counter())

        def end(self) -> None:
            pass

    sync(loaded.device)
    started = time.perf_counter()
    set_seed(seed)
    ids = torch.tensor([loaded.tokenizer.encode(text, add_special_tokens=False)], device=loaded.device)
    clock = TokenClock()
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, eos_token_id=loaded.eos_token_id, pad_token_id=loaded.pad_token_id,
        streamer=clock, **KOALPACA_SAMPLING,
    )
    loaded.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    sync(loaded.device)
    return Timing(clock.calls[1] - started, time.perf_counter() - started, out.shape[1] - ids.shape[1])


def quiet_benchmark() -> None:
    """Silence what would bury the tables: bitsandbytes logs (not warns) on every 8-bit matmul on a CPU, and peft
    warns when a second Generator merges an adapter that the first one already merged."""
    import logging
    import warnings

    from model.loading import quiet_transformers

    quiet_transformers()
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="All adapters are already merged")
