"""`mechuri eval`: how good is an adapter on held-out rows?

Two kinds of numbers, for each model compared:
- eval loss and perplexity on the answer tokens (EOS included), tokenized exactly as in training;
- generation checks: each held-out question goes through the real serving path (`build_prompt` → `Generator`) with a
  fixed seed per question, and the answers are checked for ending their turn (EOS, or the "###" stop text), length,
  Hangul, naming a catalog dish, and repeating themselves.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.sft_data import AlpacaRow, AnswerOnlyCollator, DataReport, Example, read_alpaca_jsonl, tokenize_rows

_SENTENCE_SPLIT = re.compile(r"[.!?。…\n]+")
_NOT_WORD = re.compile(r"[\W_]+")


@dataclass
class EvalConfig:
    base: str
    data: str
    adapter: str | None = None
    compare_adapter: str | None = None
    compare_base: bool = False
    limit: int | None = None
    quantization: str = "none"
    device: str | None = None
    seed: int = 0
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    batch_size: int = 8
    max_length: int = 1024
    json_out: str | None = None


@dataclass
class AnswerCheck:
    question: str
    answer: str
    seed: int
    finish_reason: str
    new_tokens: int
    dishes: list[str] | None
    repeats: bool


@dataclass
class ModelReport:
    label: str
    adapter: str | None
    adapter_version: str
    eval_loss: float | None
    perplexity: float | None
    loss_examples: int
    answers: int
    eos_share: float
    stop_share: float
    ended_share: float
    length_share: float
    mean_chars: float
    mean_tokens: float
    hangul_share: float
    dish_share: float | None  # None: no dish catalog
    repeat_share: float
    checks: list[AnswerCheck] = field(default_factory=list)


def answer_loss(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int = 8) -> float | None:
    """Token-weighted mean cross-entropy over the labelled (answer + EOS) tokens."""
    import torch
    import torch.nn.functional as F

    if not examples:
        return None
    collate = AnswerOnlyCollator(pad_id)
    device = next(p for p in model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate([e.as_features() for e in examples[start:start + batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                     reduction="sum").item()
            count += int((labels != -100).sum())
    model.train(was_training)
    return total / count if count else None


def hangul_counts(text: str) -> tuple[int, int]:
    """(Hangul characters, non-space characters)."""
    letters = [ch for ch in text if not ch.isspace()]
    return sum(1 for ch in letters if "가" <= ch <= "힣" or "ㄱ" <= ch <= "ㆎ"), len(letters)


def repeats_sentence(text: str) -> bool:
    """A sentence said twice, or a three-word phrase said three times (loops often have no punctuation)."""
    sentences = [_NOT_WORD.sub("", s) for s in _SENTENCE_SPLIT.split(text)]
    sentences = [s for s in sentences if len(s) >= 4]
    if len(sentences) != len(set(sentences)):
        return True
    words = text.split()
    phrases = Counter(tuple(words[i:i + 3]) for i in range(len(words) - 2))
    return any(n >= 3 for n in phrases.values())


def load_catalog() -> Any:
    try:
        from model.dishes import DishCatalog

        return DishCatalog.load()
    except (ImportError, OSError, ValueError):
        return None


async def generation_checks(generator: Any, rows: Sequence[AlpacaRow], config: EvalConfig,
                            catalog: Any) -> list[AnswerCheck]:
    from model.prompt import build_prompt
    from model.types import GenerationRequest

    requests = []
    for i, row in enumerate(rows):
        built = build_prompt([], row.instruction, context=row.input or None, tokenizer=generator.tokenizer,
                             budget=generator.max_context - config.max_new_tokens)
        requests.append(GenerationRequest(
            prompt=built.text, seed=config.seed + i, max_new_tokens=config.max_new_tokens,
            temperature=config.temperature, top_p=config.top_p, repetition_penalty=config.repetition_penalty))
    results = []
    chunk = max(1, getattr(generator, "max_batch_size", 8))  # never more than the queue takes at once
    for start in range(0, len(requests), chunk):
        results += await asyncio.gather(*(generator.generate(r) for r in requests[start:start + chunk]))
    return [
        AnswerCheck(question=row.instruction, answer=res.text, seed=res.seed, finish_reason=res.finish_reason,
                    new_tokens=res.new_tokens, dishes=catalog.names_in(res.text) if catalog is not None else None,
                    repeats=repeats_sentence(res.text))
        for row, res in zip(rows, results, strict=True)
    ]


def summarise(label: str, adapter: str | None, version: str, loss: float | None, loss_examples: int,
              checks: list[AnswerCheck]) -> ModelReport:
    n = max(len(checks), 1)
    reasons = Counter(c.finish_reason for c in checks)
    hangul = [hangul_counts(c.answer) for c in checks]
    letters = sum(t for _, t in hangul)
    with_dish = [c for c in checks if c.dishes]
    return ModelReport(
        label=label, adapter=adapter, adapter_version=version, eval_loss=loss,
        perplexity=math.exp(min(loss, 50.0)) if loss is not None else None, loss_examples=loss_examples,
        answers=len(checks), eos_share=reasons["eos"] / n, stop_share=reasons["stop"] / n,
        ended_share=(reasons["eos"] + reasons["stop"]) / n, length_share=reasons["length"] / n,
        mean_chars=sum(len(c.answer) for c in checks) / n, mean_tokens=sum(c.new_tokens for c in checks) / n,
        hangul_share=sum(h for h, _ in hangul) / letters if letters else 0.0,
        dish_share=None if checks and checks[0].dishes is None else len(with_dish) / n,
        repeat_share=sum(c.repeats for c in checks) / n, checks=checks,
    )


def evaluate_model(config: EvalConfig, adapter: str | None, label: str, rows: Sequence[AlpacaRow],
                   report: DataReport, catalog: Any) -> ModelReport:
    from model.generator import Generator
    from model.loading import load_model

    loaded = load_model(config.base, adapter=adapter, quantization=config.quantization, device=config.device)
    # A fresh report per model: the same rows are dropped each time, so only the first one is kept for display.
    examples = tokenize_rows(loaded.tokenizer, rows, report, eos_id=loaded.eos_token_id, max_length=config.max_length)
    loss = answer_loss(loaded.model, examples, loaded.pad_token_id, config.batch_size)

    async def run(loaded: Any) -> list[AnswerCheck]:
        generator = Generator(loaded)
        try:
            return await generation_checks(generator, rows, config, catalog)
        finally:
            await generator.close()

    checks = asyncio.run(run(loaded))
    result = summarise(label, adapter, loaded.adapter.version, loss, len(examples), checks)
    del loaded
    gc.collect()
    _empty_cuda_cache()
    return result


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_eval(config: EvalConfig) -> tuple[list[ModelReport], DataReport]:
    rows, report = read_alpaca_jsonl(config.data)
    if config.limit is not None:
        rows = rows[: config.limit]
    if not rows:
        from model.sft_data import DataError

        raise DataError(f"{config.data} holds no usable rows: each line must be a JSON object with non-empty "
                        "\"instruction\" and \"output\"")
    catalog = load_catalog()
    variants: list[tuple[str | None, str]] = [(config.adapter, f"A: {_name(config.adapter)}")]
    if config.compare_adapter:
        variants.append((config.compare_adapter, f"B: {_name(config.compare_adapter)}"))
    elif config.compare_base:
        variants.append((None, "B: base"))
    reports = []
    for i, (adapter, label) in enumerate(variants):
        # Row drops are the same for every model (same tokenizer); count them once.
        scratch = report if i == 0 else DataReport(path=report.path)
        reports.append(evaluate_model(config, adapter, label, rows, scratch, catalog))
    if config.json_out:
        write_json(Path(config.json_out), config, reports, report)
    return reports, report


def _name(adapter: str | None) -> str:
    return Path(adapter).name if adapter else "base"


def write_json(path: Path, config: EvalConfig, reports: Sequence[ModelReport], report: DataReport) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": asdict(config), "data": report.to_dict(), "models": [asdict(r) for r in reports]}
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")


def format_table(reports: Sequence[ModelReport]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    def num(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    rows: list[tuple[str, list[str]]] = [
        ("adapter version", [r.adapter_version for r in reports]),
        ("eval loss (answer + EOS)", [num(r.eval_loss, ".4f") for r in reports]),
        ("perplexity", [num(r.perplexity, ".2f") for r in reports]),
        ("answers generated", [str(r.answers) for r in reports]),
        ("ended with EOS", [pct(r.eos_share) for r in reports]),
        ("ended at stop text ###", [pct(r.stop_share) for r in reports]),
        ("ended its turn (EOS or ###)", [pct(r.ended_share) for r in reports]),
        ("hit max_new_tokens", [pct(r.length_share) for r in reports]),
        ("mean answer length", [f"{r.mean_chars:.1f} chars / {r.mean_tokens:.1f} tok" for r in reports]),
        ("Hangul share", [pct(r.hangul_share) for r in reports]),
        ("names a catalog dish", [pct(r.dish_share) for r in reports]),
        ("repeats a sentence", [pct(r.repeat_share) for r in reports]),
    ]
    header = ("metric", [r.label for r in reports])
    first = max(len(k) for k, _ in [header, *rows])
    widths = [max(len(header[1][i]), *(len(v[i]) for _, v in rows)) for i in range(len(reports))]

    def line(key: str, values: list[str]) -> str:
        return "  ".join([f"{key:<{first}}", *(f"{v:>{w}}" for v, w in zip(values, widths, strict=True))])

    rule = "─" * (first + sum(w + 2 for w in widths))
    return "\n".join([line(*header), rule, *(line(k, v) for k, v in rows)])
