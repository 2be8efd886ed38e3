"""Training throughput: the 2024 reference recipe against `mechuri train`, same machine, same data, same run.

The reference (the common KoAlpaca QLoRA notebook the student report followed): HF Trainer + peft, bitsandbytes 4-bit
NF4, LoRA r 8 / alpha 32 / dropout 0.05 on query_key_value, `model.gradient_checkpointing_enable()` then
`prepare_model_for_kbit_training(model)` (which turns gradient checkpointing on by default), `pad_token = eos_token`,
`DataCollatorForLanguageModeling(mlm=False)`, batches drawn at random, fp16 autocast on a GPU.

Ours (`model.training.sft.train`): the same 4-bit base and the same LoRA size, plus answer-only labels with a distinct pad
(a quality fix, not a speed one), gradient checkpointing off (recomputing activations costs ~a third of the step;
QLoRA at batch 8 fits an 80 GB GPU without it), batches grouped by length (less compute spent on padding), bf16
autocast on a GPU. The ablation rows switch one of those back, so each one's share is visible.

Each recipe runs in its own process, so peak memory belongs to it alone (CUDA max allocated on a GPU; the process's
peak RSS on CPU), and recipes run interleaved (A B C, C B A, …) so a machine getting busier hits all alike. Tokens/s
counts real (non-pad) tokens, prompt included, after the first tenth of the steps.

    python bench/train_throughput.py                  # CPU, tiny model (always)
    python bench/train_throughput.py --gpu            # one CUDA GPU, Polyglot-ko-5.8B shape, random weights
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DOCS_FILE,
    DOCS_TITLE,
    command_line,
    markdown_table,
    polyglot_config,
    replace_section,
    today,
    versions,
)

HEADING = "## Training throughput"
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "mechuri_starter.jsonl"
# name → (description, settings). "reference" is the 2024 recipe; the rest go through model.training.sft.train.
RECIPES: dict[str, tuple[str, dict]] = {
    "reference": ("reference: pad=eos, LM collator, grad ckpt, random batches", {}),
    "ours": ("ours: answer-only + EOS, no grad ckpt, length-grouped", {}),
    "ours+gc": ("ours + gradient checkpointing", {"gradient_checkpointing": True}),
    "ours-grouping": ("ours, random batches (no length grouping)", {"group_by_length": False}),
    "ours-none": ("ours, no quantization (fp32 on CPU, bf16 on GPU)", {"quantization": "none"}),
}
CPU_RECIPES = ("reference", "ours", "ours+gc", "ours-grouping", "ours-none")
GPU_RECIPES = ("reference", "ours", "ours+gc", "ours-grouping")


def build_base(workdir: Path, gpu: bool) -> Path:
    """A save_pretrained folder: the tiny model on CPU; on a GPU the 5.8B shape with random bf16 weights and the tiny
    Korean tokenizer (its ids fit the 30,080-row embedding; Korean tokenizes to similar lengths)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from model.demo.tiny import build_tiny_model, korean_corpus, train_tokenizer

    base = workdir / ("polyglot-5.8b-random" if gpu else "tiny")
    if (base / "config.json").exists():
        return base
    started = time.perf_counter()
    if not gpu:
        return build_tiny_model(base, train_steps=0)
    torch.manual_seed(0)
    tokenizer = train_tokenizer(korean_corpus())
    with torch.device("cuda"):  # a 5.8B init on the CPU takes minutes; on the GPU, seconds
        model = GPTNeoXForCausalLM._from_config(polyglot_config(pad_token_id=1), dtype=torch.bfloat16)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    del model
    torch.cuda.empty_cache()
    print(f"built a random Polyglot-ko-5.8B-shaped base in {time.perf_counter() - started:.0f} s", flush=True)
    return base


# ----- one recipe, in a child process -----

def run_reference(base: str, data: str, out: Path, steps: int, batch_size: int) -> dict:
    """The 2024 recipe, as the notebook wrote it (prompt without the 맥락 block, EOS as text)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, TrainingArguments

    from model.loading import quantization_config
    from model.training.core import measured_trainer_class, peak_memory, reset_peak_memory

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    reset_peak_memory(device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quantization_config("4bit", device),
                                                 device_map={"": device})
    rows = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [f"### 질문: {r['instruction']}\n\n### 답변: {r['output']}<|endoftext|>" for r in rows]
    features = [dict(tokenizer(text)) for text in texts]
    model.gradient_checkpointing_enable()
    model = prepare_model_for_kbit_training(model)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["query_key_value"],
                                             lora_dropout=0.05, bias="none", task_type="CAUSAL_LM"))
    tokenizer.pad_token = tokenizer.eos_token
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch_size, gradient_accumulation_steps=1, max_steps=steps,
        learning_rate=1e-4, fp16=cuda, logging_steps=10, optim="paged_adamw_8bit" if cuda else "adamw_torch",
        save_strategy="no", report_to="none", use_cpu=not cuda, disable_tqdm=True, seed=42,
    )
    trainer = measured_trainer_class()(model=model, train_dataset=features, args=args,
                                       data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    model.config.use_cache = False
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    memory, kind = peak_memory(device)
    return {"tokens_per_s_steady": trainer.steady_tokens_per_s(), "tokens_per_s": trainer.real_tokens / seconds,
            "samples_per_s": trainer.samples / seconds, "padding_share": 1 - trainer.real_tokens / trainer.padded_tokens,
            "peak_memory_bytes": memory, "peak_memory_kind": kind, "train_loss_mean": output.training_loss,
            "train_time_s": seconds, "steps": trainer.state.global_step}


def run_ours(base: str, data: str, out: Path, steps: int, batch_size: int, settings: dict) -> dict:
    from model.training.config import TrainConfig
    from model.training.sft import train

    config = TrainConfig(data=str(data), base=str(base), out=str(out), max_steps=steps, batch_size=batch_size,
                         quantization=settings.get("quantization", "4bit"), lora_targets="qkv",
                         gradient_checkpointing=settings.get("gradient_checkpointing", False),
                         group_by_length=settings.get("group_by_length", True), save_steps=10**9, progress=False,
                         overwrite=True)
    m = train(config).metrics
    return {k: m[k] for k in ("tokens_per_s_steady", "tokens_per_s", "samples_per_s", "padding_share",
                              "peak_memory_bytes", "peak_memory_kind", "train_loss_mean", "train_time_s")} | {
        "steps": m["global_step"]}


def child(args: argparse.Namespace) -> int:
    import torch

    from model.loading import quiet_transformers

    quiet_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix=f"bench-{args.child}-"))
    if args.child == "reference":
        result = run_reference(args.base, args.data, out, args.steps, args.batch_size)
    else:
        result = run_ours(args.base, args.data, out, args.steps, args.batch_size, RECIPES[args.child][1])
    Path(args.child_json).write_text(json.dumps(result))
    return 0


# ----- the parent: runs, table, docs -----

def run_child(recipe: str, base: Path, args: argparse.Namespace, workdir: Path) -> dict:
    result_file = workdir / f"{recipe}.json"
    cmd = [sys.executable, __file__, "--child", recipe, "--child-json", str(result_file), "--base", str(base),
           "--data", str(args.data), "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"recipe {recipe} failed:\n{proc.stderr[-4000:]}")
    return json.loads(result_file.read_text())


def table(results: dict[str, list[dict]], gpu: bool) -> str:
    ref = statistics.median(r["tokens_per_s_steady"] for r in results["reference"])
    ref_mem = statistics.median(r["peak_memory_bytes"] for r in results["reference"])
    rows = []
    for name, runs in results.items():
        tps = statistics.median(r["tokens_per_s_steady"] for r in runs)
        mem = statistics.median(r["peak_memory_bytes"] for r in runs)
        spread = f"{min(r['tokens_per_s_steady'] for r in runs):,.0f}–{max(r['tokens_per_s_steady'] for r in runs):,.0f}"
        rows.append([RECIPES[name][0], f"{tps:,.0f}", spread, f"{tps / ref:.2f}×",
                     f"{statistics.median(r['samples_per_s'] for r in runs):.2f}",
                     f"{statistics.median(r['padding_share'] for r in runs):.0%}",
                     f"{mem / 2**20:,.0f} MiB", f"{mem / ref_mem:.2f}×"])
    headers = ["recipe", "tokens/s (median)", "range", "vs reference", "samples/s", "padding", "peak memory",
               "memory vs ref"]
    kind = results["reference"][0]["peak_memory_kind"]
    note = "" if gpu else (" With the tiny model that is almost all torch, transformers and bitsandbytes "
                           "themselves, so a few % either way is noise.")
    return markdown_table(headers, rows) + f"\n\nPeak memory: {kind}.{note}"


def write_docs(subsection: str, body: str) -> Path:
    """Replace our `### ` subsection inside `## Training throughput`, keeping the other (CPU or GPU) as it is."""
    document = DOCS_FILE.read_text(encoding="utf-8") if DOCS_FILE.exists() else f"{DOCS_TITLE}\n"
    lines = document.splitlines()
    start = next((i for i, line in enumerate(lines) if line == HEADING), None)
    current = ""
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        current = "\n".join(lines[start + 1:end])
    parts = {p.split("\n", 1)[0]: "### " + p.strip() for p in current.split("\n### ")[1:]}
    intro = current.split("\n### ")[0].strip() or INTRO
    parts[subsection] = f"### {subsection}\n\n{body.strip()}"
    order = [CPU_TITLE, GPU_TITLE] + [k for k in parts if k not in (CPU_TITLE, GPU_TITLE)]
    section = "\n\n".join([intro, *(parts[k] for k in order if k in parts)])
    DOCS_FILE.parent.mkdir(parents=True, exist_ok=True)
    DOCS_FILE.write_text(replace_section(document, HEADING, section), encoding="utf-8")
    return DOCS_FILE


CPU_TITLE = "CPU, tiny model"
GPU_TITLE = "GPU, Polyglot-ko-5.8B shape (random weights)"
INTRO = ("`bench/train_throughput.py`: the 2024 reference QLoRA recipe against `mechuri train`, same machine, same "
         "data (`data/mechuri_starter.jsonl`), same run; each recipe in its own process, interleaved. Tokens/s counts "
         "real (non-pad) tokens, prompt included, after the first tenth of the steps. Both recipes use 4-bit NF4 "
         "(double quantization, bf16 compute) and LoRA r 8 on query_key_value, batch 8, lr 1e-4.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="one CUDA GPU at the real Polyglot-ko-5.8B shape")
    parser.add_argument("--steps", type=int, default=None, help="steps per recipe (default 40 on CPU, 30 on GPU)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=None, help="runs per recipe (default 3 on CPU, 2 on GPU)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in each recipe's process")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the base model here and reuse it")
    parser.add_argument("--no-docs", action="store_true", help="print the table only")
    parser.add_argument("--child", choices=list(RECIPES), help=argparse.SUPPRESS)
    parser.add_argument("--child-json", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    import torch

    if args.gpu and not torch.cuda.is_available():
        print("--gpu needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False). Run it on a GPU "
              "machine with a CUDA build of torch, or drop --gpu for the CPU run on the tiny model.", file=sys.stderr)
        return 2
    if not args.data.exists():
        print(f"data file {args.data} does not exist: pass --data FILE (Alpaca JSONL)", file=sys.stderr)
        return 2
    args.steps = args.steps or (30 if args.gpu else 40)
    repeats = args.repeats or (2 if args.gpu else 3)
    recipes = GPU_RECIPES if args.gpu else CPU_RECIPES
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="train-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    base = build_base(workdir, args.gpu)
    results: dict[str, list[dict]] = {name: [] for name in recipes}
    for rep in range(repeats):
        for name in recipes if rep % 2 == 0 else tuple(reversed(recipes)):
            result = run_child(name, base, args, workdir)
            results[name].append(result)
            print(f"round {rep + 1}/{repeats} · {name:<14} {result['tokens_per_s_steady']:>10,.0f} tok/s · "
                  f"{result['peak_memory_bytes'] / 2**20:,.0f} MiB · padding {result['padding_share']:.0%} · "
                  f"loss {result['train_loss_mean']:.3f}", flush=True)
    text = table(results, args.gpu)
    print(text)
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    if args.no_docs:
        return 0
    if args.gpu:
        machine = f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    else:
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
        machine = (f"2-core CPU dev box, no GPU; torch threads {args.threads or torch.get_num_threads()}; load "
                   f"average at the end {load} (other jobs were running)")
    body = (f"- Command: `{command_line()}`\n- Machine: {machine}\n- Versions: {versions()}\n- Date: {today()}\n"
            f"- {args.steps} steps × batch {args.batch_size} per run, {repeats} runs per recipe\n\n{text}")
    print(f"wrote {write_docs(GPU_TITLE if args.gpu else CPU_TITLE, body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
