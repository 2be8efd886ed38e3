"""What `mechuri train --method dpo|kto` leaves beside the adapter for people: the curves, the model card, the summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.training.report import QUANTIZATION_NOTES, _num

if TYPE_CHECKING:
    from model.training.preference import PrefTrainConfig


def plot_preferences(m: dict[str, Any], path: Path, title: str) -> None:
    """Left: the preference loss (train, eval). Right: the reward margin and accuracy (train, eval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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


def pref_summary(out: Path, config: PrefTrainConfig, m: dict[str, Any]) -> str:
    data = m["data"]
    rows = [
        ("adapter", f"{out}  ({m['method'].upper()}, beta {m['beta']}, base {config.base}, {config.quantization}, "
                    f"{m['device']})"),
        ("start / reference", f"{m['init_adapter'] or 'a fresh LoRA'} / {m['reference']}"),
        ("steps", f"{m['global_step']} ({_num(m['epochs'], '.2f')} epochs) in {m['train_time_s']:.1f} s "
                  f"(eval {m['eval_time_s']:.1f} s)"),
        ("train loss", f"{_num(m['train_loss_first'])} → {_num(m['train_loss_final'])} "
                       f"(mean {_num(m['train_loss_mean'])})"),
        ("train rewards", f"accuracy {_num(m['train_rewards_accuracy'], '.2f')} · margin "
                          f"{_num(m['train_rewards_margin'])}"),
        ("eval", f"loss {_num(m['eval_loss'])} · accuracy {_num(m['eval_rewards_accuracy'], '.2f')} · margin "
                 f"{_num(m['eval_rewards_margin'])}"),
        ("throughput", f"{m['tokens_per_s']:,.0f} tok/s · {m['rows_per_s']:.2f} sequences/s"),
        ("peak memory", f"{m['peak_memory_bytes'] / 2**20:,.0f} MiB, {m['peak_memory_kind']}"),
        ("data", f"{data['examples']} rows; {len(data['bad_lines'])} bad lines skipped, "
                 f"{len(data['too_long'])} too long dropped"),
        ("files", "adapter_model.safetensors, loss.png, metrics.json, README.md, checkpoints/"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["── training done " + "─" * 40, *(f"{k:<{width}}  {v}" for k, v in rows)])


def write_pref_card(out: Path, config: PrefTrainConfig, m: dict[str, Any]) -> None:
    lora, data = m["lora"], m["data"]
    card = f"""---
base_model: {config.base}
library_name: peft
language: [ko]
tags: [lora, {m['method']}, koalpaca, mechuri, trl]
---

# {out.name}: a Mechuri (메추리) LoRA adapter, {m['method'].upper()}-trained on user feedback

A LoRA adapter for `{config.base}` trained with `mechuri train --method {m['method']}` (TRL
{m['versions'].get('trl', '?')}) on what users kept and turned down ("다른 거"). Prompts are the exact serving prompts
(KoAlpaca format), answers end with EOS as in SFT.

Load it with `PeftModel.from_pretrained(base_model, "{out}")`, with `mechuri generate --model {config.base} --adapter
{out} "질문"`, or in the running bot with `/reload {out.name}` when it sits in the adapters folder.

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
| batch size × accumulation | {config.batch_size} × {config.grad_accum} |
| learning rate | {config.lr} ({config.lr_scheduler}, {config.warmup_steps} warmup steps) |
| steps | {m['global_step']} ({_num(m['epochs'], '.2f')} epochs) |
| seed | {config.seed} |

## Results
| | |
|---|---|
| train loss (first → last logged) | {_num(m['train_loss_first'])} → {_num(m['train_loss_final'])} |
| train reward accuracy / margin | {_num(m['train_rewards_accuracy'], '.2f')} / {_num(m['train_rewards_margin'])} |
| eval loss / reward accuracy / margin | {_num(m['eval_loss'])} / {_num(m['eval_rewards_accuracy'], '.2f')} / {_num(m['eval_rewards_margin'])} |
| throughput | {m['tokens_per_s']:,.0f} tokens/s on {m['device']} |
| peak memory | {m['peak_memory_bytes'] / 2**20:,.0f} MiB, {m['peak_memory_kind']} |
| wall time | {m['wall_time_s']:.1f} s |

![loss](loss.png)

Everything above, and the full configuration, is in `metrics.json`. Compare it with its start adapter:
`mechuri eval --adapter {out} --compare-adapter {m['init_adapter'] or 'BEFORE'} --data HELD_OUT.jsonl --prefs PREFS.jsonl`.
"""
    (out / "README.md").write_text(card, encoding="utf-8")
