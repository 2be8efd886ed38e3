"""How likely a model finds the labelled tokens of tokenized rows: the eval loss that training logs (and `mechuri eval`
reports), and the answers' log-probabilities that the preference scores compare (model/eval/preference.py).

It lives in training, below both users: the trainer's evaluation step and `mechuri eval` must compute one number the
same way, and evaluation imports training's data code anyway, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model.training.sft_data import IGNORE_INDEX, Example, answer_collator


def labelled_logps(model: Any, features: Sequence[dict[str, list[int]]], tokenizer: Any,
                   batch_size: int = 8) -> list[tuple[float, int]]:
    """Per row: the summed log-probability of its labelled tokens (labels other than -100), and how many there are."""
    import torch

    collate = answer_collator(tokenizer)
    device = next(p for p in model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[tuple[float, int]] = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = {k: v.to(device) for k, v in collate(list(features[start:start + batch_size])).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            mask = labels != IGNORE_INDEX
            token_logps = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            out += zip((token_logps * mask).sum(dim=1).tolist(), mask.sum(dim=1).tolist(), strict=True)
    model.train(was_training)
    return out


def answer_loss(model: Any, examples: Sequence[Example], tokenizer: Any, batch_size: int = 8) -> float | None:
    """Token-weighted mean cross-entropy over the labelled (answer + EOS) tokens."""
    scored = labelled_logps(model, [e.as_features() for e in examples], tokenizer, batch_size)
    count = sum(n for _, n in scored)
    return -sum(logp for logp, _ in scored) / count if count else None
