"""QLoRA supervised fine-tuning of a KoAlpaca base on Alpaca rows: `train(TrainConfig(...)) -> TrainResult`.

Why the plain HF `Trainer` and not TRL's `SFTTrainer`: our examples arrive already tokenized with answer-only labels
built from `format_example` (the serving prompt), so SFTTrainer would only add its own formatting and masking paths to
switch off (`completion_only_loss` wants its own prompt/completion columns and re-tokenizes them together, which can
merge tokens across the prompt/answer boundary that the generator never sees merged). Trainer takes our dataset and
transformers' `DataCollatorForSeq2Seq` as they are; the shared set-up, trainer and epilogue are model/training/core.py.

The adapter folder gets: the PEFT adapter, `loss.png`, `metrics.json`, a model card `README.md`, and `checkpoints/`
(for `--resume`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from model.training import core
from model.training.config import TrainConfig, TrainResult
from model.training.scores import answer_loss
from model.training.sft_data import answer_collator, load_examples


def describe(logs: dict[str, Any], state: Any, tokens_per_s: float) -> str | None:
    """One progress line: the train loss and its learning rate and speed, or the eval loss and perplexity."""
    if "loss" in logs:
        return (f"epoch {logs.get('epoch', state.epoch or 0):.2f} · loss {logs['loss']:.4f} · "
                f"lr {logs.get('learning_rate', 0):.2e} · grad-norm {logs.get('grad_norm', float('nan')):.3f} · "
                f"{tokens_per_s:,.0f} tok/s")
    if "eval_loss" in logs:
        return f"eval loss {logs['eval_loss']:.4f} · perplexity {core.perplexity(logs['eval_loss']):.2f}"
    return None


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune `config.base` with LoRA on `config.data` and write the adapter folder `config.out`."""
    from peft import get_peft_model
    from transformers import TrainingArguments

    r, alpha, dropout, targets = config.lora()  # an unknown preset fails before anything slow
    run = core.start(config)
    load = dict(eos_id=run.eos, max_length=config.max_length)
    train_examples, train_report = load_examples(config.data, run.tokenizer, **load)
    eval_examples, eval_report = ([], None)
    if config.eval_data:
        eval_examples, eval_report = load_examples(config.eval_data, run.tokenizer, **load)
    core.print_reports(train_report, eval_report)
    model = get_peft_model(core.load_training_base(run), core.lora_config(config))
    trainable, total = model.get_nb_trainable_parameters()
    args = TrainingArguments(
        **core.training_arguments(run, evaluates=bool(eval_examples)),
        # Batches of similar lengths waste less compute on padding; the loss is the same.
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        remove_unused_columns=False,
    )
    trainer = core.make_trainer(
        core.measured_trainer_class(), run, len(train_examples), describe, model=model, args=args,
        train_dataset=[e.as_features() for e in train_examples],
        eval_dataset=[e.as_features() for e in eval_examples] or None,
        data_collator=answer_collator(run.tokenizer),
        eval_loss=partial(answer_loss, examples=eval_examples, tokenizer=run.tokenizer, batch_size=config.batch_size),
    )
    print(f"training {config.base} ({config.quantization}, {run.device}) · LoRA {config.lora_targets} r{r} α{alpha} "
          f"dropout {dropout} on {','.join(targets)} · {trainable:,} of {total:,} parameters trainable"
          + (f" · resuming from {run.resume_from}" if run.resume_from else ""))
    trained = core.run_trainer(trainer, evaluates=bool(eval_examples), resume_from=run.resume_from)
    core.save_adapter(model, run)
    lora = {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": targets}
    return core.finish(run, metrics(run, trainer, trained, lora, (train_report, eval_report)), trained.history)


def metrics(run: core.Run, trainer: Any, trained: core.Trained, lora: dict[str, Any],
            reports: tuple[Any, Any]) -> dict[str, Any]:
    """metrics.json of an SFT run: its losses, then what every method reports, then its throughput and curves."""
    losses = core.curve(trained.history, "loss")
    final_eval = core.last(trained.history, "eval_loss")
    return {
        "train_loss_final": losses[-1][1] if losses else None,
        "train_loss_first": losses[0][1] if losses else None,
        "train_loss_mean": trained.output.training_loss,
        "eval_loss": final_eval,
        "eval_loss_note": "token-weighted mean over answer tokens (EOS included), as `mechuri eval` computes it",
        "eval_perplexity": core.perplexity(final_eval),
        "resumed_from": run.resume_from,
        **core.run_metrics(run, trainer, trained, lora, reports),
        "samples_per_s": trainer.samples / trained.busy,
        "trained_samples": trainer.samples,
        "padding_share": 1 - trainer.real_tokens / trainer.padded_tokens if trainer.padded_tokens else 0.0,
        "throughput_note": "this run's steps only; non-pad tokens / (train wall time - eval time); steady: after the "
                           "first tenth of the steps",
        "train_loss_curve": losses,
        "eval_loss_curve": core.curve(trained.history, "eval_loss"),
    }
