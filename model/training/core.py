"""The training core that SFT (model/training/sft.py) and DPO/KTO (model/training/preference.py) share.

A method loads its data, makes its LoRA policy, picks its trainer class and says what its metrics are. The rest is
here, once:
- the set-up: the output folder check, resume, device, seed, tokenizer, the base model with a pad token distinct from
  EOS, k-bit preparation, the LoRA config;
- the keyword arguments of `TrainingArguments`, which TRL's `DPOConfig` and `KTOConfig` extend;
- the measured trainer (real and padded tokens, eval time) and the reporter (a bar and one line per logging step);
- the epilogue: a final evaluation when the last one was earlier, the adapter saved with its base as the user gave it,
  the metrics every method reports, and the report files (model/training/report.py).
"""

from __future__ import annotations

import json
import math
import re
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.loading import check_base_folder, eos_id_of, load_base, load_tokenizer, native_bf16, pick_device
from model.training.config import TrainConfig, TrainResult
from model.training.report import versions, write_report
from model.training.sft_data import DataError, DataReport, ensure_distinct_pad

GRADIENT_CHECKPOINTING = {"use_reentrant": False}
# (logs, trainer state, tokens/s so far) → the text of a progress line after "step N/TOTAL · ", or None for no line
Describe = Callable[[dict[str, Any], Any, float], "str | None"]


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


# ----- set-up -----

@dataclass
class Run:
    """One run's set-up: what the core hands a method, and takes back for the epilogue."""

    config: TrainConfig
    out: Path
    device: str
    tokenizer: Any
    eos: int
    started: float
    resume_from: str | None = None
    pad: int | None = None  # set when the base is loaded: the tokenizer may need a new pad token that fits it

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"


def start(config: TrainConfig) -> Run:
    """The checks that fail fast (base folder, output folder, resume checkpoint), then device, seed and tokenizer."""
    from transformers import set_seed

    started = time.perf_counter()
    out = Path(config.out).expanduser()
    check_base_folder(config.base)  # a missing base folder fails here, before anything slow
    check_out(config, out)
    resume_from = resolve_resume(config.resume, out / "checkpoints")
    device = pick_device(config.device)
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.base)
    return Run(config, out, device, tokenizer, eos_id_of(tokenizer), started, resume_from)


def check_out(config: TrainConfig, out: Path) -> None:
    """Never mix two runs in one folder: `--resume latest` would pick up the other run's checkpoints."""
    if config.resume:
        return
    earlier = (out / "adapter_config.json").exists() or (out / "checkpoints").is_dir()
    if earlier and not config.overwrite:
        raise DataError(f"{out} already holds an adapter or checkpoints: choose another --out, continue it with "
                        "--resume latest, or pass --overwrite")
    if earlier:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


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


def print_reports(*reports: DataReport | None) -> None:
    for report in reports:
        if report is not None:
            print(report.summary())
            for line in report.details():
                print(line)


def load_training_base(run: Run) -> Any:
    """The base model, ready for a LoRA: a pad token distinct from EOS (`run.pad`), k-bit preparation, no cache."""
    from peft import prepare_model_for_kbit_training

    config = run.config
    reset_peak_memory(run.device)
    model = load_base(config.base, quantization=config.quantization, device=run.device)
    run.pad = ensure_distinct_pad(run.tokenizer, model.get_input_embeddings().weight.shape[0])
    if config.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=GRADIENT_CHECKPOINTING)
    model.config.use_cache = False  # the cache is for generation; in training it only costs memory
    return model


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    r, alpha, dropout, targets = config.lora()
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                      task_type="CAUSAL_LM")


def training_arguments(run: Run, evaluates: bool) -> dict[str, Any]:
    """The keyword arguments of `TrainingArguments`, and of TRL's `DPOConfig`/`KTOConfig`, which extend it."""
    config = run.config
    cuda = run.device.startswith("cuda")
    bf16 = native_bf16(run.device)
    return dict(
        output_dir=str(run.checkpoints), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr, lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_steps,
        max_steps=config.max_steps or -1, num_train_epochs=config.epochs_or_none() or 1.0,
        logging_steps=config.logging_steps, logging_first_step=True, eval_strategy="steps" if evaluates else "no",
        eval_steps=config.eval_steps or config.logging_steps * 5, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, optim=config.optim or ("paged_adamw_8bit" if cuda else "adamw_torch"),
        bf16=bf16, fp16=cuda and not bf16, seed=config.seed, data_seed=config.seed, use_cpu=not cuda,
        # TRL's configs switch checkpointing on by default; ours is off unless asked for.
        activation_checkpointing=config.gradient_checkpointing, activation_checkpointing_kwargs=GRADIENT_CHECKPOINTING,
        report_to="none", disable_tqdm=True,  # our reporter draws the bar
        dataloader_num_workers=0,
    )


# ----- the trainer -----

def measured_trainer_class(base: type | None = None) -> type:
    """A Trainer (or a TRL trainer, `base`) that counts the tokens it trains on (real and padded) and eval time.

    `eval_loss`, when given (SFT), replaces the Trainer's own eval loss, a mean of per-batch means, with the
    token-weighted answer loss of `mechuri eval`: the curve, metrics.json and `mechuri eval` report one number.
    """
    from transformers import Trainer

    class MeasuredTrainer(base or Trainer):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, eval_loss: Callable[[Any], float | None] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.eval_loss = eval_loss
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
            started = time.perf_counter()
            try:
                if self.eval_loss is None:
                    return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
                metrics = {f"{metric_key_prefix}_loss": self.eval_loss(self.model)}
                self.log(metrics)
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
                return metrics
            finally:
                self.eval_seconds += time.perf_counter() - started

    return MeasuredTrainer


def reporter_callback(total_steps: int, progress: bool, describe: Describe) -> Any:
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
            busy = time.perf_counter() - self.started - self.trainer.eval_seconds
            text = describe(logs or {}, state, self.trainer.real_tokens / busy if busy > 0 else 0.0)
            if text is not None:
                (self.bar.write if self.bar is not None else print)(f"step {state.global_step}/{total_steps} · {text}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return Reporter()


def make_trainer(trainer_class: type, run: Run, rows: int, describe: Describe, **kwargs: Any) -> Any:
    """`trainer_class(**kwargs)` with our reporter in place of the Trainer's own printing and bar."""
    from transformers import PrinterCallback, ProgressCallback

    epochs = run.config.epochs_or_none() or 1.0
    steps = run.config.max_steps or math.ceil(rows / (run.config.batch_size * run.config.grad_accum) * epochs)
    reporter = reporter_callback(steps, run.config.progress, describe)
    trainer = trainer_class(callbacks=[reporter], **kwargs)
    reporter.trainer = trainer
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


@dataclass
class Trained:
    output: Any  # the Trainer's TrainOutput
    seconds: float  # wall time of the training loop
    eval_seconds: float  # of which evaluations
    history: list[dict[str, Any]]

    @property
    def busy(self) -> float:
        return max(self.seconds - self.eval_seconds, 1e-9)


def run_trainer(trainer: Any, *, evaluates: bool, resume_from: str | None = None) -> Trained:
    """Train; then evaluate once more when the last evaluation came before the last step, so that the numbers
    reported are those of the adapter that is saved."""
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    trained = Trained(output, time.perf_counter() - started, trainer.eval_seconds, [])
    if evaluates and last(trainer.state.log_history, "eval_loss", "step") != trainer.state.global_step:
        trainer.evaluate()
    trained.history = list(trainer.state.log_history)
    return trained


# ----- the epilogue -----

def perplexity(loss: float | None) -> float | None:
    if loss is None or not math.isfinite(loss):
        return None
    return math.exp(min(loss, 50.0))


def curve(history: list[dict[str, Any]], key: str) -> list[list[float]]:
    return [[h["step"], h[key]] for h in history if key in h]


def last(history: list[dict[str, Any]], key: str, field: str | None = None) -> Any:
    """The last logged `key` (or the `field` of the entry that logged it), or None."""
    return next((h[field or key] for h in reversed(history) if key in h), None)


def save_adapter(model: Any, run: Run, **save_kwargs: Any) -> None:
    """The adapter folder, with the base recorded as the user gave it (peft records the resolved path), so that the
    folder travels."""
    model.save_pretrained(str(run.out), **save_kwargs)
    path = run.out / "adapter_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = run.config.base
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def run_metrics(run: Run, trainer: Any, trained: Trained, lora: dict[str, Any],
                reports: tuple[DataReport, DataReport | None]) -> dict[str, Any]:
    """The metrics.json entries every method reports: steps, throughput, memory, time, parameters, data."""
    memory, memory_kind = peak_memory(run.device)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    return {
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "tokens_per_s": trainer.real_tokens / trained.busy,
        "tokens_per_s_steady": trainer.steady_tokens_per_s(),
        "trained_tokens": trainer.real_tokens,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "wall_time_s": time.perf_counter() - run.started,
        "train_time_s": trained.seconds,
        "eval_time_s": trained.eval_seconds,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "device": run.device,
        "lora": lora,
        "pad_token_id": run.pad,
        "eos_token_id": run.eos,
        "data": reports[0].to_dict(),
        "eval_data": reports[1].to_dict() if reports[1] else None,
    }


def finish(run: Run, metrics: dict[str, Any], history: list[dict[str, Any]],
           libraries: tuple[str, ...] = ()) -> TrainResult:
    """metrics.json (with the library versions and the whole config), loss.png, the model card, the summary."""
    metrics = {**metrics, "versions": versions(*libraries), "config": asdict(run.config)}
    print(write_report(run.out, run.config, metrics))
    return TrainResult(out=run.out, metrics=metrics, log_history=history)
