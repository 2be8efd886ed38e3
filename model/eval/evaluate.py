"""`mechuri eval`: how good is an adapter on held-out rows?

Three kinds of numbers, for each model compared (adapter vs base, two adapters, or two base models):
- eval loss and perplexity on the answer tokens (EOS included), tokenized exactly as in training;
- generation checks: each held-out question goes through the real serving path (`build_prompt` → `Generator`) with a
  fixed seed per question, and the answers are checked for ending their turn (EOS, or the "###" stop text), length,
  Hangul, naming a catalog dish, and repeating themselves;
- what a reader sees (model/eval/reader.py, model/food/fit.py): answers with a broken character `�`, answers whose
  dish fits what the question asked for (when it asks for something the catalog can check: 매운, 해장, 채식, …), and
  answers that use only words of the training text (a word-salad proxy; needs a corpus). With `--retry`, each question
  also gets a "다른 거" answer (the first answer's dishes turned down, as the bot's prompt and phrase ban do it), counted
  apart from the first answers.

This is the model alone: the bot's answer-time resampling (bot/service/conversation.py) is not applied here.
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

from model.eval.preference import relative_to, score_prefs, table_rows
from model.eval.reader import corpus_words, is_broken, model_corpus, unknown_words
from model.food.dishes import DishCatalog
from model.food.fit import answer_fits, wishes_in
from model.loading import load_model
from model.prompt import build_prompt
from model.training.scores import answer_loss
from model.training.sft_data import AlpacaRow, DataError, DataReport, read_alpaca_jsonl, tokenize_rows
from model.types import GenerationRequest

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
    compare_model: str | None = None  # a second base model (e.g. an older demo), side by side
    retry: bool = False  # also a "다른 거" answer per question
    corpus: list[str] | None = None  # training files for the word-salad proxy (default: the model's own, if any)
    prefs: str | None = None  # held-out preference pairs (model/eval/preference.py)
    beta: float = 0.1  # for the DPO implicit reward of --prefs


@dataclass
class AnswerCheck:
    question: str
    answer: str
    seed: int
    finish_reason: str
    new_tokens: int
    dishes: list[str] | None
    repeats: bool
    kind: str = "first"  # "first" | "retry" ("다른 거")
    wishes: list[str] = field(default_factory=list)  # what the question asks for that the catalog can check
    fits: bool | None = None  # None: nothing to check
    broken: bool = False  # contains U+FFFD
    unknown_words: list[str] | None = None  # None: no corpus
    turned_down: list[str] = field(default_factory=list)  # "다른 거": the first answer's dishes
    names_turned_down: bool = False


@dataclass
class ReaderStats:
    """What a reader sees, over one kind of answer (first or "다른 거")."""

    answers: int
    broken_share: float
    fit_checked: int  # answers to questions with a checkable wish
    fit_share: float | None
    known_words_share: float | None  # None: no corpus
    turned_down_share: float | None = None  # "다른 거" only: names a dish the user turned down


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
    first: ReaderStats | None = None
    retry: ReaderStats | None = None
    checks: list[AnswerCheck] = field(default_factory=list)
    prefs: Any = None  # model.eval.preference.PrefScores with --prefs


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
        return DishCatalog.load()
    except (OSError, ValueError):
        return None


def question_wishes(path: str | Path) -> dict[int, list[str]]:
    """The "wishes" a held-out file states per line (data/demo_eval_questions.jsonl does); lines without are absent."""
    found: dict[int, list[str]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("wishes"), list):
            found[number] = [str(w) for w in row["wishes"]]
    return found


async def _generate_all(generator: Any, requests: list[Any]) -> list[Any]:
    results = []
    chunk = max(1, getattr(generator, "max_batch_size", 8))  # never more than the queue takes at once
    for start in range(0, len(requests), chunk):
        results += await asyncio.gather(*(generator.generate(r) for r in requests[start:start + chunk]))
    return results


async def generation_checks(generator: Any, rows: Sequence[AlpacaRow], config: EvalConfig, catalog: Any,
                            wishes: dict[int, list[str]] | None = None,
                            known: frozenset[str] | None = None) -> list[AnswerCheck]:
    def request(row: AlpacaRow, seed: int, turned_down: Sequence[str] = ()) -> Any:
        built = build_prompt([], row.instruction, context=row.input or None, excluded_dishes=turned_down,
                             tokenizer=generator.tokenizer, budget=generator.max_context - config.max_new_tokens)
        avoid = tuple(s for name in turned_down for s in (catalog[name].spellings if catalog else (name,)))
        return GenerationRequest(
            prompt=built.text, seed=seed, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
            top_p=config.top_p, repetition_penalty=config.repetition_penalty, avoid=avoid)

    # The file's own "wishes" when it states them, else what model/food/fit.py reads in the question.
    stated = wishes or {}
    asked = [stated[row.line] if row.line in stated else list(wishes_in(row.instruction)) for row in rows]

    def check(row: AlpacaRow, res: Any, wanted: list[str], kind: str, turned_down: Sequence[str] = ()) -> AnswerCheck:
        dishes = catalog.names_in(res.text) if catalog is not None else None
        fits = None
        if wanted and catalog is not None:
            fits = bool(answer_fits(catalog, res.text, wanted))
        return AnswerCheck(
            question=row.instruction, answer=res.text, seed=res.seed, finish_reason=res.finish_reason,
            new_tokens=res.new_tokens, dishes=dishes, repeats=repeats_sentence(res.text), kind=kind,
            wishes=wanted, fits=fits, broken=is_broken(res.text),
            unknown_words=unknown_words(res.text, known) if known is not None else None,
            turned_down=list(turned_down), names_turned_down=bool(set(dishes or ()) & set(turned_down)))

    firsts = await _generate_all(generator, [request(row, config.seed + i) for i, row in enumerate(rows)])
    checks = [check(row, res, w, "first") for row, res, w in zip(rows, firsts, asked, strict=True)]
    if config.retry:
        turned = [c.dishes or [] for c in checks]
        retries = await _generate_all(generator, [request(row, config.seed + 100_000 + i, turned[i])
                                                  for i, row in enumerate(rows)])
        checks += [check(row, res, w, "retry", t) for row, res, w, t in zip(rows, retries, asked, turned, strict=True)]
    return checks


def reader_stats(checks: Sequence[AnswerCheck]) -> ReaderStats | None:
    if not checks:
        return None
    n = len(checks)
    fitted = [c.fits for c in checks if c.fits is not None]
    known = [not c.unknown_words for c in checks if c.unknown_words is not None]
    retry = checks[0].kind == "retry"
    return ReaderStats(
        answers=n, broken_share=sum(c.broken for c in checks) / n, fit_checked=len(fitted),
        fit_share=sum(fitted) / len(fitted) if fitted else None,
        known_words_share=sum(known) / len(known) if known else None,
        turned_down_share=sum(c.names_turned_down for c in checks) / n if retry else None,
    )


def summarise(label: str, adapter: str | None, version: str, loss: float | None, loss_examples: int,
              all_checks: list[AnswerCheck]) -> ModelReport:
    checks = [c for c in all_checks if c.kind == "first"]  # today's columns: first answers, as before
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
        repeat_share=sum(c.repeats for c in checks) / n, first=reader_stats(checks),
        retry=reader_stats([c for c in all_checks if c.kind == "retry"]), checks=all_checks,
    )


def evaluate_model(config: EvalConfig, adapter: str | None, label: str, rows: Sequence[AlpacaRow],
                   report: DataReport, catalog: Any, base: str | None = None) -> ModelReport:
    from model.serving.generator import Generator  # torch

    base = base or config.base
    known = corpus_words(config.corpus) if config.corpus else model_corpus(base)
    wishes = question_wishes(config.data)
    loaded = load_model(base, adapter=adapter, quantization=config.quantization, device=config.device)
    # A fresh report per model: the same rows are dropped each time, so only the first one is kept for display.
    examples = tokenize_rows(loaded.tokenizer, rows, report, eos_id=loaded.eos_token_id, max_length=config.max_length)
    loss = answer_loss(loaded.model, examples, loaded.tokenizer, config.batch_size)
    prefs = None
    if config.prefs:
        prefs = score_prefs(loaded, config.prefs, beta=config.beta, batch_size=config.batch_size,
                            max_length=config.max_length)

    async def run(loaded: Any) -> list[AnswerCheck]:
        generator = Generator(loaded)
        try:
            return await generation_checks(generator, rows, config, catalog, wishes, known)
        finally:
            await generator.close()

    checks = asyncio.run(run(loaded))
    result = summarise(label, adapter, loaded.adapter.version, loss, len(examples), checks)
    result.prefs = prefs
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
        raise DataError(f"{config.data} holds no usable rows: each line must be a JSON object with non-empty "
                        "\"instruction\" and \"output\"")
    catalog = load_catalog()
    first = f"A: {_name(config.adapter)}" if not config.compare_model else f"A: {Path(config.base).name}"
    variants: list[tuple[str, str | None, str]] = [(config.base, config.adapter, first)]
    if config.compare_adapter:
        variants.append((config.base, config.compare_adapter, f"B: {_name(config.compare_adapter)}"))
    elif config.compare_base:
        variants.append((config.base, None, "B: base"))
    elif config.compare_model:
        variants.append((config.compare_model, None, f"B: {Path(config.compare_model).name}"))
    reports = []
    for i, (base, adapter, label) in enumerate(variants):
        # Row drops are the same for every model with one tokenizer; count them once.
        scratch = report if i == 0 else DataReport(path=report.path)
        reports.append(evaluate_model(config, adapter, label, rows, scratch, catalog, base))
    if len(reports) == 2 and reports[0].prefs is not None:  # A with the "before" side B as the DPO reference
        relative_to(reports[0].prefs, reports[1].prefs, reports[1].label.split(":")[0])
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
    rows += table_rows(reports)
    for kind, title in (("first", "first answers"), ("retry", "다른 거 answers")):
        stats = [getattr(r, kind) for r in reports]
        if all(s is None for s in stats):
            continue
        rows += [
            (f"{title}: with broken char �", [pct(s.broken_share) if s else "n/a" for s in stats]),
            (f"{title}: fit the request", [f"{pct(s.fit_share)} of {s.fit_checked}" if s else "n/a" for s in stats]),
            (f"{title}: only training words", [pct(s.known_words_share) if s else "n/a" for s in stats]),
        ]
        if kind == "retry":
            rows.append((f"{title}: name a turned-down dish", [pct(s.turned_down_share) if s else "n/a"
                                                                for s in stats]))
    header = ("metric", [r.label for r in reports])
    first = max(len(k) for k, _ in [header, *rows])
    widths = [max(len(header[1][i]), *(len(v[i]) for _, v in rows)) for i in range(len(reports))]

    def line(key: str, values: list[str]) -> str:
        return "  ".join([f"{key:<{first}}", *(f"{v:>{w}}" for v, w in zip(values, widths, strict=True))])

    rule = "─" * (first + sum(w + 2 for w in widths))
    return "\n".join([line(*header), rule, *(line(k, v) for k, v in rows)])
