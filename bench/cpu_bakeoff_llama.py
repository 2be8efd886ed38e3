"""The llama.cpp side of bench/cpu_bakeoff.py, on the product's own path: `mechuri convert-gguf`'s converter
(model/gguf_convert.py: Q4_0, the fused QKV reordered, the LoRA as a GGUF LoRA) and `LlamaCppGenerator`
(model/serving/llamacpp.py), measured as the torch paths are measured.

    python bench/cpu_bakeoff_llama.py BASE WORKDIR ADAPTER    # writes WORKDIR/gguf-q4_0 (and its lora/)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THREADS = 2
KIND = "q4_0"
KV_TOKENS = 4096  # MECHURI_LLAMA_KV_TOKENS's default: 4 slots of 1,024 tokens (weights read, not mapped: the default)


def folder_of(workdir: Path) -> Path:
    return workdir / f"gguf-{KIND}"


def prepare(base: Path, workdir: Path, adapter: Path) -> None:
    from model.gguf_convert import cached_lora, convert_base, read_marker

    folder = folder_of(workdir)
    if read_marker(folder) is None:
        convert_base(base, folder, KIND)
    cached_lora(adapter.resolve(), folder, read_marker(folder))


def lora_delta(gen, prompt: str) -> float:
    """The largest change of a top-10 next-token log-probability with the LoRA at scale 1 against 0."""
    ids = gen.tokenizer.encode(prompt, add_special_tokens=False)
    tops = []
    for scale in (1.0, 0.0):
        answer = gen._engine.server.handle_completions({"prompt": ids, "n_predict": 1, "temperature": 0.0,
                                                        "n_probs": 10, "lora": [{"id": 0, "scale": scale}]})
        tops.append({t["id"]: t["logprob"] for t in answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]})
    shared = tops[0].keys() & tops[1].keys()
    return max((abs(tops[0][i] - tops[1][i]) for i in shared), default=float("inf"))


def llama_cpp(base: Path, workdir: Path, adapter: Path) -> dict:
    """The measurements of bench/cpu_bakeoff.py's `ours`, on LlamaCppGenerator (continuous batching, 4 slots)."""
    try:
        import xllamacpp
    except ImportError:
        return {"skipped": "skipped: xllamacpp not installed (pip install xllamacpp gguf)"}
    from bench.cpu_bakeoff import CHAT_PROMPT, NEW_TOKENS, PROMPT_TOKENS, status_gib
    from bench.real_shape_cpu import prompt_near
    from model.serving.llamacpp import LlamaCppGenerator
    from model.types import GenerationRequest

    started = time.perf_counter()
    gen = LlamaCppGenerator(folder_of(workdir), adapter=adapter.resolve(), slots=4, threads=THREADS,
                            prompt_cache_mib=0, kv_tokens=KV_TOKENS)
    load_s = time.perf_counter() - started

    def request(length: int, seed: int, new: int) -> GenerationRequest:
        return GenerationRequest(prompt_near(gen.tokenizer, length), seed=seed, max_new_tokens=new, temperature=0.7, stop=())

    async def run() -> dict:
        try:
            prefill = await gen.generate(request(PROMPT_TOKENS, 0, 1))
            one = await gen.generate(request(CHAT_PROMPT, 1, NEW_TOKENS))
            rss_single = status_gib("VmRSS")
            results = await asyncio.gather(*(gen.generate(request(CHAT_PROMPT, 2 + s, NEW_TOKENS))
                                             for s in range(4)))
            delta = lora_delta(gen, request(CHAT_PROMPT, 9, 1).prompt)
            follow = await followup(gen, prompt_near)
        finally:
            await gen.close()
        decode_wall = max(r.total_s for r in results) - max(r.ttft_s for r in results)
        return {"prompt_tps": prefill.prompt_tokens / prefill.ttft_s,
                "single_tps": (one.new_tokens - 1) / (one.total_s - one.ttft_s),
                "users4_tps": sum(r.new_tokens - 1 for r in results) / decode_wall,
                "rss_single_gib": rss_single, "lora_delta": delta, **follow}

    numbers = asyncio.run(run())
    return {"load_s": load_s, **numbers, "peak_gib": status_gib("VmHWM"),
            "note": f"LlamaCppGenerator, {KIND} (output q8_0), GGUF LoRA, {THREADS} threads, 4 slots x "
                    f"{KV_TOKENS // 4} K/V tokens (f16), no mmap; first token: first "
                    f"turn ({numbers['first_tokens']} tokens) {numbers['first_s']:.1f} s, follow-up "
                    f"({numbers['followup_tokens']} tokens, {numbers['followup_cached']} from the prompt cache) "
                    f"{numbers['followup_s']:.1f} s; {xllamacpp.get_system_info().strip()}"}


async def followup(gen, prompt_near) -> dict:
    """Time to first token of a first turn (60 tokens) and of a follow-up: a 300-token history answered, then the
    history and a 20-token question (issue 22's targets: 20 s and 5 s)."""
    from bench.cpu_bakeoff import CHAT_PROMPT
    from model.types import GenerationRequest

    tok = gen.tokenizer
    history, question = prompt_near(tok, 300), prompt_near(tok, 20)
    # Every prompt_near text starts the same: this one starts elsewhere, so nothing of it is cached.
    first = await gen.generate(GenerationRequest("첫 질문이에요. " + prompt_near(tok, CHAT_PROMPT - 6), seed=0,
                                                 max_new_tokens=1))
    await gen.generate(GenerationRequest(history, seed=0, max_new_tokens=1, stop=()))
    before = gen.cached_tokens
    again = await gen.generate(GenerationRequest(history + "\n" + question, seed=0, max_new_tokens=1, stop=()))
    return {"first_s": first.ttft_s, "first_tokens": first.prompt_tokens, "followup_s": again.ttft_s,
            "followup_tokens": again.prompt_tokens, "followup_cached": gen.cached_tokens - before}


def main() -> int:
    base, workdir, adapter = (Path(a) for a in sys.argv[1:4])
    started = time.perf_counter()
    prepare(base, workdir, adapter)
    print(json.dumps({"prepare_s": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
