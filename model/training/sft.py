"""QLoRA supervised fine-tuning of a KoAlpaca base on Alpaca rows: `train(TrainConfig(...)) -> TrainResult`.

Why the plain HF `Trainer` and not TRL's `SFTTrainer`: our examples arrive already tokenized with answer-only labels
built from `format_example` (the serving prompt), so SFTTrainer would only add its own formatting and masking paths to
switch off (`completion_only_loss` wants its own prompt/completion columns and re-tokenizes them together, which can
merge tokens across the prompt/answer boundary that the generator never sees merged). Trainer takes our dataset and
collator as they are; the one addition is `MeasuredTrainer`, which counts real and padded tokens and eval time.

The adapter folder gets: the PEFT adapter, `loss.png`, `metrics.json`, a model card `README.md`, and `checkpoints/`
(for `--resume`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.training.report import plot_losses, summary, versions, write_model_card
from model.training.sft_data import AnswerOnlyCollator, DataError, ensure_distinct_pad, load_examples

log = logging.getLogger(__name__)

# name → (r, alpha, dropout, target modules)
LORA_PRESETS: dict[str, tuple[int, int, float, tuple[str, ...]]] = {
    # The common KoAlpaca QLoRA recipe (and the 2024 report).
    "qkv": (8, 32, 0.05, ("query_key_value",)),
    # The QLoRA paper: adapt every linear layer; r 64, alpha 16, dropout 0.1 for models up to 13B.
    "all-linear": (64, 16, 0.1, ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")),
}


@dataclass
class TrainConfig:
    data: str
    base: str
    out: str
    eval_data: str | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    max_steps: int | None = None
    epochs: float | None = None  # 3 when neither max_steps nor epochs is given
    logging_steps: int = 10
    eval_steps: int | None = None  # default: every 5 logging intervals
    save_steps: int = 200
    save_total_limit: int = 2
    lora_targets: str = "qkv"
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    target_modules: list[str] | None = None
    quantization: str = "4bit"
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    seed: int = 42
    resume: str | None = None  # a checkpoint folder, or "latest"
    max_length: int = 1024
    optim: str | None = None  # default: paged_adamw_8bit on CUDA, adamw_torch on CPU
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    device: str | None = None
    progress: bool = True
    overwrite: bool = False

    def lora(self) -> tuple[int, int, float, list[str]]:
        if self.lora_targets not in LORA_PRESETS:
            raise ValueError(f"unknown LoRA preset {self.lora_targets!r}: choose {' or '.join(LORA_PRESETS)}")
        r, alpha, dropout, targets = LORA_PRESETS[self.lora_targets]
        return (self.lora_r or r, self.lora_alpha or alpha,
                dropout if self.lora_dropout is None else self.lora_dropout, list(self.target_modules or targets))


@dataclass
class TrainResult:
    out: Path
    metrics: dict[str, Any]
    log_history: list[dict[str, Any]] = field(default_factory=list)


# ----- memory -----

def reset_peak_memory(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: writing 5 resets VmHWM, so the peak belongs to this run, not to whatever ran before in the process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory(device: str) -> tuple[int, str]:
    """(bytes, what was measured)."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated()), "cuda max_memory_allocated"
    try:
        kb = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]
        return kb * 1024, "process RSS peak (VmHWM, reset at start)"
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process RSS peak (ru_maxrss, whole process)"


# ----- the trainer -----

def measured_trainer_class(base: type | None = None) -> type:
    """A Trainer (or a TRL trainer, `base`) that counts the tokens it trains on (real and padded) and eval time."""
    from transformers import Trainer

    class MeasuredTrainer(base or Trainer):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.real_tokens = self.padded_tokens = self.samples = 0
            self.eval_seconds = 0.0
            self.timeline: list[tuple[float, int, float]] = []  # (time, real tokens, eval seconds) per micro-batch

        def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[override]
            mask = inputs.get("attention_mask")
            if mask is not None:
                self.real_tokens += int(mask.sum())
                self.padded_tokens += int(mask.numel())
                self.samples += int(mask.shape[0])
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.timeline.append((time.perf_counter(), self.real_tokens, self.eval_seconds))
            return loss

        def steady_tokens_per_s(self) -> float | None:
            """Tokens/s after the first tenth of the micro-batches (start-up: allocations, kernel choice)."""
            if len(self.timeline) < 3:
                return None
            (t0, n0, e0), (t1, n1, e1) = self.timeline[max(len(self.timeline) // 10, 1) - 1], self.timeline[-1]
            busy = (t1 - t0) - (e1 - e0)
            return (n1 - n0) / busy if busy > 0 else None

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):  # type: ignore[override]
            """The token-weighted answer loss of `mechuri eval`, so the curve, metrics.json and `mechuri eval`
            report one number (Trainer's own eval loss is a mean of per-batch means)."""
            from model.eval.evaluate import answer_loss

            started = time.perf_counter()
            try:
                examples = getattr(self, "answer_eval", None)
                if examples is None:
                    return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
                metrics = {f"{metric_key_prefix}_loss": answer_loss(self.model, examples, self.answer_pad,
                                                                    self.args.per_device_eval_batch_size)}
                self.log(metrics)
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
                return metrics
            finally:
                self.eval_seconds += time.perf_counter() - started

    return MeasuredTrainer


def reporter_callback(total_steps: int, progress: bool) -> Any:
    """A progress bar plus one readable line per logging interval (replaces the Trainer's dict printing)."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Reporter(TrainerCallback):
        bar = None
        started = 0.0
        trainer: Any = None  # set once the trainer exists: its token counts give the tok/s of each line

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            if progress:
                self.bar = tqdm(total=total_steps, initial=state.global_step, desc="training", unit="step",
                                dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                busy = time.perf_counter() - self.started - self.trainer.eval_seconds
                speed = self.trainer.real_tokens / busy if busy > 0 else 0.0
                line = (f"step {state.global_step}/{total_steps} · epoch {logs.get('epoch', state.epoch or 0):.2f} · "
                        f"loss {logs['loss']:.4f} · lr {logs.get('learning_rate', 0):.2e} · "
                        f"grad-norm {logs.get('grad_norm', float('nan')):.3f} · {speed:,.0f} tok/s")
            elif "eval_loss" in logs:
                line = (f"step {state.global_step}/{total_steps} · eval loss {logs['eval_loss']:.4f} · "
                        f"perplexity {_perplexity(logs['eval_loss']):.2f}")
            else:
                return
            (self.bar.write if self.bar is not None else print)(line)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return Reporter()


def _perplexity(loss: float | None) -> float | None:
    if loss is None or not math.isfinite(loss):
        return None
    return math.exp(min(loss, 50.0))


def resolve_resume(resume: str | None, checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not resume:
        return None
    if resume == "latest":
        last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
        if last is None:
            raise DataError(f"--resume latest: no checkpoint in {checkpoints}: train once without --resume first "
                            "(checkpoints are saved every --save-steps and at the end)")
        return last
    path = Path(resume).expanduser()
    if not (path / "trainer_state.json").exists():
        raise DataError(f"--resume {resume}: not a Trainer checkpoint folder (no trainer_state.json): give a "
                        f"checkpoint-N folder from {checkpoints}, or 'latest'")
    return str(path)


def _check_out(config: TrainConfig, out: Path) -> None:
    """Never mix two runs in one folder: `--resume latest` would pick up the other run's checkpoints."""
    if config.resume:
        return
    earlier = (out / "adapter_config.json").exists() or (out / "checkpoints").is_dir()
    if earlier and not config.overwrite:
        raise DataError(f"{out} already holds an adapter or checkpoints: choose another --out, continue it with "
                        "--resume latest, or pass --overwrite")
    if earlier:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune `config.base` with LoRA on `config.data` and write the adapter folder `config.out`."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import PrinterCallback, ProgressCallback, TrainingArguments, set_seed

    from model.eval.evaluate import answer_loss
    from model.loading import check_base_folder, eos_id_of, load_base, load_tokenizer, native_bf16, pick_device

    started = time.perf_counter()
    out = Path(config.out).expanduser()
    checkpoints = out / "checkpoints"
    check_base_folder(config.base)  # a missing base folder fails here, before anything slow
    _check_out(config, out)
    resume_from = resolve_resume(config.resume, checkpoints)
    r, alpha, dropout, targets = config.lora()
    device = pick_device(config.device)
    set_seed(config.seed)

    tokenizer = load_tokenizer(config.base)
    eos = eos_id_of(tokenizer)
    train_examples, train_report = load_examples(config.data, tokenizer, eos_id=eos, max_length=config.max_length)
    eval_examples, eval_report = ([], None)
    if config.eval_data:
        eval_examples, eval_report = load_examples(config.eval_data, tokenizer, eos_id=eos,
                                                   max_length=config.max_length)
    for report in (train_report, eval_report):
        if report is not None:
            print(report.summary())
            for line in report.details():
                print(line)

    reset_peak_memory(device)
    model = load_base(config.base, quantization=config.quantization, device=device)
    pad = ensure_distinct_pad(tokenizer, model.get_input_embeddings().weight.shape[0])
    gc_kwargs = {"use_reentrant": False}
    if config.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.config.use_cache = False  # the cache is for generation; in training it only costs memory
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()

    cuda = device.startswith("cuda")
    bf16 = native_bf16(device)
    epochs = config.epochs if config.epochs is not None else (None if config.max_steps else 3.0)
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        max_steps=config.max_steps or -1,
        num_train_epochs=epochs or 1.0,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if eval_examples else "no",
        eval_steps=config.eval_steps or config.logging_steps * 5,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        optim=config.optim or ("paged_adamw_8bit" if cuda else "adamw_torch"),
        bf16=bf16,
        fp16=cuda and not bf16,
        # Batches of similar lengths waste less compute on padding; the loss is the same.
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not cuda,
        report_to="none",
        disable_tqdm=True,  # our Reporter draws the bar
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    steps_estimate = config.max_steps or math.ceil(
        len(train_examples) / (config.batch_size * config.grad_accum) * (epochs or 1.0))
    trainer = measured_trainer_class()(
        model=model,
        args=args,
        train_dataset=[e.as_features() for e in train_examples],
        eval_dataset=[e.as_features() for e in eval_examples] or None,
        data_collator=AnswerOnlyCollator(pad),
        callbacks=[reporter := reporter_callback(steps_estimate, config.progress)],
    )
    reporter.trainer = trainer
    trainer.answer_eval, trainer.answer_pad = eval_examples, pad
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)

    print(f"training {config.base} ({config.quantization}, {device}) · LoRA {config.lora_targets} r{r} α{alpha} "
          f"dropout {dropout} on {','.join(targets)} · {trainable:,} of {total:,} parameters trainable"
          + (f" · resuming from {resume_from}" if resume_from else ""))
    train_started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    train_wall = time.perf_counter() - train_started

    model.save_pretrained(str(out))
    _set_adapter_base(out, config.base)
    history = list(trainer.state.log_history)
    last_eval = next((h for h in reversed(history) if "eval_loss" in h), {})
    final_eval = last_eval.get("eval_loss")
    if eval_examples and last_eval.get("step") != trainer.state.global_step:  # no eval ran at the very end
        final_eval = answer_loss(model, eval_examples, pad, config.batch_size)
    memory, memory_kind = peak_memory(device)
    busy = max(train_wall - trainer.eval_seconds, 1e-9)
    train_losses = [h["loss"] for h in history if "loss" in h]
    metrics: dict[str, Any] = {
        "train_loss_final": train_losses[-1] if train_losses else None,
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_mean": output.training_loss,
        "eval_loss": final_eval,
        "eval_loss_note": "token-weighted mean over answer tokens (EOS included), as `mechuri eval` computes it",
        "eval_perplexity": _perplexity(final_eval),
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "resumed_from": resume_from,
        "tokens_per_s": trainer.real_tokens / busy,
        "tokens_per_s_steady": trainer.steady_tokens_per_s(),
        "samples_per_s": trainer.samples / busy,
        "trained_tokens": trainer.real_tokens,
        "trained_samples": trainer.samples,
        "padding_share": 1 - trainer.real_tokens / trainer.padded_tokens if trainer.padded_tokens else 0.0,
        "throughput_note": "this run's steps only; non-pad tokens / (train wall time - eval time); steady: after the "
                           "first tenth of the steps",
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": train_wall,
        "eval_time_s": trainer.eval_seconds,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "device": device,
        "lora": {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": targets},
        "pad_token_id": pad,
        "eos_token_id": eos,
        "data": train_report.to_dict(),
        "eval_data": eval_report.to_dict() if eval_report else None,
        "train_loss_curve": [[h["step"], h["loss"]] for h in history if "loss" in h],
        "eval_loss_curve": [[h["step"], h["eval_loss"]] for h in history if "eval_loss" in h],
        "versions": versions(),
        "config": asdict(config),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    plot_losses(history, out / "loss.png", title=f"{out.name} · {config.base}")
    write_model_card(out, config, metrics)
    print(summary(out, config, metrics))
    return TrainResult(out=out, metrics=metrics, log_history=history)


def _set_adapter_base(out: Path, base: str) -> None:
    """peft records the resolved path; keep the base as the user gave it (hub id or folder) so the folder travels."""
    path = out / "adapter_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = base
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
