"""Preference training (DPO or KTO, TRL 1.16) of a LoRA adapter: `train_preferences(PrefTrainConfig(...))`.

The usual start is the served SFT adapter (`init_adapter`): it is loaded trainable as "default", and TRL copies it
into a frozen "ref" adapter, so the reference is exactly the SFT policy the feedback was collected from. From the bare
base, a fresh LoRA is trained and the reference is the base with the adapter disabled. Either way only "default" is
saved: the folder has the same shape as SFT's (`adapter_model.safetensors`, `adapter_config.json`, `loss.png`,
`metrics.json`, `README.md`) and loads with plain `PeftModel.from_pretrained(base, out)` and `/reload`. The shared
set-up, trainer and epilogue are model/training/core.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.loading import check_adapter_folder
from model.training import core
from model.training.config import PREFERENCE_METHODS, PrefTrainConfig, TrainResult
from model.training.preference_data import load_prefs
from model.training.sft_data import DataError


def pref_trainer_class(method: str) -> type:
    """TRL's trainer with our token counting, taking our pre-tokenized rows as they are (see preference_data.py)."""
    from trl import DPOTrainer, KTOTrainer

    base = core.measured_trainer_class(DPOTrainer if method == "dpo" else KTOTrainer)

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


def describe(logs: dict[str, Any], state: Any, tokens_per_s: float) -> str | None:
    """One progress line in the words of preference training: loss, reward accuracy and margin (or KTO's KL)."""
    prefix = "eval_" if "eval_loss" in logs else ""
    if f"{prefix}loss" not in logs:
        return None
    line = f"{'eval ' if prefix else ''}loss {logs[prefix + 'loss']:.4f}"
    for key, name, fmt in (("rewards/accuracies", "reward acc", ".2f"), ("rewards/margins", "margin", ".3f"),
                           ("kl", "KL", ".3f")):  # DPO logs accuracies, KTO its KL estimate
        if prefix + key in logs:
            line += f" · {name} {logs[prefix + key]:{fmt}}"
    if not prefix:
        line += f" · lr {logs.get('learning_rate', 0):.2e} · {tokens_per_s:,.0f} tok/s"
    return line


def check(config: PrefTrainConfig) -> None:
    """Everything about the request that can be refused before a model is loaded."""
    if config.method not in PREFERENCE_METHODS:
        raise ValueError(f"unknown method {config.method!r}: choose dpo or kto (or sft)")
    if config.resume:
        raise DataError("--resume is for SFT runs only: start the DPO/KTO run again (they are short), or pass "
                        "--init-adapter with the adapter to continue from")
    if config.sft_weight and config.method != "dpo":
        raise ValueError("--sft-weight is for --method dpo")
    if config.method == "kto" and config.batch_size < 2:
        raise DataError("--method kto needs --batch-size 2 or more: its KL estimate pairs each row with a neighbour")
    if config.init_adapter:
        check_adapter_folder(config.init_adapter)  # fail before the slow base load


def policy(config: PrefTrainConfig, base: Any) -> tuple[Any, Any, str]:
    """(model, peft config for TRL or None, what the reference policy is)."""
    from peft import PeftModel

    if not config.init_adapter:  # TRL adds a fresh LoRA; the reference is the base with it disabled
        return base, core.lora_config(config), "the base model (adapter disabled)"
    check_adapter_folder(config.init_adapter, base)
    # Trainable "default"; TRL adds the frozen copy "ref" that the reference log-probs come from.
    model = PeftModel.from_pretrained(base, str(Path(config.init_adapter).expanduser()), is_trainable=True)
    return model, None, f"the init adapter {config.init_adapter}, frozen (TRL's 'ref' copy)"


def train_preferences(config: PrefTrainConfig) -> TrainResult:
    """Train `config.init_adapter` (or a fresh LoRA on `config.base`) on preference data and write `config.out`."""
    from datasets import Dataset
    from trl import DPOConfig, KTOConfig

    check(config)
    run = core.start(config)
    load = dict(eos_id=run.eos, max_length=config.max_length, seed=config.seed)
    train_rows, train_report = load_prefs(config.data, config.method, run.tokenizer, **load)
    eval_rows, eval_report = ([], None)
    if config.eval_data:
        eval_rows, eval_report = load_prefs(config.eval_data, config.method, run.tokenizer, **load)
    core.print_reports(train_report, eval_report)
    model, peft_config, reference = policy(config, core.load_training_base(run))
    kwargs = core.training_arguments(run, evaluates=bool(eval_rows)) | dict(beta=config.beta,
                                                                            max_length=config.max_length)
    if config.sft_weight:
        kwargs.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, config.sft_weight])
    args = DPOConfig(**kwargs) if config.method == "dpo" else KTOConfig(**kwargs)  # KTO keeps sequential sampling
    trainer = core.make_trainer(
        pref_trainer_class(config.method), run, len(train_rows), describe, model=model, args=args,
        train_dataset=Dataset.from_list(train_rows), eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=run.tokenizer, peft_config=peft_config,
    )
    trainable, _ = trainer.model.get_nb_trainable_parameters()
    print(f"{config.method.upper()} on {config.base} ({config.quantization}, {run.device}) · beta {config.beta} · "
          f"start: {config.init_adapter or 'a fresh LoRA'} · reference: {reference} · {trainable:,} trainable")
    trained = core.run_trainer(trainer, evaluates=bool(eval_rows))
    core.save_adapter(trainer.model, run, selected_adapters=["default"])  # never the frozen "ref" copy
    adapter = trainer.model.peft_config["default"]
    lora = {"r": adapter.r, "alpha": adapter.lora_alpha, "dropout": adapter.lora_dropout,
            "target_modules": sorted(adapter.target_modules)}
    return core.finish(run, metrics(config, run, trainer, trained, reference, lora, (train_report, eval_report)),
                       trained.history, libraries=("trl",))


def metrics(config: PrefTrainConfig, run: core.Run, trainer: Any, trained: core.Trained, reference: str,
            lora: dict[str, Any], reports: tuple[Any, Any]) -> dict[str, Any]:
    """metrics.json of a DPO/KTO run: its set-up and rewards, then what every method reports, then its curves."""
    history = trained.history
    losses = core.curve(history, "loss")
    return {
        "method": config.method,
        "beta": config.beta,
        "sft_weight": config.sft_weight,
        "init_adapter": config.init_adapter,
        "reference": reference,
        "train_loss_first": losses[0][1] if losses else None,
        "train_loss_final": losses[-1][1] if losses else None,
        "train_loss_mean": trained.output.training_loss,
        "train_rewards_accuracy": core.last(history, "rewards/accuracies"),
        "train_rewards_margin": core.last(history, "rewards/margins"),
        "train_kl": core.last(history, "kl"),
        "eval_loss": core.last(history, "eval_loss"),
        "eval_rewards_accuracy": core.last(history, "eval_rewards/accuracies"),
        "eval_rewards_margin": core.last(history, "eval_rewards/margins"),
        "rewards_note": "TRL's implicit rewards beta * (log pi - log pi_ref) summed over answer tokens + EOS; "
                        "accuracy: share of pairs (batch means for KTO) where chosen's reward beats rejected's",
        **core.run_metrics(run, trainer, trained, lora, reports),
        "rows_per_s": trainer.samples / trained.busy,
        "trained_sequences": trainer.samples,
        "throughput_note": "policy forward sequences (a DPO pair is 2, a KTO row 1 plus its KL sequence not counted); "
                           "non-pad tokens / (train wall time - eval time)",
        "train_loss_curve": losses,
        "train_margin_curve": core.curve(history, "rewards/margins"),
        "train_accuracy_curve": core.curve(history, "rewards/accuracies"),
        "eval_loss_curve": core.curve(history, "eval_loss"),
        "eval_margin_curve": core.curve(history, "eval_rewards/margins"),
        "eval_accuracy_curve": core.curve(history, "eval_rewards/accuracies"),
    }
