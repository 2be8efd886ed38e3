"""The offline demo model: a small GPT-NeoX trained from scratch on Mechuri's own bundled data.

A newcomer has no GPU, no KoAlpaca weights and maybe no model hub. This builds, in a few minutes on two CPU cores, a
model that answers in the bot's voice, and caches it under the user's cache folder. It is rebuilt only when the data or
the recipe changes: the cache key is a hash of both.

Besides the Alpaca rows themselves it trains on three kinds of rows made from them and from the dish catalog:
- rows made from the catalog's tags (model/demo/rows.py): a question that asks for something the catalog can check
  (매운, 해장, 채식, …) and an answer that names a dish that fits it, so the model learns what a question asks for;
- "다른 거" rows: the same question, the dishes of one answer as turned down (in the exact words the bot's prompt uses),
  and another answer to a question with the same wishes (model/food/fit.py) as the target, so a retry moves to a different
  dish and stays on the topic;
- two-turn conversations, so the history that the bot puts in front of a question is not new to the model.

The build also writes `training_words.txt`, the words of everything it trained on, for `mechuri eval`'s word-salad
column. DEMO_SAMPLING holds the sampling settings `mechuri chat --demo` uses for this small model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.demo.rows import dish_pools, tag_rows
from model.demo.tiny import tiny_config, train_tokenizer
from model.eval.reader import TRAINING_WORDS, words
from model.food.dishes import DishCatalog
from model.food.fit import wishes_in
from model.prompt import END_OF_TEXT, PromptTurn, build_prompt, format_example
from model.training.sft_data import IGNORE_INDEX, answer_collator

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_FILES = (REPO_ROOT / "data" / "mechuri_starter.jsonl", REPO_ROOT / "dataset_builder" / "seed_tasks.jsonl")
# What else decides the training rows: the catalog, and the code that writes rows from its tags and reads wishes.
MODEL = REPO_ROOT / "model"
KEY_FILES = (REPO_ROOT / "data" / "dishes.csv", MODEL / "demo" / "rows.py", MODEL / "food" / "fit.py",
             MODEL / "food" / "morph.py")
RECIPE_VERSION = 6  # bump when the code below changes what gets built
# A small model trained from scratch wanders at KoAlpaca's 0.7 / 0.9: sample it more conservatively. Not part of the
# recipe (changing these does not rebuild the model); measured in docs/benchmarks.md ("Demo model: answers a reader
# can trust").
DEMO_SAMPLING = {"temperature": 0.5, "top_p": 0.8, "repetition_penalty": 1.1}
# A sample of the demo model costs a tenth of a second, so its chat may draw more of them before it keeps one that
# misses the request (the service's default is 3 more, sized for KoAlpaca's seconds per answer).
DEMO_RESAMPLES = 5


@dataclass(frozen=True)
class DemoRecipe:
    hidden: int = 160
    layers: int = 3
    heads: int = 4
    vocab_size: int = 6000  # common words as one token: fewer invented blends of word pieces
    max_positions: int = 512
    max_length: int = 144
    batch_size: int = 12
    # Every build runs all of its steps, however busy the machine: the same recipe gives the same model everywhere
    # (a wall-clock cap once decided how much it learned). Sized to finish within 6 minutes on an idle 2-core machine
    # (docs/benchmarks.md, "Demo build: the same model on every machine (issue 24)").
    steps: int = 1400
    lr: float = 2e-3
    warmup: int = 60
    weight_decay: float = 0.05
    retry_rows_per_row: int = 1
    conversation_rows: int = 150
    tag_rows_per_wish: int = 70  # first answers per wish, from the catalog's tags
    tag_retry_rows_per_wish: int = 50  # "다른 거" answers per wish
    tag_pool: int = 12  # dishes per wish those rows name (the ones our data names most)
    seed: int = 0


# What the CI end-to-end test uses: the same code path, a fraction of the compute.
# Measured: names a catalog dish in 34 of 40 sampled answers (the 160-step version: 23 of 40), in 37 s.
QUICK_RECIPE = DemoRecipe(hidden=128, layers=2, vocab_size=4000, steps=600, batch_size=12, conversation_rows=60,
                          tag_rows_per_wish=30, tag_retry_rows_per_wish=15)


def default_cache_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mechuri")) / "demo"


def read_rows(files: tuple[Path, ...] = DATA_FILES) -> list[dict[str, str]]:
    """Alpaca rows from the starter dataset and the seed tasks' instances. Bad lines are skipped and logged."""
    rows: list[dict[str, str]] = []
    for path in files:
        if not path.exists():
            log.warning("demo data file %s is missing; building without it", path)
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d is not valid JSON; skipped", path, number)
                continue
            if "instances" in row:
                for instance in row["instances"]:
                    rows.append({"instruction": row["instruction"], "input": instance.get("input", ""),
                                 "output": instance["output"]})
            elif row.get("instruction") and row.get("output"):
                rows.append({"instruction": row["instruction"], "input": row.get("input", ""), "output": row["output"]})
    if not rows:
        raise FileNotFoundError("no demo data found: data/mechuri_starter.jsonl and dataset_builder/seed_tasks.jsonl "
                                "are missing. Run from a full checkout of the repository")
    return rows


def cache_key(recipe: DemoRecipe, files: tuple[Path, ...] = DATA_FILES + KEY_FILES) -> str:
    digest = hashlib.sha256(json.dumps({**asdict(recipe), "version": RECIPE_VERSION}, sort_keys=True).encode())
    for path in files:
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def demo_dir(recipe: DemoRecipe = DemoRecipe(), cache_root: Path | None = None) -> Path:
    return (cache_root or default_cache_root()) / f"model-{cache_key(recipe)}"


def is_built(path: Path) -> bool:
    return (path / "demo.json").exists()


def training_pairs(rows: list[dict[str, str]], recipe: DemoRecipe, catalog: Any) -> list[tuple[str, str]]:
    """(prompt, answer) pairs; the loss covers the answer (and its EOS) only."""
    rng = random.Random(recipe.seed)
    pairs = [format_example(r["instruction"], r["input"], r["output"]) for r in rows]
    # "다른 거" on a row is answered by another row that asks for the same things, so a retry keeps the topic.
    by_wishes: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for r in rows:
        if not r["input"] and catalog.names_in(r["output"]):
            by_wishes.setdefault(wishes_in(r["instruction"]), []).append(r)
    for row in rows:
        turned_down = catalog.names_in(row["output"])
        same = by_wishes.get(wishes_in(row["instruction"]), [])
        if not turned_down or len(same) < 2:
            continue
        for _ in range(recipe.retry_rows_per_row):
            other = rng.choice(same)
            if set(catalog.names_in(other["output"])) & set(turned_down):
                continue
            question = row["instruction"] if rng.random() < 0.8 else rng.choice(["다른 거 추천해줘", "다른 거"])
            prompt = build_prompt([], question, context=row["input"] or None, excluded_dishes=turned_down).text
            pairs.append((prompt, format_example("", "", other["output"])[1]))
    familiar = Counter(name for r in rows for name in catalog.names_in(r["output"]))
    pools = dish_pools(list(catalog), familiar, recipe.tag_pool)
    for tag in tag_rows(list(catalog), rng, recipe.tag_rows_per_wish, recipe.tag_retry_rows_per_wish, pools):
        prompt = build_prompt([], tag.question, excluded_dishes=tag.turned_down).text
        pairs.append((prompt, format_example("", "", tag.answer)[1]))
    for _ in range(recipe.conversation_rows):
        first, second = rng.sample(rows, 2)
        history = [PromptTurn(first["instruction"], first["output"], first["input"] or None)]
        prompt = build_prompt(history, second["instruction"], context=second["input"] or None).text
        pairs.append((prompt, format_example("", "", second["output"])[1]))
    rng.shuffle(pairs)
    return pairs


def length_grouped_batches(lengths: list[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Batches of rows of similar length, in random order: padding a 30-token row to 160 wastes most of a step."""
    rng = random.Random(seed)
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = rng.sample(range(len(lengths)), len(lengths))
        window = batch_size * 32
        epoch: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lengths.__getitem__)
            epoch += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch)
        batches += epoch
    return batches[:steps]


class ThreadPicker:
    """Two OpenMP threads on two cores that other programs also use can run a step ten times slower than one thread
    (measured: 1.58 s against 0.16 s a step on a loaded 2-core box); on idle cores two are faster. So every `every`
    steps, time a few steps with each choice and keep the faster one until the next probe."""

    def __init__(self, most: int, every: int = 200, probe: int = 4) -> None:
        self.most, self.every, self.probe = most, every, probe
        self.current = most
        self.history: list[int] = []  # the choice after each probe
        self._times: dict[int, list[float]] = {}

    def _probing(self, step: int) -> int | None:
        """The thread count this step tries, or None outside a probe window."""
        offset = step % self.every
        if self.most <= 1 or offset >= 2 * self.probe:
            return None
        return 1 if offset < self.probe else self.most

    def for_step(self, step: int) -> int:
        return self._probing(step) or self.current

    def record(self, step: int, seconds: float) -> None:
        tried = self._probing(step)
        if tried is None:
            return
        if step % self.probe:  # the first step after a switch warms the new thread pool up: not counted
            self._times.setdefault(tried, []).append(seconds)
        if step % self.every == 2 * self.probe - 1:
            self.current = min(self._times, key=lambda n: sorted(self._times[n])[len(self._times[n]) // 2])
            self.history.append(self.current)
            self._times = {}


def build_demo_model(
    out_dir: Path | None = None,
    *,
    recipe: DemoRecipe = DemoRecipe(),
    progress: bool = True,
    cache_root: Path | None = None,
) -> Path:
    """Build (or reuse) the demo model; returns its folder. Builds into a temporary folder, then renames it."""
    out = out_dir or demo_dir(recipe, cache_root)
    if is_built(out):
        return out
    from transformers import GPTNeoXForCausalLM, set_seed

    started = time.perf_counter()
    set_seed(recipe.seed)
    rows = read_rows()
    catalog = DishCatalog.load()
    pairs = training_pairs(rows, recipe, catalog)
    tokenizer = train_tokenizer([p + a for p, a in pairs] + [dish.name for dish in catalog],
                                vocab_size=recipe.vocab_size)
    features = encode_pairs(tokenizer, pairs, recipe.max_length)
    config = tiny_config(-(-len(tokenizer) // 64) * 64, hidden=recipe.hidden, layers=recipe.layers,
                         heads=recipe.heads, max_positions=recipe.max_positions)
    model = GPTNeoXForCausalLM(config)
    fit = fit_demo(model, tokenizer, features, recipe, progress)
    card = {
        "recipe": asdict(recipe), "recipe_version": RECIPE_VERSION, "cache_key": out.name,
        "rows": len(rows), "training_sequences": len(pairs), "steps_done": fit.steps_done,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(fit.losses[-20:]) / max(len(fit.losses[-20:]), 1),
        "build_seconds": time.perf_counter() - started,
        "data_files": [str(p.relative_to(REPO_ROOT)) for p in DATA_FILES if p.exists()],
        "sampling": DEMO_SAMPLING, "threads_chosen": fit.threads_chosen,
        "seconds_per_step": fit.seconds / max(fit.steps_done, 1),
    }
    save_demo(out, model, tokenizer, pairs, card)
    log.info("demo model built in %.0f s: %s", card["build_seconds"], out)
    return out


def encode_pairs(tokenizer: Any, pairs: list[tuple[str, str]], max_length: int) -> list[dict[str, list[int]]]:
    """Token ids and answer-only labels (the answer and its EOS), as the collator takes them."""
    eos = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    features = []
    for prompt, answer in pairs:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        answer_ids = [*tokenizer.encode(answer, add_special_tokens=False), eos]
        # Keep the answer whole (it carries the EOS the model must learn); cut the oldest prompt tokens if needed.
        prompt_ids = prompt_ids[-max(max_length - len(answer_ids), 8):]
        features.append({"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids})
    return features


def demo_lr(recipe: DemoRecipe, step: int) -> float:
    """Linear warm-up, then a cosine down to a tenth over the recipe's steps."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    done = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))


@dataclass
class DemoFit:
    losses: list[float]
    steps_done: int
    threads_chosen: list[int]
    seconds: float


def fit_demo(model: Any, tokenizer: Any, features: list[dict[str, list[int]]], recipe: DemoRecipe,
             progress: bool) -> DemoFit:
    """Train from scratch for all of the recipe's steps, on length-grouped batches. The bar (a terminal) or a log line
    every tenth of the steps (a log file) shows the steps done and an estimate of the time left."""
    import torch
    from tqdm.auto import tqdm

    collate = answer_collator(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                  betas=(0.9, 0.95))
    batches = length_grouped_batches([len(f["input_ids"]) for f in features], recipe.batch_size, recipe.steps,
                                     recipe.seed)
    model.train()
    # disable=None: a bar on a terminal (tqdm's own estimate of the time left); in a log file, where every update
    # would be a new line, `_log_progress` writes one line per tenth instead.
    bar = tqdm(range(recipe.steps), desc="메추리 데모 모델 학습", unit="step", disable=None if progress else True,
               leave=False)
    log_every = max(recipe.steps // 10, 1) if progress and bar.disable else 0
    losses: list[float] = []
    threads = ThreadPicker(torch.get_num_threads())
    started = time.perf_counter()
    for step in bar:
        step_started = time.perf_counter()
        torch.set_num_threads(threads.for_step(step))
        for group in optimizer.param_groups:
            group["lr"] = demo_lr(recipe, step)
        loss = model(**collate([features[i] for i in batches[step]])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        threads.record(step, time.perf_counter() - step_started)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        if log_every and (step + 1) % log_every == 0:
            _log_progress(step + 1, recipe.steps, time.perf_counter() - started)
    bar.close()
    torch.set_num_threads(threads.most)
    model.eval()
    return DemoFit(losses, len(losses), threads.history, time.perf_counter() - started)


def _log_progress(done: int, total: int, elapsed: float) -> None:
    left = elapsed / done * (total - done)
    log.info("demo model: step %d of %d, about %d min %02d s left", done, total, left // 60, left % 60)


def save_demo(out: Path, model: Any, tokenizer: Any, pairs: list[tuple[str, str]], card: dict[str, Any]) -> None:
    """The model folder, its training words (for `mechuri eval`) and demo.json, written aside and then renamed."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    trained = sorted({w for prompt, answer in pairs for w in words(prompt + " " + answer)})
    (tmp / TRAINING_WORDS).write_text("\n".join(trained) + "\n", encoding="utf-8")
    (tmp / "demo.json").write_text(json.dumps(card, ensure_ascii=False, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def demo_info(path: Path) -> dict:
    return json.loads((path / "demo.json").read_text()) if is_built(path) else {}
