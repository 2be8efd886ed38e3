"""`mechuri eval --prefs`: does a model prefer the answers users kept over the ones they turned down?

For each held-out pair (prompt, chosen, rejected) we sum log π(answer + EOS | prompt) over the answer tokens, tokenized
as preference training does (model/training/preference_data.py), and report three views per model:
- own log-probs: the share of pairs where log π(chosen) > log π(rejected), and the mean of that difference. Needs no
  reference, so it is defined for every column, the bare base included: "which answer would this model rather say?";
- the DPO implicit reward against the bare base: r(y) = β·(log π(y) − log π_base(y)); accuracy is the share of pairs
  with r(chosen) > r(rejected), the margin the mean of r(chosen) − r(rejected). The base is the one reference every
  column shares (the adapter is switched off for it, no second load); for the base column itself it is n/a;
- with a compare side B (the "before"), the same reward for A with B as the reference: exactly what DPO from B
  optimises, so "did training on the feedback move A towards the kept answers, relative to where it started?".
Ties count as misses. Pairs may also come from KTO rows that share a prompt (every kept × every turned-down answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from model.training.preference_data import pairs_from_kto, read_prefs, tokenize_prefs
from model.training.scores import labelled_logps
from model.training.sft_data import IGNORE_INDEX, DataError, DataReport


@dataclass
class PrefScores:
    pairs: int
    accuracy: float  # own log-probs: share of pairs with log π(chosen) > log π(rejected)
    margin: float  # mean log π(chosen) − log π(rejected), in nats
    reward_accuracy: float | None  # DPO implicit reward vs the bare base; None for the base itself
    reward_margin: float | None  # mean β·(Δ chosen − Δ rejected)
    beta: float
    vs_label: str | None = None  # the compare side used as reference, for the first column
    vs_accuracy: float | None = None
    vs_margin: float | None = None
    source: str = ""  # where the pairs came from, and the file's line report
    data: dict[str, Any] = field(default_factory=dict)
    chosen_logps: list[float] = field(default_factory=list)
    rejected_logps: list[float] = field(default_factory=list)
    base_chosen_logps: list[float] = field(default_factory=list)
    base_rejected_logps: list[float] = field(default_factory=list)


def load_pairs(path: str, tokenizer: Any, *, eos_id: int, max_length: int) -> tuple[list[dict[str, Any]], DataReport,
                                                                                   str]:
    """Tokenized pairs from a DPO file, or from a KTO file's rows that share a prompt. Returns a note on the source."""
    try:
        rows, report = read_prefs(path, "dpo")
        note = "DPO pairs"
    except DataError as dpo_error:
        try:
            kto_rows, report = read_prefs(path, "kto")
        except DataError:
            raise dpo_error from None
        rows, unpaired = pairs_from_kto(kto_rows)
        if not rows:
            raise DataError(f"--prefs {path}: its KTO rows give no pairs (no prompt has both a kept and a turned-down "
                            "answer): --prefs needs DPO pairs {\"prompt\", \"chosen\", \"rejected\"}, export those") from None
        note = f"{len(rows)} pairs from KTO rows sharing a prompt ({unpaired} rows without a partner left out)"
    pairs = tokenize_prefs(tokenizer, rows, report, eos_id=eos_id, max_length=max_length)
    if not pairs:
        raise DataError(f"--prefs {path}: every pair is longer than --max-length {max_length} tokens")
    return pairs, report, note


def completion_logps(model: Any, pairs: Sequence[dict[str, Any]], tokenizer: Any,
                     batch_size: int = 8) -> tuple[list[float], list[float]]:
    """Summed log-probs of the chosen and of the rejected answer (EOS included) given the prompt, per pair."""
    features = []
    for pair in pairs:
        for key in ("chosen_ids", "rejected_ids"):
            ids = pair["prompt_ids"] + pair[key]
            features.append({"input_ids": ids, "labels": [IGNORE_INDEX] * len(pair["prompt_ids"]) + pair[key]})
    sums = [logp for logp, _ in labelled_logps(model, features, tokenizer, batch_size)]
    return sums[0::2], sums[1::2]


def _share(values: Sequence[float]) -> float:
    return sum(1 for v in values if v > 0) / len(values) if values else 0.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def rewards(chosen: Sequence[float], rejected: Sequence[float], ref_chosen: Sequence[float],
            ref_rejected: Sequence[float], beta: float) -> list[float]:
    """β·((log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))) per pair: DPO's implicit reward margin."""
    return [beta * ((c - rc) - (r - rr)) for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected,
                                                                  strict=True)]


def score_model(model: Any, pairs: Sequence[dict[str, Any]], tokenizer: Any, *, beta: float,
                batch_size: int = 8) -> PrefScores:
    chosen, rejected = completion_logps(model, pairs, tokenizer, batch_size)
    diffs = [c - r for c, r in zip(chosen, rejected, strict=True)]
    scores = PrefScores(pairs=len(pairs), accuracy=_share(diffs), margin=_mean(diffs), reward_accuracy=None,
                        reward_margin=None, beta=beta, chosen_logps=chosen, rejected_logps=rejected)
    if hasattr(model, "disable_adapter"):  # a PeftModel: the base is the same weights with the adapter off
        with model.disable_adapter():
            scores.base_chosen_logps, scores.base_rejected_logps = completion_logps(model, pairs, tokenizer,
                                                                                    batch_size)
        margins = rewards(chosen, rejected, scores.base_chosen_logps, scores.base_rejected_logps, beta)
        scores.reward_accuracy, scores.reward_margin = _share(margins), _mean(margins)
    return scores


def score_prefs(loaded: Any, path: str, *, beta: float, batch_size: int, max_length: int) -> PrefScores:
    """Score a loaded model (model/loading.py LoadedModel) on a preference file."""
    pairs, report, note = load_pairs(path, loaded.tokenizer, eos_id=loaded.eos_token_id, max_length=max_length)
    scores = score_model(loaded.model, pairs, loaded.tokenizer, beta=beta, batch_size=batch_size)
    scores.source, scores.data = f"{report.summary()} · {note}", report.to_dict()
    return scores


def relative_to(a: PrefScores, b: PrefScores, label: str) -> None:
    """A's implicit reward with B as the reference (the "before" side): set on A."""
    if a.pairs != b.pairs:  # another tokenizer dropped other rows as too long: no pair-by-pair comparison
        return
    margins = rewards(a.chosen_logps, a.rejected_logps, b.chosen_logps, b.rejected_logps, a.beta)
    a.vs_label, a.vs_accuracy, a.vs_margin = label, _share(margins), _mean(margins)


def table_rows(reports: Sequence[Any]) -> list[tuple[str, list[str]]]:
    """The preference rows of `mechuri eval`'s table (empty when no model was scored)."""
    scores = [getattr(r, "prefs", None) for r in reports]
    if all(s is None for s in scores):
        return []

    def show(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    beta = next(s.beta for s in scores if s is not None)
    vs = next((s.vs_label for s in scores if s is not None and s.vs_label), None)
    rows = [
        ("pref pairs scored", [str(s.pairs) if s else "n/a" for s in scores]),
        ("prefers chosen (own log-prob)", [show(s.accuracy, ".0%") if s else "n/a" for s in scores]),
        ("mean log-prob margin (nats)", [show(s.margin, "+.3f") if s else "n/a" for s in scores]),
        (f"DPO reward acc. vs base (β {beta})", [show(s.reward_accuracy, ".0%") if s else "n/a" for s in scores]),
        ("DPO reward margin vs base", [show(s.reward_margin, "+.4f") if s else "n/a" for s in scores]),
    ]
    if vs:
        rows += [(f"DPO reward acc. vs {vs}", [show(s.vs_accuracy, ".0%") if s else "n/a" for s in scores]),
                 (f"DPO reward margin vs {vs}", [show(s.vs_margin, "+.4f") if s else "n/a" for s in scores])]
    return rows
