"""The CPU bake-off at the exact Polyglot-ko-5.8B shape: today's bf16 path, torch int8, torch int4 (our engine) and
llama.cpp (xllamacpp), each in its own process, one after another, in one run.

    .venv/bin/python bench/cpu_bakeoff.py [--paths bf16,int8,int4,llama.cpp] [--workdir DIR] [--append-docs]

Reuses bench/real_shape_cpu.py's random bf16 checkpoint (built once into its workdir) and adds a random rank-16 LoRA
on all four target modules. int8/int4 folders are prepared by `mechuri quantize` (timed, offline). Per path: load
time, resident memory (after the runs, and the peak), single-stream decode tokens/s, 4 concurrent users' decode
tokens/s in total, prompt (prefill) tokens/s, and whether the LoRA changes the logits.

llama.cpp (xllamacpp and gguf, in the lock for x86-64 Linux) runs the product's path: `mechuri convert-gguf`'s
converter (Q4_0, the fused QKV reordered, the LoRA as a GGUF LoRA) and `LlamaCppGenerator`; it is skipped, with the
reason, where xllamacpp is missing (`--llama-path DIR` adds a folder that holds it). Its "LoRA applied" column is the
largest change of a next-token log-probability with the LoRA at scale 1 against 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_docs, command_line, cpu_line, markdown_table, quiet_benchmark, today, versions

SECTION = "## 22: the CPU bake-off at the 5.8B shape"
SECTION_FOLLOWUP = "## 22: follow-up turns on the CPU path (prefix reuse)"
PATHS = ("bf16", "int8", "int4", "llama.cpp")
TARGETS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
RANK = 16
NEW_TOKENS = 12
PROMPT_TOKENS = 128  # the prefill measurement
CHAT_PROMPT = 60  # the decode measurements' prompt


def status_gib(field: str) -> float:
    kb = int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    return kb / 2**20


def cpu_model() -> str:
    """/proc/cpuinfo's model name and the vector extensions the kernels may use."""
    info = Path("/proc/cpuinfo").read_text()
    name = re.search(r"model name\s*:\s*(.+)", info)
    flags = set(re.search(r"flags\s*:\s*(.+)", info).group(1).split()) if "flags" in info else set()
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{name.group(1).strip() if name else 'unknown CPU'} ({', '.join(simd)})"


def write_lora(base: Path, out: Path, rank: int = RANK) -> Path:
    """A random rank-16 PEFT LoRA on all four modules of every layer, written directly (no 11 GB model needed)."""
    import torch
    from safetensors.torch import save_file

    if (out / "adapter_model.safetensors").exists():
        return out
    config = json.loads((base / "config.json").read_text())
    hidden, ffn, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    shapes = {"query_key_value": (hidden, 3 * hidden), "dense": (hidden, hidden), "dense_h_to_4h": (hidden, ffn),
              "dense_4h_to_h": (ffn, hidden)}
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(layers):
        for name, (fan_in, fan_out) in shapes.items():
            where = "attention" if name in ("query_key_value", "dense") else "mlp"
            key = f"base_model.model.gpt_neox.layers.{layer}.{where}.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) / fan_in**0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.01
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
        "target_modules": list(TARGETS), "bias": "none", "base_model_name_or_path": str(base),
        "fan_in_fan_out": False, "inference_mode": True}))
    return out


def prepare(base: Path, workdir: Path, kind: str) -> float | None:
    """`mechuri quantize` into workdir/kind once; returns the seconds it took (None when reused)."""
    out = workdir / kind
    if (out / "mechuri_quantized.json").exists():
        return None
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mechuri", "quantize", str(base), str(out), "--kind", kind], check=True,
                   cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - started


# ----- one path, in a child process -----

def ours(kind: str, base: Path, workdir: Path, adapter: Path) -> dict:
    import asyncio

    import torch

    from bench.real_shape_cpu import prompt_near
    from model.loading import load_model
    from model.serving.generator import Generator
    from model.types import GenerationRequest

    started = time.perf_counter()
    folder = base if kind == "bf16" else workdir / kind
    loaded = load_model(str(folder), adapter=adapter, quantization="none" if kind == "bf16" else kind,
                        dtype=torch.bfloat16 if kind == "bf16" else None, device="cpu")
    load_s = time.perf_counter() - started
    ids = torch.tensor([loaded.tokenizer.encode(prompt_near(loaded.tokenizer, 8), add_special_tokens=False)])
    with torch.inference_mode():
        with_lora = loaded.model(input_ids=ids).logits.float()
        with loaded.model.disable_adapter():
            without = loaded.model(input_ids=ids).logits.float()
    lora_delta = (with_lora - without).abs().max().item()
    tok = loaded.tokenizer

    def request(length: int, seed: int, new: int) -> GenerationRequest:
        return GenerationRequest(prompt_near(tok, length), seed=seed, max_new_tokens=new, min_new_tokens=new, stop=())

    async def run() -> dict:
        single = Generator(loaded, max_batch_size=1)
        try:
            prefill = await single.generate(request(PROMPT_TOKENS, 0, 1))
            one = await single.generate(request(CHAT_PROMPT, 1, NEW_TOKENS))
            rss_single = status_gib("VmRSS")
        finally:
            await single.close()
        del single
        many = Generator(loaded, max_batch_size=4)
        try:
            results = await asyncio.gather(*(many.generate(request(CHAT_PROMPT, s, NEW_TOKENS)) for s in range(4)))
        finally:
            await many.close()
        decode_wall = max(r.total_s for r in results) - max(r.ttft_s for r in results)
        return {
            "prompt_tps": prefill.prompt_tokens / prefill.ttft_s,
            "single_tps": (one.new_tokens - 1) / (one.total_s - one.ttft_s),
            "users4_tps": sum(r.new_tokens - 1 for r in results) / decode_wall,
            "rss_single_gib": rss_single,
        }

    numbers = asyncio.run(run())
    return {**numbers, "load_s": load_s, "lora_delta": lora_delta, "peak_gib": status_gib("VmHWM"),
            "merged": kind == "bf16"}


def followup(kind: str, workdir: Path, adapter: Path) -> dict:
    """Time to first token: a first turn of 60 tokens, then a follow-up (300-token history + a 20-token question)
    with the history's K/V kept, and the same follow-up with nothing kept (a whole prefill)."""
    import asyncio

    from bench.real_shape_cpu import prompt_near
    from model.loading import load_model
    from model.serving.generator import Generator
    from model.types import GenerationRequest

    loaded = load_model(str(workdir / kind), adapter=adapter, quantization=kind, device="cpu")
    tok = loaded.tokenizer
    history, question = prompt_near(tok, 300), prompt_near(tok, 20)

    def request(text: str) -> GenerationRequest:
        return GenerationRequest(text, seed=0, max_new_tokens=1, stop=())

    async def run() -> dict:
        reusing = Generator(loaded, max_batch_size=1, prefix_cache_mib=1024)
        try:
            first = await reusing.generate(request(prompt_near(tok, CHAT_PROMPT)))
            await reusing.generate(request(history))  # turn 1: its K/V are kept
            before = reusing._batch.prefix.reused_tokens
            again = await reusing.generate(request(history + "\n" + question))
            reused = reusing._batch.prefix.reused_tokens - before
        finally:
            await reusing.close()
        plain = Generator(loaded, max_batch_size=1)
        try:
            whole = await plain.generate(request(history + "\n" + question))
        finally:
            await plain.close()
        return {"first_60_s": first.ttft_s, "followup_reused_s": again.ttft_s, "followup_whole_s": whole.ttft_s,
                "followup_tokens": again.prompt_tokens, "reused_tokens": reused}

    return asyncio.run(run())


def child_main(args: argparse.Namespace) -> int:
    quiet_benchmark()
    workdir, base = args.workdir, args.base
    adapter = workdir / "lora-r16"
    if args.child == "followup":
        result = followup("int4", workdir, adapter)
    elif args.child == "llama.cpp":
        from bench.cpu_bakeoff_llama import llama_cpp

        result = llama_cpp(base, workdir, adapter)
    else:
        result = ours(args.child, base, workdir, adapter)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ----- the parent: every path in turn -----

def child_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if args.llama_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(args.llama_path)]))
    return env


def prepare_llama(args: argparse.Namespace) -> float | None:
    """Write the GGUFs (in their own process: the writer holds the quantised model in memory)."""
    script = Path(__file__).with_name("cpu_bakeoff_llama.py")
    done = subprocess.run([sys.executable, str(script), str(args.base), str(args.workdir),
                           str(args.workdir / "lora-r16")], capture_output=True, text=True, env=child_env(args))
    if done.returncode != 0:
        print("llama.cpp preparation failed:", done.stderr.strip().splitlines()[-1:], flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["prepare_s"] or None


def run_path(path: str, args: argparse.Namespace) -> dict:
    env = child_env(args)
    done = subprocess.run([sys.executable, __file__, "--child", path, "--workdir", str(args.workdir), "--base",
                           str(args.base)], capture_output=True, text=True, env=env)
    line = next((x for x in reversed(done.stdout.splitlines()) if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": " / ".join(tail)[-300:]}
    return json.loads(line.removeprefix("RESULT "))


def row(path: str, result: dict, prepared: dict[str, float | None]) -> list[object]:
    if "error" in result or "skipped" in result:
        return [path, result.get("skipped") or f"failed: {result['error']}", "", "", "", "", "", ""]
    prep = prepared.get(path)
    return [path, f"{result['load_s']:.0f} s" + (f" (+{prep:.0f} s offline)" if prep else ""),
            f"{result['rss_single_gib']:.1f} / {result['peak_gib']:.1f} GiB", f"{result['single_tps']:.2f}",
            f"{result['users4_tps']:.2f}", f"{result['prompt_tps']:.1f}",
            (f"yes (max Δlogprob {result['lora_delta']:.2f})" if path == "llama.cpp" else
             f"yes (max Δlogit {result['lora_delta']:.2f})") if result["lora_delta"] > 0 else "NO",
            result.get("note", "merged" if result.get("merged") else "unmerged")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mechuri-bakeoff"))
    parser.add_argument("--base", type=Path, default=Path("/tmp/mechuri-real-shape/base"),
                        help="bench/real_shape_cpu.py's random 5.8B checkpoint (built when missing)")
    parser.add_argument("--llama-path", type=Path, default=None, help="a folder holding xllamacpp and gguf")
    parser.add_argument("--append-docs", action="store_true")
    parser.add_argument("--followup", action="store_true",
                        help="only the follow-up-turn measurement (int4, prefix reuse) and its docs section")
    parser.add_argument("--child", choices=(*PATHS, "followup"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    quiet_benchmark()
    if not (args.base / "config.json").exists():
        from bench.real_shape_cpu import build

        build(args.base.parent)
    args.workdir.mkdir(parents=True, exist_ok=True)
    write_lora(args.base, args.workdir / "lora-r16")
    if args.followup:
        return followup_main(args)
    paths = [p for p in args.paths.split(",") if p]
    prepared = {kind: prepare(args.base, args.workdir, kind) for kind in ("int8", "int4") if kind in paths}
    if "llama.cpp" in paths:
        prepared["llama.cpp"] = prepare_llama(args)
    load = os.getloadavg()
    rows = []
    for path in paths:
        result = run_path(path, args)
        print(path, result, flush=True)
        rows.append(row(path, result, prepared))
    table = markdown_table(["path", "load", "resident (1 user) / peak", "single stream tok/s", "4 users tok/s (total)",
                            "prompt tok/s", "LoRA applied", "adapter"], rows)
    body = (f"`{command_line()}` · {today()} · {cpu_line()} · {cpu_model()} · load average before the run "
            f"{load[0]:.1f} / {load[1]:.1f} (1 / 5 min) · {versions()}\n\nRandom weights at the exact Polyglot-ko-5.8B shape, a "
            f"random rank-{RANK} LoRA on all four modules, each path in its own process, run one after another. "
            f"Decode: {NEW_TOKENS} forced new tokens after a {CHAT_PROMPT}-token prompt (4 users: 4 such requests "
            f"at once); prompt: {PROMPT_TOKENS} tokens. Resident (1 user): after the single-stream run, with one "
            "2,048-position KV slot (0.94 GB in bf16); the peak includes load and the 4-user run's four slots.\n\n" + table)
    print(body)
    if args.append_docs:
        append_docs(SECTION, body)
    return 0


def followup_main(args: argparse.Namespace) -> int:
    prepare(args.base, args.workdir, "int4")
    load = os.getloadavg()
    r = run_path("followup", args)
    print(r, flush=True)
    if "error" in r:
        return 1
    body = (f"`{command_line()}` · {today()} · {cpu_line()} · load average before the run {load[0]:.1f} / "
            f"{load[1]:.1f} · {versions()}\n\nint4 path, rank-{RANK} LoRA, one slot. Time to first token:\n\n"
            + markdown_table(["prompt", "prompt tokens", "time to first token"], [
                ["first turn", CHAT_PROMPT, f"{r['first_60_s']:.1f} s"],
                ["follow-up, history kept", r["followup_tokens"], f"{r['followup_reused_s']:.1f} s "
                 f"({r['reused_tokens']} tokens reused)"],
                ["follow-up, nothing kept", r["followup_tokens"], f"{r['followup_whole_s']:.1f} s"]]))
    print(body)
    if args.append_docs:
        append_docs(SECTION_FOLLOWUP, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
