"""Generation speed at the real KoAlpaca-Polyglot-ko-5.8B shape on one GPU, with random weights.

    python bench/gpu_generate.py [--append-docs] [--configs a,b,c4,c8,cnone,d] [--reps 3] [--workdir DIR]
                                 [--jsonl FILE] [--report-only]
    python bench/gpu_generate.py --tiny        # the same script on CPU with a tiny model: CI's smoke test

A GPT-NeoX with Polyglot-ko-5.8B's exact config (28 layers, hidden 4096, 16 heads, FFN 16384, rotary_pct 0.25,
vocabulary 30,080, 2,048 positions, parallel residual, untied embeddings) is built directly in bf16 on the GPU, saved
once with the tiny Korean tokenizer and a random LoRA adapter (r 8 on query_key_value), and loaded back through
`model.loading.load_model`, the bot's path. Prompts of 32, 300 and 1,000 tokens, 200 new tokens each
(min_new_tokens = 200, no stop strings), KoAlpaca's sampling (temperature 0.7, top_p 0.9, repetition penalty 1.1).

Configurations, one after another in this process on this GPU:
  a      the reference (the student's method): HF `generate`, bnb NF4 4-bit, LoRA unmerged
  b      HF `generate`, bf16, LoRA merged (`merge_and_unload`)
  c4 c8 cnone   our Generator in each quantization mode (it merges the adapter only when unquantized)
  d      1, 8 and 32 requests at once through our Generator (bf16, merged; 300-token prompts)
Every row is also given as a ratio to (a), and as % of the memory-bandwidth limit: a measured device-to-device copy
rate over the weight bytes one token reads (every parameter but the input embedding, of which one row is read).

`--jsonl FILE` appends each row as it is measured, so a run cut short keeps what it did and a run can be split
(`--configs a,cnone,b` then `--configs d,c4,c8`, one `--workdir` so the checkpoint is built once);
`--report-only --jsonl FILE --append-docs` renders the tables from the file.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    KOALPACA_SAMPLING,
    Timing,
    append_docs,
    command_line,
    device_bandwidth,
    free_memory,
    hf_generate,
    markdown_table,
    median,
    polyglot_config,
    prompt_of_length,
    quiet_benchmark,
    today,
    versions,
    weight_bytes,
)

SECTION = "## GPU generation"
CONFIGS = ("a", "b", "c4", "c8", "cnone", "d")  # the tables' order
RUN_ORDER = ("a", "cnone", "b", "d", "c4", "c8")  # what the targets need first, the slow 8-bit path last
LABELS = {"a": "a: HF generate, {mode} (reference)", "b": "b: HF generate, {mode}", "c4": "c: Generator, {mode}",
          "c8": "c: Generator, {mode}", "cnone": "c: Generator, {mode}", "d": "d: Generator, {mode}"}
MODES = {"4bit": "4-bit NF4, LoRA unmerged", "8bit": "8-bit, LoRA unmerged", "none": "{dtype}, LoRA merged"}
QUANTIZATION = {"a": "4bit", "b": "none", "c4": "4bit", "c8": "8bit", "cnone": "none"}
LORA = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["query_key_value"]}
SINGLE_HEADERS = ["configuration", "prompt", "TTFT", "decode tok/s", "end-to-end", "peak memory", "decode vs a",
                  "end-to-end vs a", "% of bandwidth limit"]
CROWD_HEADERS = ["configuration", "users at once", "max batch", "aggregate tok/s", "vs 1 user", "vs a (1 stream)",
                 "% of single-stream bandwidth limit", "median TTFT", "peak memory"]


@dataclass(frozen=True)
class Plan:
    prompt_lengths: tuple[int, ...]
    new_tokens: int
    users: tuple[int, ...]
    users_prompt: int
    reps: int


FULL = Plan(prompt_lengths=(32, 300, 1000), new_tokens=200, users=(1, 8, 32), users_prompt=300, reps=3)
TINY = Plan(prompt_lengths=(8, 32, 64), new_tokens=16, users=(1, 8, 32), users_prompt=32, reps=2)


@dataclass
class Row:
    config: str
    label: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    e2e_s: float
    decode_tps: float  # per stream
    peak_gib: float | None
    weight_bytes: int
    bandwidth: float  # bytes/s, read + written, of a large device-to-device copy
    users: int = 1
    max_batch: int | None = None
    aggregate_tps: float | None = None
    extra: dict = field(default_factory=dict)


def build_checkpoint(workdir: Path, *, tiny: bool, device: str) -> tuple[Path, Path]:
    """A random-weight base (bf16 on a GPU) with the tiny Korean tokenizer, and a random LoRA adapter beside it.
    Reused when `workdir` already holds one of the same kind."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPTNeoXForCausalLM

    from model.demo.tiny import korean_corpus, tiny_config, train_tokenizer

    base, adapter, stamp = workdir / "base", workdir / "adapter", workdir / "built.json"
    kind = "tiny" if tiny else "polyglot-ko-5.8b"
    if stamp.exists() and json.loads(stamp.read_text()).get("kind") == kind:
        return base, adapter
    started = time.perf_counter()
    torch.manual_seed(0)
    tokenizer = train_tokenizer(korean_corpus())
    config = tiny_config(-(-len(tokenizer) // 64) * 64) if tiny else polyglot_config()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):  # initialise on the GPU: a 5.8B fp32 init on the CPU takes 23 GB and minutes
        model = GPTNeoXForCausalLM._from_config(config, dtype=dtype).eval()
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; a non-zero B makes merging really change the weights
            torch.nn.init.normal_(param, std=1e-3)
    peft_model.save_pretrained(adapter)
    del model, peft_model
    free_memory()
    stamp.write_text(json.dumps({"kind": kind}))
    print(f"built the {kind} checkpoint in {time.perf_counter() - started:.0f} s at {workdir}", flush=True)
    return base, adapter


def request(text: str, new_tokens: int, seed: int):
    from model.types import GenerationRequest

    return GenerationRequest(text, seed=seed, max_new_tokens=new_tokens, min_new_tokens=new_tokens, stop=(),
                             **KOALPACA_SAMPLING)


async def crowd(generator, text: str, new_tokens: int, users: int, seed: int) -> tuple[float, int, float]:
    """(seconds, new tokens, median time to first token) for `users` requests sent at once."""
    started = time.perf_counter()
    results = await asyncio.gather(*(generator.generate(request(text, new_tokens, seed * 100 + u))
                                     for u in range(users)))
    return time.perf_counter() - started, sum(r.new_tokens for r in results), median([r.ttft_s for r in results])


class Runner:
    """Loads each configuration in turn through `load_model`, measures it, and frees it before the next."""

    def __init__(self, base: Path, adapter: Path, plan: Plan, device: str, bandwidth: float, jsonl: Path | None,
                 extra: dict):
        self.base, self.adapter, self.plan, self.device = base, adapter, plan, device
        self.bandwidth, self.jsonl, self.extra = bandwidth, jsonl, extra
        self.rows: list[Row] = []
        self.loop = asyncio.new_event_loop()

    def peak(self, reset: bool = False) -> float | None:
        import torch

        if not self.device.startswith("cuda"):
            return None
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return torch.cuda.max_memory_allocated() / 2**30

    def record(self, row: Row) -> None:
        row.extra = self.extra
        self.rows.append(row)
        rate = f"aggregate {row.aggregate_tps:.1f}" if row.aggregate_tps else f"decode {row.decode_tps:.1f}"
        print(f"  {row.label}, prompt {row.prompt_tokens}, users {row.users}: TTFT {1000 * row.ttft_s:.1f} ms, "
              f"{rate} tok/s", flush=True)
        if self.jsonl:
            with self.jsonl.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")

    def run(self, config: str, d_quantization: str) -> None:
        from model.loading import load_model
        from model.serving.generator import Generator

        print(f"[{config}] loading", flush=True)
        quantization = QUANTIZATION.get(config, d_quantization)
        loaded = load_model(str(self.base), adapter=self.adapter, quantization=quantization, device=self.device)
        label = LABELS[config].format(mode=MODES[quantization].format(dtype=loaded.dtype))
        generators: list = []
        try:
            if config in ("a", "b"):
                model = loaded.model if config == "a" else loaded.model.merge_and_unload()
                self.single_stream(config, label, model, loaded, lambda text, n, seed: hf_generate(
                    model, loaded, text, n, seed))
            elif config != "d":
                generators.append(Generator(loaded))
                self.single_stream(config, label, loaded.model, loaded, lambda text, n, seed: self.through(
                    generators[0], text, n, seed))
            else:
                default_batch = Generator.__init__.__kwdefaults__["max_batch_size"]
                # Every crowd at the Generator's default batch limit, and the largest crowd in one batch as well.
                for max_batch in dict.fromkeys((default_batch, max(self.plan.users))):
                    generators.append(Generator(loaded, max_batch_size=max_batch))
                    users = self.plan.users if max_batch == default_batch else (max_batch,)
                    self.crowds(label, loaded, generators[-1], max_batch, users)
        finally:
            for generator in generators:
                self.loop.run_until_complete(generator.close())

    def through(self, generator, text: str, new_tokens: int, seed: int) -> Timing:
        result = self.loop.run_until_complete(generator.generate(request(text, new_tokens, seed)))
        return Timing(result.ttft_s, result.total_s, result.new_tokens)

    def single_stream(self, config: str, label: str, model, loaded, timed) -> None:
        """Median TTFT, decode rate and latency per prompt length; `timed(text, new_tokens, seed)` → Timing."""
        plan, wbytes = self.plan, weight_bytes(model)
        timed(prompt_of_length(loaded.tokenizer, plan.prompt_lengths[0]), min(8, plan.new_tokens), 0)  # warm-up
        for length in plan.prompt_lengths:
            text = prompt_of_length(loaded.tokenizer, length)
            self.peak(reset=True)
            runs = [timed(text, plan.new_tokens, seed) for seed in range(plan.reps)]
            if any(r.new_tokens != plan.new_tokens for r in runs):
                raise RuntimeError(f"{label} made {[r.new_tokens for r in runs]} tokens, not {plan.new_tokens}")
            self.record(Row(config, label, length, plan.new_tokens, median([r.ttft_s for r in runs]),
                            median([r.e2e_s for r in runs]), median([r.decode_tps for r in runs]), self.peak(),
                            wbytes, self.bandwidth))

    def crowds(self, label: str, loaded, generator, max_batch: int, user_counts: tuple[int, ...]) -> None:
        plan, wbytes = self.plan, weight_bytes(loaded.model)
        text = prompt_of_length(loaded.tokenizer, plan.users_prompt)
        self.loop.run_until_complete(crowd(generator, text, min(8, plan.new_tokens), 2, 0))  # warm-up
        for users in user_counts:
            self.peak(reset=True)
            runs = [self.loop.run_until_complete(crowd(generator, text, plan.new_tokens, users, rep))
                    for rep in range(plan.reps)]
            rate = median([tokens / seconds for seconds, tokens, _ in runs])
            self.record(Row("d", label, plan.users_prompt, plan.new_tokens, median([t for _, _, t in runs]),
                            median([s for s, _, _ in runs]), rate / users, self.peak(), wbytes, self.bandwidth,
                            users=users, max_batch=max_batch, aggregate_tps=rate))


def render(rows: list[Row], plan: Plan, tiny: bool = False) -> str:
    """Both tables and the targets, with ratios to (a) at the same prompt length."""
    rows = sorted(rows, key=lambda r: CONFIGS.index(r.config))
    ref = {r.prompt_tokens: r for r in rows if r.config == "a"}

    def limit(r: Row) -> float:  # tokens/s if a step only had to stream the weights once at the copy bandwidth
        return r.bandwidth / r.weight_bytes

    def ratio(value: float, base: float | None) -> str:
        return f"{value / base:.2f}×" if base else "n/a"

    def gib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} GiB"

    single = [[r.label, r.prompt_tokens, f"{1000 * r.ttft_s:.1f} ms", f"{r.decode_tps:.1f}", f"{r.e2e_s:.2f} s",
               gib(r.peak_gib), ratio(r.decode_tps, getattr(ref.get(r.prompt_tokens), "decode_tps", None)),
               ratio(1 / r.e2e_s, 1 / ref[r.prompt_tokens].e2e_s if r.prompt_tokens in ref else None),
               f"{100 * r.decode_tps / limit(r):.0f} %"] for r in rows if r.config != "d"]
    crowds = [r for r in rows if r.config == "d"]
    one = next((r.aggregate_tps for r in crowds if r.users == 1), None)
    ref_tps = getattr(ref.get(plan.users_prompt), "decode_tps", None)
    crowd_rows = [[r.label, r.users, r.max_batch, f"{r.aggregate_tps:.1f}", ratio(r.aggregate_tps, one),
                   ratio(r.aggregate_tps, ref_tps), f"{100 * r.aggregate_tps / limit(r):.0f} %",
                   f"{1000 * r.ttft_s:.0f} ms", gib(r.peak_gib)] for r in crowds]
    checks = []
    ours = {r.prompt_tokens: r for r in rows if r.config == "cnone"}
    if (mid := plan.prompt_lengths[1]) in ours:
        r = ours[mid]
        checks += [f"single-stream decode at {100 * r.decode_tps / limit(r):.0f} % of the bandwidth limit (≥ 70 %)",
                   f"TTFT {1000 * r.ttft_s:.0f} ms for a {mid}-token prompt (≤ 100 ms)"]
        if mid in ref:
            checks.append(f"{r.decode_tps / ref[mid].decode_tps:.2f}× the reference's decode tok/s (≥ 5×)")
    if crowds and one:
        most = max(crowds, key=lambda r: (r.users, r.aggregate_tps))
        checks.append(f"{most.users} users at once, batch ≤ {most.max_batch}: {most.aggregate_tps / one:.1f}× "
                      "single-stream (≥ 10×)")
    copy = f"{rows[0].bandwidth / 1e9:.0f} GB/s" if rows else "n/a"
    notes = (f"Copy bandwidth {copy} (read + written); bandwidth limit = that ÷ weight bytes per token. The KV cache a step also reads is not counted, so long prompts sit "
             "further below the limit. TTFT and end-to-end include tokenizing; the Generator's also its queue and "
             "2 ms batch window.")
    if not tiny:
        notes += (" The tokenizer is the tiny Korean one (3.7k tokens) under the 30,080 embedding, so most sampled "
                  "ids decode to nothing and detokenizing costs less than it would with Polyglot's.")
    return "\n\n".join([markdown_table(SINGLE_HEADERS, single), markdown_table(CROWD_HEADERS, crowd_rows),
                        "Targets (c, merged, unquantized): " + "; ".join(checks) + "." if checks else "", notes])


GPU_HOWTO = """To fill this in on one GPU (the device tool's H100: its python3 has torch, transformers and peft but no
bitsandbytes, so carry the wheel; /.whl/ is git-ignored):

```
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
    --platform manylinux_2_24_x86_64 -d .whl bitsandbytes==0.50.2                      # here, once
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
PYTHONUNBUFFERED=1 python3 bench/gpu_generate.py --workdir /tmp/mechuri-gpu --jsonl $OUT/gpu.jsonl  # there
.venv/bin/python bench/gpu_generate.py --report-only --jsonl PATH/TO/gpu.jsonl --append-docs       # here
```

The whole run takes about 10 minutes (building and saving the 11.8 GB checkpoint, five loads, the slow 8-bit path);
where one command may run 10 minutes at most, split it: `--configs a,cnone,b` and then `--configs d,c4,c8`, both with
the same `--jsonl` (the second rebuilds the checkpoint if the machine was given back in between). On a GPU machine
with the project's own environment: `python bench/gpu_generate.py --append-docs`."""


def report(rows: list[Row], plan: Plan, args: argparse.Namespace) -> int:
    extra = rows[0].extra if rows else {}
    header = (f"Command: `{extra.get('command', command_line())}`  \nMachine: {extra.get('machine', 'unknown')}  \n"
              f"Versions: {extra.get('versions') or versions()}  \nDate: {extra.get('date') or today()}\n\n"
              f"Random weights; prompts of {', '.join(map(str, plan.prompt_lengths))} tokens, {plan.new_tokens} new "
              "tokens (min_new_tokens = max_new_tokens), temperature 0.7, top_p 0.9, repetition penalty 1.1; "
              f"median of {plan.reps} runs after a warm-up.")
    result = header + "\n\n" + render(rows, plan, args.tiny)
    print(result, flush=True)
    if args.append_docs:
        if args.tiny:  # no GPU here: the section says so, and shows the smoke run only as a sample of the format
            def label(c: str) -> str:
                return LABELS[c].format(mode=MODES[QUANTIZATION.get(c, "none")].format(dtype="bfloat16"))

            pending = markdown_table(SINGLE_HEADERS, [[label(c), n, *["pending"] * 7] for c in CONFIGS[:-1]
                                                      for n in FULL.prompt_lengths]) + "\n\n" + markdown_table(
                CROWD_HEADERS, [[label("d"), n, b, *["pending"] * 6] for n, b in ((1, 16), (8, 16), (32, 16), (32, 32))])
            body = (f"**Pending: no GPU in this session.** The tables below are the shape of the result.\n\n{pending}\n\n"
                    f"{GPU_HOWTO}\n\n### CPU smoke run (`--tiny`), not a GPU measurement\n\n{result}")
        else:
            body = result + "\n\n" + GPU_HOWTO
        print(f"wrote {append_docs(SECTION, body)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with a tiny model (CI)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"a comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--d-quantization", default="none", choices=("4bit", "8bit", "none"),
                        help="quantization for the concurrency rows (d)")
    parser.add_argument("--reps", type=int, help="runs per prompt length (default 3, --tiny 2)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 with --tiny, torch's own on a GPU)")
    parser.add_argument("--workdir", type=Path, help="build the checkpoint here and reuse it (default: a temporary "
                        "folder, removed at the end)")
    parser.add_argument("--jsonl", type=Path, help="append every measured row to this file")
    parser.add_argument("--report-only", action="store_true", help="measure nothing: render the rows in --jsonl")
    parser.add_argument("--append-docs", action="store_true", help=f"write the result into docs/benchmarks.md ({SECTION})")
    args = parser.parse_args()
    plan = TINY if args.tiny else FULL
    if args.reps:
        plan = Plan(plan.prompt_lengths, plan.new_tokens, plan.users, plan.users_prompt, args.reps)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := set(configs) - set(CONFIGS):
        parser.error(f"unknown configurations {sorted(unknown)}: choose from {', '.join(CONFIGS)}")
    if args.report_only:
        if not args.jsonl or not args.jsonl.exists():
            parser.error("--report-only renders the rows of --jsonl FILE: give a file written by a measuring run")
        return report([Row(**json.loads(line)) for line in args.jsonl.read_text().splitlines() if line], plan, args)

    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("bench/gpu_generate.py needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False). "
              "Run it on a GPU machine (docs/benchmarks.md, section 'GPU generation', says how), or run "
              "`python bench/gpu_generate.py --tiny` for the CPU smoke run.", file=sys.stderr)
        return 2
    if {"a", "c4", "c8"} & set(configs) and importlib.util.find_spec("bitsandbytes") is None:
        print("configurations a, c4 and c8 need bitsandbytes, which is not installed: pip install bitsandbytes "
              "(or carry its wheel, see docs/benchmarks.md), or leave them out with --configs b,cnone,d",
              file=sys.stderr)
        return 2
    quiet_benchmark()
    if args.threads or args.tiny:
        # One thread: the tiny model's ops gain nothing from two, and on a shared box OpenMP hand-offs swamp them.
        torch.set_num_threads(args.threads or 1)
    device = "cpu" if args.tiny else "cuda"
    machine = (f"CPU ({torch.get_num_threads()} thread(s)), tiny model: a smoke run, not a GPU measurement"
               if args.tiny else torch.cuda.get_device_name())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mechuri-gpu-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        bandwidth = device_bandwidth(device)
        print(f"{machine}; copy bandwidth {bandwidth / 1e9:.0f} GB/s", flush=True)
        base, adapter = build_checkpoint(workdir, tiny=args.tiny, device=device)
        extra = {"machine": machine, "versions": versions(), "date": today(), "command": command_line()}
        runner = Runner(base, adapter, plan, device, bandwidth, args.jsonl, extra)
        for config in sorted(configs, key=RUN_ORDER.index):
            runner.run(config, args.d_quantization)
            free_memory()
        runner.loop.close()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return report(runner.rows, plan, args)


if __name__ == "__main__":
    sys.exit(main())
