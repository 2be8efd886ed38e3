"""What a `mechuri train` run is asked to do (SFT, DPO or KTO) and what it returns.

The configs sit below everything else in `model.training`: the core, the methods and the report writer all read them,
and none of them has to import another to learn their shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# name → (r, alpha, dropout, target modules)
LORA_PRESETS: dict[str, tuple[int, int, float, tuple[str, ...]]] = {
    # The common KoAlpaca QLoRA recipe (and the 2024 report).
    "qkv": (8, 32, 0.05, ("query_key_value",)),
    # The QLoRA paper: adapt every linear layer; r 64, alpha 16, dropout 0.1 for models up to 13B.
    "all-linear": (64, 16, 0.1, ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")),
}
PREFERENCE_METHODS = ("dpo", "kto")
DEFAULT_PREF_LR = 5e-5  # LoRA DPO/KTO: well below SFT's 1e-4; a preference step moves a policy fast


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

    def epochs_or_none(self) -> float | None:
        """Passes over the data, or None when max_steps alone decides the length."""
        return self.epochs if self.epochs is not None else (None if self.max_steps else 3.0)


@dataclass
class PrefTrainConfig(TrainConfig):
    method: str = "dpo"
    init_adapter: str | None = None  # start (and reference) adapter; None: a fresh LoRA on the base
    beta: float = 0.1
    lr: float = DEFAULT_PREF_LR
    sft_weight: float = 0.0  # DPO only: + this × the chosen answers' SFT loss (RPO)


@dataclass
class TrainResult:
    out: Path
    metrics: dict[str, Any]
    log_history: list[dict[str, Any]] = field(default_factory=list)
