"""Resident memory of the llama.cpp CPU path at the 5.8B shape, per memory setting, and the speed ratio between them
(issue 22's target: resident ≤ 6 GiB with the adapter, 4 users). Each setting runs in its own process (resident
memory is per process), the settings alternate `--rounds` times so a shared machine's load falls on all of them.

    python bench/llama_memory.py --workdir /tmp/mechuri-bakeoff --adapter /tmp/mechuri-bakeoff/lora-r16 [--reload]

WORKDIR/gguf-q4_0 is bench/cpu_bakeoff.py's converted GGUF (and its cached LoRA). Per setting: resident after 4
users decoded together (steady) and the process's peak, their total decode tokens/s; with `--reload`, the peak of
a `/reload` started while a request runs (the old server keeps serving it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = {  # name: LlamaCppGenerator's memory arguments
    "before: mmap, 4 x 2048, f16": {"mmap": True, "kv_tokens": None},
    "no mmap, 4 x 1024, f16": {"kv_tokens": 4096},
    "no mmap, shared pool 4096, f16": {"kv_tokens": 4096, "kv_unified": True},
    "no mmap, 4 x 1024, q8_0": {"kv_tokens": 4096, "kv_type": "q8_0"},
    "no mmap, 4 x 2048, q8_0": {"kv_tokens": 8192, "kv_type": "q8_0"},
}
RELOADED = "no mmap, 4 x 1024, f16"  # the default: the one whose /reload peak is measured
NEW_TOKENS = 8


def measure(folder: Path, adapter: Path, setting: dict, reload: bool) -> dict:
    from bench.cpu_bakeoff import CHAT_PROMPT, status_gib
    from bench.real_shape_cpu import prompt_near
    from model.serving.llamacpp import LlamaCppGenerator
    from model.types import GenerationRequest

    started = time.perf_counter()
    gen = LlamaCppGenerator(folder, adapter=adapter, slots=4, threads=2, prompt_cache_mib=0, **setting)
    load_s = time.perf_counter() - started
    loaded = status_gib("VmRSS")

    def request(seed: int, new: int = NEW_TOKENS) -> GenerationRequest:
        return GenerationRequest(f"{seed}번 " + prompt_near(gen.tokenizer, CHAT_PROMPT), seed=seed,
                                 max_new_tokens=new, temperature=0.7, stop=())

    async def run() -> dict:
        try:
            results = await asyncio.gather(*(gen.generate(request(s)) for s in range(4)))
            out = {"steady_gib": status_gib("VmRSS"), "peak_gib": status_gib("VmHWM")}
            wall = max(r.total_s for r in results) - max(r.ttft_s for r in results)
            out["users4_tps"] = sum(r.new_tokens - 1 for r in results) / wall
            out["users4_wall_s"] = max(r.total_s for r in results)  # 4 prompts prefilled and answered, end to end
            if reload:
                running = asyncio.ensure_future(gen.generate(request(9, 16)))
                await asyncio.sleep(1.0)
                await gen.reload_adapter(adapter)
                out["reload_answer_ok"] = bool((await running).new_tokens)
                out["after_reload_gib"] = status_gib("VmRSS")
                out["reload_peak_gib"] = status_gib("VmHWM")
            return out
        finally:
            await gen.close()

    return {"load_s": load_s, "loaded_gib": loaded, **asyncio.run(run())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mechuri-bakeoff"))
    parser.add_argument("--adapter", type=Path, default=Path("/tmp/mechuri-bakeoff/lora-r16"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", help="one setting's name (the child process)")
    parser.add_argument("--reload", action="store_true")
    args = parser.parse_args()
    folder = args.workdir / "gguf-q4_0"
    if args.only:
        print(json.dumps(measure(folder, args.adapter.resolve(), SETTINGS[args.only], args.reload)))
        return 0
    for round_ in range(args.rounds):
        for name in SETTINGS:
            cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--adapter", str(args.adapter),
                   "--only", name] + (["--reload"] if args.reload and name == RELOADED else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = done.stdout.strip().splitlines()[-1] if done.returncode == 0 else done.stderr[-500:]
            print(json.dumps({"round": round_ + 1, "setting": name, "load": Path("/proc/loadavg").read_text()[:14],
                              "result": line}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
