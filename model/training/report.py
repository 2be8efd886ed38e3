"""What `mechuri train` leaves beside the adapter for people, for every method: `metrics.json`, the curves
(`loss.png`), the model card (`README.md`) and the closing summary.

SFT and DPO/KTO share the frame (the files, the load instructions, the hyperparameter and resource rows); what each
method measures differs: losses and perplexity for SFT, preference loss, reward accuracy and margin for DPO/KTO.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from model.training.config import PrefTrainConfig, TrainConfig

QUANTIZATION_NOTES = {"4bit": "4-bit NF4, double quantization, bf16 compute (QLoRA)", "8bit": "8-bit (LLM.int8)",
                      "none": "none (the base in bf16 on a GPU, fp32 on a CPU)"}
FILES = "adapter_model.safetensors, loss.png, metrics.json, README.md, checkpoints/"


def versions(*extra: str) -> dict[str, str]:
    """Python and the libraries that decide the numbers (`extra`: more package names, e.g. "trl")."""
    import importlib

    import peft
    import torch
    import transformers

    found = {"python": sys.version.split()[0], "torch": torch.__version__,
             "transformers": transformers.__version__, "peft": peft.__version__}
    for name in ("bitsandbytes", *extra):
        try:
            found[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return found


def fmt_number(value: float | None, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(value, fmt)


def write_report(out: Path, config: TrainConfig, m: dict[str, Any]) -> str:
    """Write metrics.json, loss.png and README.md into the adapter folder; return the summary to print."""
    (out / "metrics.json").write_text(json.dumps(m, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    if isinstance(config, PrefTrainConfig):
        plot_preferences(m, out / "loss.png", title=f"{out.name} · {m['method'].upper()} · {config.base}")
        (out / "README.md").write_text(preference_card(out, config, m), encoding="utf-8")
        return preference_summary(out, config, m)
    plot_losses(m, out / "loss.png", title=f"{out.name} · {config.base}")
    (out / "README.md").write_text(sft_card(out, config, m), encoding="utf-8")
    return sft_summary(out, config, m)


# ----- the summary printed at the end -----

def _framed(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(["── training done " + "─" * 40, *(f"{k:<{width}}  {v}" for k, v in rows)])


def _run_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    return [("steps", f"{m['global_step']} ({fmt_number(m['epochs'], '.2f')} epochs) in {m['train_time_s']:.1f} s "
                      f"(eval {m['eval_time_s']:.1f} s)"),
            ("train loss", f"{fmt_number(m['train_loss_first'])} → {fmt_number(m['train_loss_final'])} "
                           f"(mean {fmt_number(m['train_loss_mean'])})")]


def sft_summary(out: Path, config: TrainConfig, m: dict[str, Any]) -> str:
    lora, data = m["lora"], m["data"]
    return _framed([
        ("adapter", f"{out}  (base {config.base}, {config.quantization}, {m['device']})"),
        ("LoRA", f"{config.lora_targets}: r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']}, "
                 f"{m['trainable_parameters']:,} trainable parameters"),
        *_run_rows(m),
        ("eval loss", f"{fmt_number(m['eval_loss'])} · perplexity {fmt_number(m['eval_perplexity'], '.2f')}"),
        ("throughput", f"{m['tokens_per_s']:,.0f} tok/s · {m['samples_per_s']:.2f} samples/s · "
                       f"padding {m['padding_share']:.0%}"),
        ("peak memory", f"{m['peak_memory_bytes'] / 2**20:,.0f} MiB, {m['peak_memory_kind']}"),
        ("data", f"{data['examples']} examples; {len(data['bad_lines'])} bad lines skipped, "
                 f"{len(data['too_long'])} too long dropped"),
        ("files", FILES),
    ])


def preference_summary(out: Path, config: PrefTrainConfig, m: dict[str, Any]) -> str:
    data = m["data"]
    return _framed([
        ("adapter", f"{out}  ({m['method'].upper()}, beta {m['beta']}, base {config.base}, {config.quantization}, "
                    f"{m['device']})"),
        ("start / reference", f"{m['init_adapter'] or 'a fresh LoRA'} / {m['reference']}"),
        *_run_rows(m),
        ("train rewards", f"accuracy {fmt_number(m['train_rewards_accuracy'], '.2f')} · margin "
                          f"{fmt_number(m['train_rewards_margin'])}"),
        ("eval", f"loss {fmt_number(m['eval_loss'])} · accuracy {fmt_number(m['eval_rewards_accuracy'], '.2f')} · "
                 f"margin {fmt_number(m['eval_rewards_margin'])}"),
        ("throughput", f"{m['tokens_per_s']:,.0f} tok/s · {m['rows_per_s']:.2f} sequences/s"),
        ("peak memory", f"{m['peak_memory_bytes'] / 2**20:,.0f} MiB, {m['peak_memory_kind']}"),
        ("data", f"{data['examples']} rows; {len(data['bad_lines'])} bad lines skipped, "
                 f"{len(data['too_long'])} too long dropped"),
        ("files", FILES),
    ])


# ----- loss.png (matplotlib's Agg backend: no display needed) -----

def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(m: dict[str, Any], path: Path, title: str) -> None:
    """SFT: train and eval loss by step."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if m["train_loss_curve"]:
        ax.plot(*zip(*m["train_loss_curve"], strict=True), marker=".", label="train loss")
    if m["eval_loss_curve"]:
        ax.plot(*zip(*m["eval_loss_curve"], strict=True), marker="o", label="eval loss (answer tokens)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_preferences(m: dict[str, Any], path: Path, title: str) -> None:
    """DPO/KTO. Left: the preference loss (train, eval). Right: the reward margin and accuracy (train, eval)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for key, label, marker in (("train_loss_curve", "train loss", "."), ("eval_loss_curve", "eval loss", "o")):
        if m[key]:
            left.plot(*zip(*m[key], strict=True), marker=marker, label=label)
    left.set_ylabel(f"{m['method'].upper()} loss")
    for key, label, marker in (("train_margin_curve", "train margin", "."), ("eval_margin_curve", "eval margin", "o")):
        if m[key]:
            right.plot(*zip(*m[key], strict=True), marker=marker, label=label)
    right.set_ylabel("reward margin (chosen − rejected)")
    acc = right.twinx()
    for key, label, style in (("train_accuracy_curve", "train reward accuracy", ":"),
                              ("eval_accuracy_curve", "eval reward accuracy", "--")):
        if m[key]:
            acc.plot(*zip(*m[key], strict=True), linestyle=style, color="grey", label=label)
    acc.set_ylim(-0.05, 1.05)
    acc.set_ylabel("reward accuracy")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    left.legend()
    handles = [h for ax in (right, acc) for h in ax.get_legend_handles_labels()[0]]
    if handles:
        right.legend(handles=handles, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----- the model card (README.md) -----

def _loading(out: Path, config: TrainConfig) -> str:
    return (f"Load it with `PeftModel.from_pretrained(base_model, \"{out}\")`, with `mechuri generate --model "
            f"{config.base} --adapter\n{out} \"질문\"`, or in the running bot with `/reload {out.name}` when it sits in "
            "the adapters folder.")


def _schedule_rows(config: TrainConfig, m: dict[str, Any]) -> str:
    return (f"| batch size × accumulation | {config.batch_size} × {config.grad_accum} |\n"
            f"| learning rate | {config.lr} ({config.lr_scheduler}, {config.warmup_steps} warmup steps) |\n"
            f"| steps | {m['global_step']} ({fmt_number(m['epochs'], '.2f')} epochs) |")


def _resource_rows(m: dict[str, Any]) -> str:
    return (f"| peak memory | {m['peak_memory_bytes'] / 2**20:,.0f} MiB, {m['peak_memory_kind']} |\n"
            f"| wall time | {m['wall_time_s']:.1f} s |")


def sft_card(out: Path, config: TrainConfig, m: dict[str, Any]) -> str:
    lora, data = m["lora"], m["data"]
    return f"""---
base_model: {config.base}
library_name: peft
language: [ko]
tags: [lora, qlora, koalpaca, mechuri]
---

# {out.name}: a Mechuri (메추리) LoRA adapter

A LoRA adapter for `{config.base}` that recommends Korean dishes, trained with `mechuri train`. Prompts use the
KoAlpaca format (`### 질문: …` / `### 맥락: …` / `### 답변:`), the same one the bot serves with.

{_loading(out, config)}

## Data
- training: `{config.data}`: {data['examples']} examples ({data['answer_tokens']:,} answer tokens trained);
  {len(data['bad_lines'])} bad lines skipped, {len(data['too_long'])} rows over {config.max_length} tokens dropped
- evaluation: `{config.eval_data or 'none'}`
- labels: the answer tokens and the EOS only (prompt tokens are -100);
  pad token id {m['pad_token_id']}, EOS id {m['eos_token_id']}

## Hyperparameters
| | |
|---|---|
| quantization | {QUANTIZATION_NOTES.get(config.quantization, config.quantization)} |
| LoRA | {config.lora_targets}: r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']}, {', '.join(lora['target_modules'])} |
{_schedule_rows(config, m)}
| max length | {config.max_length} |
| gradient checkpointing | {config.gradient_checkpointing} |
| seed | {config.seed} |

## Results
| | |
|---|---|
| train loss (first → last logged) | {fmt_number(m['train_loss_first'])} → {fmt_number(m['train_loss_final'])} |
| eval loss / perplexity | {fmt_number(m['eval_loss'])} / {fmt_number(m['eval_perplexity'], '.2f')} |
| throughput | {m['tokens_per_s']:,.0f} tokens/s, {m['samples_per_s']:.2f} samples/s on {m['device']} |
{_resource_rows(m)}

![loss](loss.png)

Everything above, and the full configuration, is in `metrics.json`.
"""


def preference_card(out: Path, config: PrefTrainConfig, m: dict[str, Any]) -> str:
    lora, data, method = m["lora"], m["data"], m["method"]
    return f"""---
base_model: {config.base}
library_name: peft
language: [ko]
tags: [lora, {method}, koalpaca, mechuri, trl]
---

# {out.name}: a Mechuri (메추리) LoRA adapter, {method.upper()}-trained on user feedback

A LoRA adapter for `{config.base}` trained with `mechuri train --method {method}` (TRL
{m['versions'].get('trl', '?')}) on what users kept and turned down ("다른 거"). Prompts are the exact serving prompts
(KoAlpaca format), answers end with EOS as in SFT.

{_loading(out, config)}

## Start and reference
- started from: `{m['init_adapter'] or 'a fresh LoRA on the base'}`
- reference policy: {m['reference']}
- beta: {m['beta']}

## Data
- training: `{config.data}`: {data['examples']} rows ({data['answer_tokens']:,} answer tokens);
  {len(data['bad_lines'])} bad lines skipped, {len(data['too_long'])} rows over {config.max_length} tokens dropped
- evaluation: `{config.eval_data or 'none'}`

## Hyperparameters
| | |
|---|---|
| quantization | {QUANTIZATION_NOTES.get(config.quantization, config.quantization)} |
| LoRA | r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']}, {', '.join(lora['target_modules'])} |
{_schedule_rows(config, m)}
| seed | {config.seed} |

## Results
| | |
|---|---|
| train loss (first → last logged) | {fmt_number(m['train_loss_first'])} → {fmt_number(m['train_loss_final'])} |
| train reward accuracy / margin | {fmt_number(m['train_rewards_accuracy'], '.2f')} / {fmt_number(m['train_rewards_margin'])} |
| eval loss / reward accuracy / margin | {fmt_number(m['eval_loss'])} / {fmt_number(m['eval_rewards_accuracy'], '.2f')} / {fmt_number(m['eval_rewards_margin'])} |
| throughput | {m['tokens_per_s']:,.0f} tokens/s on {m['device']} |
{_resource_rows(m)}

![loss](loss.png)

Everything above, and the full configuration, is in `metrics.json`. Compare it with its start adapter:
`mechuri eval --adapter {out} --compare-adapter {m['init_adapter'] or 'BEFORE'} --data HELD_OUT.jsonl --prefs PREFS.jsonl`.
"""
