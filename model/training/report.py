"""What `mechuri train` leaves beside the adapter for people: the loss curve, the model card, the closing summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.training.sft import TrainConfig


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__}
    try:
        import bitsandbytes

        versions["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        pass
    return versions


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(value, fmt)


def summary(out: Path, config: TrainConfig, m: dict[str, Any]) -> str:
    lora = m["lora"]
    rows = [
        ("adapter", f"{out}  (base {config.base}, {config.quantization}, {m['device']})"),
        ("LoRA", f"{config.lora_targets}: r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']}, "
                 f"{m['trainable_parameters']:,} trainable parameters"),
        ("steps", f"{m['global_step']} ({_num(m['epochs'], '.2f')} epochs) in {m['train_time_s']:.1f} s "
                  f"(eval {m['eval_time_s']:.1f} s)"),
        ("train loss", f"{_num(m['train_loss_first'])} → {_num(m['train_loss_final'])} (mean {_num(m['train_loss_mean'])})"),
        ("eval loss", f"{_num(m['eval_loss'])} · perplexity {_num(m['eval_perplexity'], '.2f')}"),
        ("throughput", f"{m['tokens_per_s']:,.0f} tok/s · {m['samples_per_s']:.2f} samples/s · "
                       f"padding {m['padding_share']:.0%}"),
        ("peak memory", f"{m['peak_memory_bytes'] / 2**20:,.0f} MiB, {m['peak_memory_kind']}"),
        ("data", f"{m['data']['examples']} examples; {len(m['data']['bad_lines'])} bad lines skipped, "
                 f"{len(m['data']['too_long'])} too long dropped"),
        ("files", "adapter_model.safetensors, loss.png, metrics.json, README.md, checkpoints/"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["── training done " + "─" * 40, *(f"{k:<{width}}  {v}" for k, v in rows)])


def plot_losses(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train and eval loss by step, as a PNG (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), marker=".", label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label="eval loss (answer tokens)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


QUANTIZATION_NOTES = {"4bit": "4-bit NF4, double quantization, bf16 compute (QLoRA)", "8bit": "8-bit (LLM.int8)",
                      "none": "none (the base in bf16 on a GPU, fp32 on a CPU)"}


def write_model_card(out: Path, config: TrainConfig, m: dict[str, Any]) -> None:
    lora, data = m["lora"], m["data"]

    card = f"""---
base_model: {config.base}
library_name: peft
language: [ko]
tags: [lora, qlora, koalpaca, mechuri]
---

# {out.name}: a Mechuri (메추리) LoRA adapter

A LoRA adapter for `{config.base}` that recommends Korean dishes, trained with `mechuri train`. Prompts use the
KoAlpaca format (`### 질문: …` / `### 맥락: …` / `### 답변:`), the same one the bot serves with.

Load it with `PeftModel.from_pretrained(base_model, "{out}")`, with `mechuri generate --model {config.base} --adapter
{out} "질문"`, or in the running bot with `/reload {out.name}` when it sits in the adapters folder.

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
| batch size × accumulation | {config.batch_size} × {config.grad_accum} |
| learning rate | {config.lr} ({config.lr_scheduler}, {config.warmup_steps} warmup steps) |
| steps | {m['global_step']} ({_num(m['epochs'], '.2f')} epochs) |
| max length | {config.max_length} |
| gradient checkpointing | {config.gradient_checkpointing} |
| seed | {config.seed} |

## Results
| | |
|---|---|
| train loss (first → last logged) | {_num(m['train_loss_first'])} → {_num(m['train_loss_final'])} |
| eval loss / perplexity | {_num(m['eval_loss'])} / {_num(m['eval_perplexity'], '.2f')} |
| throughput | {m['tokens_per_s']:,.0f} tokens/s, {m['samples_per_s']:.2f} samples/s on {m['device']} |
| peak memory | {m['peak_memory_bytes'] / 2**20:,.0f} MiB, {m['peak_memory_kind']} |
| wall time | {m['wall_time_s']:.1f} s |

![loss](loss.png)

Everything above, and the full configuration, is in `metrics.json`.
"""
    (out / "README.md").write_text(card, encoding="utf-8")
