"""Tiny Polyglot-shaped GPT-NeoX models, built offline, for tests, benchmarks and anyone trying the code.

A tiny model goes through exactly the code path of KoAlpaca-Polyglot-5.8B: the same architecture (rotary_pct 0.25,
parallel residual, untied embeddings), a Korean byte-level BPE tokenizer, and `<|endoftext|>` (id 2) as EOS. Like
Polyglot's config, the config's `eos_token_id` is deliberately wrong (0): loaders must read EOS from the tokenizer.
With `train_steps` the model is fitted on a few food questions so its answers are worth reading.

Two flavours:
- "tiny": a separate `<|pad|>` token (id 1), the easy case.
- "polyglot": what the real tokenizer does where bugs hide: no pad token at all (so pad falls back to EOS), the
  extra special tokens `<|sep|>`, `<|acc|>`, `<|tel|>`, `<|rrn|>`, and an embedding matrix with rows past the
  tokenizer (the real one has 30,080 rows for 30,003 tokens).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from model.prompt import END_OF_TEXT, format_example

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The Korean text the tokenizer learns from: data written by us and shipped in the repository.
CORPUS_FILES = (
    REPO_ROOT / "data" / "mechuri_starter.jsonl",
    REPO_ROOT / "dataset_builder" / "seed_tasks.jsonl",
    REPO_ROOT / "data" / "dishes.csv",
)
UNK, PAD, SEP = "<|unk|>", "<|pad|>", "<|sep|>"
SPECIAL_TOKENS = [UNK, PAD, END_OF_TEXT]  # ids 0, 1, 2: EOS is id 2, as in Polyglot-ko
# The Polyglot flavour: no pad; Polyglot-ko's masks for personal data come after the BPE vocabulary.
POLYGLOT_SPECIAL_TOKENS = [UNK, SEP, END_OF_TEXT]
POLYGLOT_EXTRA_TOKENS = ["<|acc|>", "<|tel|>", "<|rrn|>"]
FLAVOURS = ("tiny", "polyglot")

# A few answers in the bot's voice, always part of the corpus, and what `train_steps` fits.
TINY_QA: tuple[tuple[str, str, str], ...] = (
    ("매운 요리 추천해줘", "", "매운 게 당길 때는 얼큰한 김치찌개 어때요? 돼지고기를 넣고 푹 끓이면 밥 한 공기가 금방이에요."),
    ("비 오는 날 뭐 먹지", "", "비 오는 날에는 바삭한 해물파전 어때요? 따뜻한 칼국수를 곁들여도 좋아요."),
    ("해장 추천", "", "속 풀기에는 콩나물국밥이 좋아요. 시원한 국물이 쓰린 속을 달래 줘요."),
    ("아침에 간단히 먹을 거", "", "바쁜 아침에는 계란 토스트 어때요? 5분이면 만들 수 있어요."),
    ("저녁 뭐 먹지", "", "오늘 저녁은 제육볶음 어때요? 매콤달콤해서 밥이랑 잘 어울려요."),
    ("다른 거 추천해줘", "이미 거절한 메뉴: 김치찌개", "그럼 담백한 된장찌개는 어때요? 두부와 애호박을 넣으면 순하고 구수해요."),
    ("더운 날 시원한 거", "", "더운 날에는 시원한 물냉면이 최고예요. 새콤한 육수가 더위를 식혀 줘요."),
    ("야식 추천해줘", "", "늦은 밤에는 바삭한 후라이드치킨 어때요? 맥주 한 잔과 잘 어울려요."),
)


def korean_corpus(extra_files: Sequence[Path] = ()) -> list[str]:
    """Sentences from the bundled data files that exist, plus the built-in answers."""
    lines: list[str] = []
    for question, context, answer in TINY_QA:
        lines += [question, context, answer]
    for path in (*CORPUS_FILES, *extra_files):
        if not path.exists():
            continue
        for raw in path.read_text(encoding="utf-8").splitlines():
            lines.extend(_texts_of_line(raw, path.suffix))
    return [line for line in lines if line.strip()]


def _texts_of_line(raw: str, suffix: str) -> Iterator[str]:
    if suffix != ".jsonl":
        yield raw.replace(",", " ").replace("|", " ")
        return
    try:
        row = json.loads(raw)
    except json.JSONDecodeError:
        return
    for key in ("instruction", "input", "output"):
        if isinstance(row.get(key), str):
            yield row[key]
    for instance in row.get("instances") or []:
        yield from (v for v in instance.values() if isinstance(v, str))


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000, flavour: str = "tiny"):
    """A byte-level BPE tokenizer in the Polyglot style, wrapped as a transformers fast tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if flavour not in FLAVOURS:
        raise ValueError(f"unknown tiny-model flavour {flavour!r}: choose {' or '.join(FLAVOURS)}")
    polyglot = flavour == "polyglot"
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=POLYGLOT_SPECIAL_TOKENS if polyglot else SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(texts), trainer=trainer)
    if not polyglot:
        return PreTrainedTokenizerFast(
            tokenizer_object=core, unk_token=UNK, pad_token=PAD, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT
        )
    core.add_special_tokens([AddedToken(t, special=True) for t in POLYGLOT_EXTRA_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNK, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT,
        extra_special_tokens=[SEP, *POLYGLOT_EXTRA_TOKENS],
    )


def tiny_config(vocab_size: int, *, hidden: int = 128, layers: int = 2, heads: int = 4, max_positions: int = 1024,
                pad_token_id: int | None = 1):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        rotary_pct=0.25,
        max_position_embeddings=max_positions,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,  # the Polyglot quirk, on purpose: the real EOS is the tokenizer's <|endoftext|> (id 2)
        pad_token_id=pad_token_id,
    )


def build_tiny_model(
    out_dir: Path | str,
    *,
    train_steps: int = 0,
    seed: int = 0,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 4000,
    qa: Sequence[tuple[str, str, str]] = TINY_QA,
    flavour: str = "tiny",
) -> Path:
    """Write a tiny GPT-NeoX model and its tokenizer to `out_dir` as a `save_pretrained` folder."""
    import torch
    from transformers import GPTNeoXForCausalLM, set_seed

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    tokenizer = train_tokenizer(korean_corpus(), vocab_size=vocab_size, flavour=flavour)
    # Round the embedding up to a multiple of 64, as Polyglot does (30,080 = 470 × 64); the Polyglot flavour always
    # has rows past the tokenizer, which nothing may ever sample.
    extra = 1 if flavour == "polyglot" else 0
    padded_vocab = -(-(len(tokenizer) + extra) // 64) * 64
    config = tiny_config(padded_vocab, hidden=hidden, layers=layers, heads=heads,
                         pad_token_id=None if flavour == "polyglot" else 1)
    model = GPTNeoXForCausalLM(config)
    if train_steps:
        fit_examples(model, tokenizer, qa, steps=train_steps)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("tiny model: %s (%.2f M parameters)", out, sum(p.numel() for p in model.parameters()) / 1e6)
    del torch
    return out


def fit_examples(model, tokenizer, qa: Sequence[tuple[str, str, str]], *, steps: int, lr: float = 3e-3) -> float:
    """Fit (question, context, answer) rows in the KoAlpaca format: just enough for a tiny model to learn it."""
    texts = ["".join(format_example(question, context, answer)) for question, context, answer in qa]
    return fit_texts(model, tokenizer, texts, steps=steps, lr=lr)


def fit_texts(model, tokenizer, texts: Sequence[str], *, steps: int, lr: float = 3e-3) -> float:
    """Full fine-tuning on whole sequences, each ending in EOS. Returns the last loss."""
    import torch

    eos = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    rows = [[*tokenizer.encode(text, add_special_tokens=False), eos] for text in texts]
    width = max(len(r) for r in rows)
    # Padding positions are masked and carry no label, so any id does; a pad-less tokenizer pads with EOS.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = torch.full((len(rows), width), pad)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_value = float("nan")
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss_value = loss.item()
    model.eval()
    return loss_value


def make_tiny_adapter(
    base_dir: Path | str,
    out_dir: Path | str,
    *,
    seed: int = 0,
    r: int = 4,
    target_modules: Sequence[str] = ("query_key_value",),
) -> Path:
    """A LoRA adapter for a tiny base with random (non-zero) weights, so that it visibly changes the output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(target_modules), init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(out_dir)
    # peft records the base it was made for; keep the path as given so the folder stays portable.
    adapter_config = Path(out_dir) / "adapter_config.json"
    data = json.loads(adapter_config.read_text())
    data["base_model_name_or_path"] = str(base_dir)
    adapter_config.write_text(json.dumps(data, indent=2))
    return Path(out_dir)
