"""Preference training (DPO or KTO, TRL 1.16) of a LoRA adapter: `train_preferences(PrefTrainConfig(...))`.

The usual start is the served SFT adapter (`init_adapter`): it is loaded trainable as "default", and TRL copies it
into a frozen "ref" adapter, so the reference is exactly the SFT policy the feedback was collected from. From the bare
base, a fresh LoRA is trained and the reference is the base with the adapter disabled. Either way only "default" is
saved: the folder has the same shape as SFT's (`adapter_model.safetensors`, `adapter_config.json`, `loss.png`,
`metrics.json`, `README.md`) and loads with plain `PeftModel.from_pretrained(base, out)` and `/reload`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.training.preference_report import plot_preferences, pref_summary, write_pref_card
from model.training.report import versions
from model.training.sft import (
    TrainConfig,
    TrainResult,
    _check_out,
    _set_adapter_base,
    measured_trainer_class,
    peak_memory,
    reporter_callback,
    reset_peak_memory,
)
from model.training.sft_data import DataError, ensure_distinct_pad

METHODS = ("dpo", "kto")
DEFAULT_PREF_LR = 5e-5  # LoRA DPO/KTO: well below SFT's 1e-4; a preference step moves a policy fast


@dataclass
class PrefTrainConfig(TrainConfig):
    method: str = "dpo"
    init_adapter: str | None = None  # start (and reference) adapter; None: a fresh LoRA on the base
    beta: float = 0.1
    lr: float = DEFAULT_PREF_LR
    sft_weight: float = 0.0  # DPO only: + this × the chosen answers' SFT loss (RPO)


def pref_trainer_class(method: str) -> type:
    """TRL's trainer with our token counting, taking our pre-tokenized rows as they are (see model/pref_data.py)."""
    from trl import DPOTrainer, KTOTrainer

    base = measured_trainer_class(DPOTrainer if method == "dpo" else KTOTrainer)

    class PrefTrainer(base):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # type: ignore[override]
            if method == "kto" and self.calculate_KL:
                # TRL's own step: each row's KL completion is its batch neighbour's (rows are read in order).
                def add_kl(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
                    batch["KL_completion_ids"] = [batch["completion_ids"][-1], *batch["completion_ids"][:-1]]
                    return batch

                dataset = dataset.map(add_kl, batched=True, batch_size=args.per_device_train_batch_size)
            return dataset

    return PrefTrainer


def pref_reporter(total_steps: int, progress: bool) -> Any:
    """The SFT reporter's bar, with lines that speak of preference loss, reward accuracy and margin."""
    reporter = reporter_callback(total_steps, progress)

    class PrefReporter(type(reporter)):  # type: ignore[misc]
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            prefix = "eval_" if "eval_loss" in logs else ""
            if f"{prefix}loss" not in logs:
                return
            line = f"step {state.global_step}/{total_steps} · {'eval ' if prefix else ''}loss {logs[prefix + 'loss']:.4f}"
            for key, name, fmt in (("rewards/accuracies", "reward acc", ".2f"), ("rewards/margins", "margin", ".3f"),
                                   ("kl", "KL", ".3f")):  # DPO logs accuracies, KTO its KL estimate
                if prefix + key in logs:
                    line += f" · {name} {logs[prefix + key]:{fmt}}"
            if not prefix:
                busy = time.perf_counter() - self.started - self.trainer.eval_seconds
                line += (f" · lr {logs.get('learning_rate', 0):.2e} · "
                         f"{self.trainer.real_tokens / busy if busy > 0 else 0.0:,.0f} tok/s")
            (self.bar.write if self.bar is not None else print)(line)

    return PrefReporter()


def _as_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)


def train_preferences(config: PrefTrainConfig) -> TrainResult:
    """Train `config.init_adapter` (or a fresh LoRA on `config.base`) on preference data and write `config.out`."""
    from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
    from transformers import PrinterCallback, ProgressCallback, set_seed
    from trl import DPOConfig, KTOConfig

    from model.loading import (
        check_adapter_folder,
        check_base_folder,
        eos_id_of,
        load_base,
        load_tokenizer,
        native_bf16,
        pick_device,
    )
    from model.training.preference_data import load_prefs

    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}: choose dpo or kto (or sft)")
    if config.resume:
        raise DataError("--resume is for SFT runs only: start the DPO/KTO run again (they are short), or pass "
                        "--init-adapter with the adapter to continue from")
    started = time.perf_counter()
    out = Path(config.out).expanduser()
    checkpoints = out / "checkpoints"
    check_base_folder(config.base)
    if config.init_adapter:
        check_adapter_folder(config.init_adapter)  # fail before the slow base load
    _check_out(config, out)
    device = pick_device(config.device)
    set_seed(config.seed)

    tokenizer = load_tokenizer(config.base)
    eos = eos_id_of(tokenizer)
    load = dict(eos_id=eos, max_length=config.max_length, seed=config.seed)
    train_rows, train_report = load_prefs(config.data, config.method, tokenizer, **load)
    eval_rows, eval_report = ([], None)
    if config.eval_data:
        eval_rows, eval_report = load_prefs(config.eval_data, config.method, tokenizer, **load)
    for report in (train_report, eval_report):
        if report is not None:
            print(report.summary())
            for line in report.details():
                print(line)
    if config.method == "kto" and config.batch_size < 2:
        raise DataError("--method kto needs --batch-size 2 or more: its KL estimate pairs each row with a neighbour")

    reset_peak_memory(device)
    model = load_base(config.base, quantization=config.quantization, device=device)
    pad = ensure_distinct_pad(tokenizer, model.get_input_embeddings().weight.shape[0])
    gc_kwargs = {"use_reentrant": False}
    if config.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    model.config.use_cache = False
    peft_config = None
    if config.init_adapter:
        check_adapter_folder(config.init_adapter, model)
        # Trainable "default"; TRL adds the frozen copy "ref" that the reference log-probs come from.
        model = PeftModel.from_pretrained(model, str(Path(config.init_adapter).expanduser()), is_trainable=True)
        reference = f"the init adapter {config.init_adapter}, frozen (TRL's 'ref' copy)"
    else:
        r, alpha, dropout, targets = config.lora()
        peft_config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                                 task_type="CAUSAL_LM")
        reference = "the base model (adapter disabled)"

    cuda = device.startswith("cuda")
    bf16 = native_bf16(device)
    epochs = config.epochs if config.epochs is not None else (None if config.max_steps else 3.0)
    common: dict[str, Any] = dict(
        output_dir=str(checkpoints), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr, lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_steps,
        max_steps=config.max_steps or -1, num_train_epochs=epochs or 1.0, logging_steps=config.logging_steps,
        logging_first_step=True, eval_strategy="steps" if eval_rows else "no",
        eval_steps=config.eval_steps or config.logging_steps * 5, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, optim=config.optim or ("paged_adamw_8bit" if cuda else "adamw_torch"),
        bf16=bf16, fp16=cuda and not bf16, seed=config.seed, data_seed=config.seed, use_cpu=not cuda,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, beta=config.beta,
        max_length=config.max_length, activation_checkpointing=config.gradient_checkpointing,  # TRL's default: on
        activation_checkpointing_kwargs=gc_kwargs,
    )
    if config.sft_weight and config.method != "dpo":
        raise ValueError("--sft-weight is for --method dpo")
    if config.sft_weight:
        common.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, config.sft_weight])
    args = DPOConfig(**common) if config.method == "dpo" else KTOConfig(**common)  # KTO keeps sequential sampling
    steps_estimate = config.max_steps or math.ceil(
        len(train_rows) / (config.batch_size * config.grad_accum) * (epochs or 1.0))
    trainer = pref_trainer_class(config.method)(
        model=model, args=args, train_dataset=_as_dataset(train_rows),
        eval_dataset=_as_dataset(eval_rows) if eval_rows else None, processing_class=tokenizer,
        peft_config=peft_config, callbacks=[reporter := pref_reporter(steps_estimate, config.progress)],
    )
    reporter.trainer = trainer
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    model = trainer.model
    lora_config = model.peft_config["default"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"{config.method.upper()} on {config.base} ({config.quantization}, {device}) · beta {config.beta} · "
          f"start: {config.init_adapter or 'a fresh LoRA'} · reference: {reference} · {trainable:,} trainable")
    train_started = time.perf_counter()
    output = trainer.train()
    train_wall = time.perf_counter() - train_started

    history = list(trainer.state.log_history)
    last_eval = next((h for h in reversed(history) if "eval_loss" in h), {})
    if eval_rows and last_eval.get("step") != trainer.state.global_step:  # the numbers of the adapter we save
        last_eval = {**trainer.evaluate(), "step": trainer.state.global_step}
        history.append(last_eval)
    model.save_pretrained(str(out), selected_adapters=["default"])  # never the frozen "ref" copy
    _set_adapter_base(out, config.base)

    memory, memory_kind = peak_memory(device)
    busy = max(train_wall - trainer.eval_seconds, 1e-9)
    logged = [h for h in history if "loss" in h]

    def curve(key: str) -> list[list[float]]:
        return [[h["step"], h[key]] for h in history if key in h]

    def last(key: str) -> float | None:
        return next((h[key] for h in reversed(history) if key in h), None)

    metrics: dict[str, Any] = {
        "method": config.method,
        "beta": config.beta,
        "sft_weight": config.sft_weight,
        "init_adapter": config.init_adapter,
        "reference": reference,
        "train_loss_first": logged[0]["loss"] if logged else None,
        "train_loss_final": logged[-1]["loss"] if logged else None,
        "train_loss_mean": output.training_loss,
        "train_rewards_accuracy": last("rewards/accuracies"),
        "train_rewards_margin": last("rewards/margins"),
        "train_kl": last("kl"),
        "eval_loss": last_eval.get("eval_loss"),
        "eval_rewards_accuracy": last_eval.get("eval_rewards/accuracies"),
        "eval_rewards_margin": last_eval.get("eval_rewards/margins"),
        "rewards_note": "TRL's implicit rewards beta * (log pi - log pi_ref) summed over answer tokens + EOS; "
                        "accuracy: share of pairs (batch means for KTO) where chosen's reward beats rejected's",
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "tokens_per_s": trainer.real_tokens / busy,
        "tokens_per_s_steady": trainer.steady_tokens_per_s(),
        "rows_per_s": trainer.samples / busy,
        "trained_tokens": trainer.real_tokens,
        "trained_sequences": trainer.samples,
        "throughput_note": "policy forward sequences (a DPO pair is 2, a KTO row 1 plus its KL sequence not counted); "
                           "non-pad tokens / (train wall time - eval time)",
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": train_wall,
        "eval_time_s": trainer.eval_seconds,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "device": device,
        "lora": {"r": lora_config.r, "alpha": lora_config.lora_alpha, "dropout": lora_config.lora_dropout,
                 "target_modules": sorted(lora_config.target_modules)},
        "pad_token_id": pad,
        "eos_token_id": eos,
        "data": train_report.to_dict(),
        "eval_data": eval_report.to_dict() if eval_report else None,
        "train_loss_curve": curve("loss"),
        "train_margin_curve": curve("rewards/margins"),
        "train_accuracy_curve": curve("rewards/accuracies"),
        "eval_loss_curve": curve("eval_loss"),
        "eval_margin_curve": curve("eval_rewards/margins"),
        "eval_accuracy_curve": curve("eval_rewards/accuracies"),
        "versions": {**versions(), **_trl_version()},
        "config": asdict(config),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    plot_preferences(metrics, out / "loss.png", title=f"{out.name} · {config.method.upper()} · {config.base}")
    write_pref_card(out, config, metrics)
    print(pref_summary(out, config, metrics))
    return TrainResult(out=out, metrics=metrics, log_history=history)


def _trl_version() -> dict[str, str]:
    import trl

    return {"trl": trl.__version__}
