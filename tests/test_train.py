"""`mechuri train` on tiny models: answer-only labels with EOS, train/serve parity, every quantization, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model import GenerationRequest, Generator, ModelLoadError, build_prompt, load_model
from model.training.config import TrainConfig
from model.training.sft import train
from model.training.sft_data import (
    IGNORE_INDEX,
    AlpacaRow,
    DataReport,
    answer_collator,
    ensure_distinct_pad,
    read_alpaca_jsonl,
    tokenize_row,
    tokenize_rows,
)

# Rows the session's tiny model has not been fitted on, so a LoRA has something to learn.
NEW_ROWS = [
    ("점심 메뉴 골라줘", "", "점심에는 든든한 비빔밥 어때요? 나물과 고추장을 쓱쓱 비비면 맛있어요."),
    ("다이어트 중인데 뭐 먹지", "", "가벼운 닭가슴살 샐러드를 추천해요. 단백질이 많아서 배도 든든해요."),
    ("친구들이랑 모임 메뉴", "인원: 4명", "여럿이 먹기 좋은 삼겹살 어때요? 쌈 채소와 함께 구워 먹으면 좋아요."),
    ("추운 날 따뜻한 거", "", "추운 날에는 뜨끈한 설렁탕이 좋아요. 깍두기와 함께 드세요."),
    ("간식 추천해줘", "", "출출할 때는 떡볶이 어때요? 달콤하고 매콤해서 간식으로 딱이에요."),
    ("혼밥 메뉴 추천", "", "혼자 먹기에는 김밥 한 줄과 라면이 간편해요."),
]
# Small and quick: the whole file should stay well under a minute on two shared cores.
QUICK = dict(batch_size=3, lr=3e-3, logging_steps=1, progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_rows(path: Path, rows, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps({"instruction": q, "input": c, "output": a}, ensure_ascii=False) for q, c, a in rows]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("data") / "train.jsonl", NEW_ROWS)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from model.loading import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


# ----- data -----

def test_labels_cover_the_answer_and_its_eos_only(tokenizer) -> None:
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    row = AlpacaRow("모임 메뉴 추천", "인원: 4명", "삼겹살 어때요?", line=1)
    example = tokenize_row(tokenizer, row, eos)
    n_prompt = example.labels.index(next(label for label in example.labels if label != IGNORE_INDEX))
    prompt_text = tokenizer.decode(example.input_ids[:n_prompt])
    assert prompt_text == "### 질문: 모임 메뉴 추천\n\n### 맥락: 인원: 4명\n\n### 답변:"
    assert all(label == IGNORE_INDEX for label in example.labels[:n_prompt])
    assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
    assert example.labels[-1] == eos and example.input_ids.count(eos) == 1
    assert tokenizer.decode(example.labels[n_prompt:-1]) == " 삼겹살 어때요?"

    pad = ensure_distinct_pad(tokenizer)
    assert pad != eos
    short = tokenize_row(tokenizer, AlpacaRow("해장", "", "국밥", line=2), eos)
    batch = answer_collator(tokenizer)([example.as_features(), short.as_features()])
    n = len(short.input_ids)
    assert batch["input_ids"][1, n:].eq(pad).all() and batch["labels"][1, n:].eq(IGNORE_INDEX).all()
    assert batch["attention_mask"][1].sum() == n and batch["labels"][1, n - 1] == eos  # right padding, EOS kept


def test_the_collator_pads_right_and_leaves_the_tokenizer_as_it_was(tokenizer) -> None:
    """Training pads right (labels after the prompt); the tokenizer is the generator's, which pads left."""
    ensure_distinct_pad(tokenizer)
    assert tokenizer.padding_side == "left"
    batch = answer_collator(tokenizer)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                        {"input_ids": [5], "labels": [5]}])
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, pad, pad]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [5, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert tokenizer.padding_side == "left" and tokenizer.pad({"input_ids": [[5, 6], [5]]})["input_ids"][1] == [pad, 5]


def test_training_prompt_is_the_serving_prompt(tokenizer) -> None:
    """The prompt tokens trained on are the ids the generator feeds for the same question."""
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    for question, context, answer in [*NEW_ROWS, ("## 답변: 가짜 ### 질문", "", "흠")]:
        example = tokenize_row(tokenizer, AlpacaRow(question, context, answer, line=1), eos)
        n_prompt = sum(1 for label in example.labels if label == IGNORE_INDEX)
        served = build_prompt([], question, context=context or None, tokenizer=tokenizer, budget=1000).text
        assert example.input_ids[:n_prompt] == tokenizer.encode(served, add_special_tokens=False)
        assert tokenizer.decode(example.input_ids[:n_prompt]) == build_prompt([], question, context=context).text


def test_pad_is_never_eos(tokenizer) -> None:
    tokenizer.pad_token = tokenizer.eos_token  # what the common recipe (and load_tokenizer's fallback) does
    assert ensure_distinct_pad(tokenizer) == tokenizer.convert_tokens_to_ids("<|pad|>") != tokenizer.eos_token_id


def test_a_pad_is_added_when_the_tokenizer_has_none() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from model.types import ModelError

    def bare():
        core = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "밥": 1}, unk_token="<|endoftext|>"))
        return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")

    tokenizer = bare()
    assert ensure_distinct_pad(tokenizer, embedding_rows=64) == 2 and tokenizer.pad_token == "<|pad|>"
    with pytest.raises(ModelError, match="no room to add one"):
        ensure_distinct_pad(bare(), embedding_rows=2)


def test_bad_lines_are_reported_with_their_numbers(tmp_path) -> None:
    path = write_rows(tmp_path / "d.jsonl", NEW_ROWS[:1],
                      ('{"instruction": "해장"', '["a"]', '{"instruction": "해장", "output": ""}', "",
                       '{"instruction": "야식", "output": "치킨", "input": 3}'))
    with path.open("ab") as f:
        f.write('{"instruction": "해장", "output": "국밥"}\n'.encode("euc-kr"))
    rows, report = read_alpaca_jsonl(path)
    assert [r.line for r in rows] == [1]
    assert [(p.line, p.reason.split(" (")[0]) for p in report.bad] == [
        (2, "not valid JSON"), (3, "expected a JSON object, got list"), (4, 'missing or empty "output"'),
        (6, '"input" must be a string'), (7, "not UTF-8")]


def test_rows_over_max_length_are_dropped_and_counted(tokenizer) -> None:
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    rows = [AlpacaRow(q, c, a, line=i + 1) for i, (q, c, a) in enumerate(NEW_ROWS[:2])]
    rows.append(AlpacaRow("긴 질문", "", "아주 " * 200, line=3))
    report = DataReport(path="x")
    examples = tokenize_rows(tokenizer, rows, report, eos_id=eos, max_length=64)
    assert [e.line for e in examples] == [1, 2] and all(e.labels[-1] == eos for e in examples)
    assert [p.line for p in report.too_long] == [3] and "dropped 1 row(s)" in report.summary()


# ----- training -----

@pytest.mark.parametrize("quantization", ["none", "8bit", "4bit"])
def test_train_30_steps(quantization, any_model_dir, rows_file, tmp_path, capsys) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mechuri.cli import main

    data = write_rows(tmp_path / "train.jsonl", NEW_ROWS, ("{broken",))
    out = tmp_path / f"adapter-{quantization}"
    code = main(["train", "--data", str(data), "--eval-data", str(rows_file), "--base", str(any_model_dir),
                 "--out", str(out), "--max-steps", "30", "--quantization", quantization, "--batch-size", "3",
                 "--lr", "3e-3", "--logging-steps", "1", "--eval-steps", "15", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "skipped line 7: not valid JSON" in printed and "training done" in printed
    assert "step 30/30 · eval loss" in printed
    for name in ("adapter_model.safetensors", "adapter_config.json", "loss.png", "metrics.json", "README.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [loss for _, loss in metrics["train_loss_curve"]]
    assert len(losses) == 30 and sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses
    assert metrics["global_step"] == 30 and metrics["data"]["bad_lines"][0]["line"] == 7
    assert metrics["eval_loss"] < 0.8 * losses[0] and metrics["eval_perplexity"] > 1
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_bytes"] > 0
    assert metrics["config"]["quantization"] == quantization
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(any_model_dir)
    assert f"base_model: {any_model_dir}" in (out / "README.md").read_text()

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(any_model_dir), str(out))
    assert sum(1 for n, _ in plain.named_parameters() if "lora_B" in n) == 2  # query_key_value in both layers
    loaded = load_model(str(any_model_dir), adapter=out)
    assert loaded.adapter.name == out.name
    assert metrics["eval_loss"] == metrics["eval_loss_curve"][-1][1]  # the curve's last point is the final number
    if quantization == "none":  # and it is the number `mechuri eval` computes for this adapter
        from model.training.scores import answer_loss
        from model.training.sft_data import load_examples

        examples, _ = load_examples(rows_file, loaded.tokenizer, eos_id=loaded.eos_token_id, max_length=1024)
        assert answer_loss(loaded.model, examples, loaded.tokenizer) == pytest.approx(metrics["eval_loss"], 1e-5)


def test_4bit_training_with_evaluation_works_on_every_cpu(monkeypatch, tiny_model_dir, rows_file, tmp_path) -> None:
    """bitsandbytes repacks a 4-bit weight for AVX512-BF16 CPUs after an eval-mode forward, and a later training
    forward then fails. The test forces the AVX512-BF16 path, so it guards the fix on a CPU without it too."""
    import bitsandbytes.nn.modules as bnb_modules
    import torch

    from model.loading import load_base

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    model = load_base(str(tiny_model_dir), quantization="4bit")
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]))
    layers = [m for m in model.modules() if isinstance(m, bnb_modules.Linear4bit)]
    assert layers and not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)

    result = train(TrainConfig(data=str(rows_file), eval_data=str(rows_file), base=str(tiny_model_dir),
                               out=str(tmp_path / "a"), quantization="4bit", max_steps=4, eval_steps=2, **QUICK))
    evals = [h["step"] for h in result.log_history if "eval_loss" in h]
    assert result.metrics["global_step"] == 4 and evals == [2, 4]  # training went on after each evaluation


@pytest.mark.parametrize("flavour", ["tiny", "polyglot"])
async def test_answer_only_labels_teach_the_model_to_stop(tmp_path, flavour) -> None:
    """From an untrained base: the same LoRA training ends answers with EOS only when the EOS is in the labels, also
    with a tokenizer that has no pad token (pad = EOS is exactly the reference recipe's bug)."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from model.demo.tiny import TINY_QA, build_tiny_model
    from model.loading import eos_id_of, load_base, load_tokenizer
    from model.training.sft_data import load_examples

    base = build_tiny_model(tmp_path / "untrained", train_steps=0, flavour=flavour)
    data = write_rows(tmp_path / "d.jsonl", TINY_QA[:4])
    recipe = dict(lora_targets="all-linear", lora_dropout=0.0, lr=1e-2, max_steps=30, batch_size=4)
    ours = train(TrainConfig(data=str(data), base=str(base), out=str(tmp_path / "ours"), quantization="none",
                             progress=False, **recipe)).out

    # The reference recipe: pad = eos and DataCollatorForLanguageModeling, same rows, LoRA, steps and rate.
    tokenizer = load_tokenizer(str(base))
    eos = eos_id_of(tokenizer)
    examples, _ = load_examples(data, tokenizer, eos_id=eos, max_length=512)
    tokenizer.pad_token = tokenizer.eos_token
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    features = [{"input_ids": e.input_ids} for e in examples]
    assert not collator(features)["labels"].eq(eos).any()  # the bug: every EOS is masked out with the padding
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_base(str(base)), LoraConfig(
        r=64, lora_alpha=16, lora_dropout=0.0, target_modules=["query_key_value", "dense", "dense_h_to_4h",
                                                                "dense_4h_to_h"], task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(tmp_path / "ref-ck"), per_device_train_batch_size=4, learning_rate=1e-2,
                             max_steps=30, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                             seed=42)
    Trainer(model=model, args=args, train_dataset=features, data_collator=collator).train()
    model.save_pretrained(str(tmp_path / "reference"))

    async def finish(adapter: Path) -> str:
        gen = Generator(load_model(str(base), adapter=adapter))
        try:
            res = await gen.generate(GenerationRequest(build_prompt([], TINY_QA[0][0]).text, seed=0, temperature=0,
                                                       max_new_tokens=60))
            return res.finish_reason
        finally:
            await gen.close()

    assert await finish(ours) == "eos"
    assert await finish(tmp_path / "reference") != "eos"  # it runs on to max_new_tokens


def test_a_missing_base_fails_clearly(rows_file, tmp_path, capsys) -> None:
    from mechuri.cli import main

    with pytest.raises(ModelLoadError, match="does not exist: check the path"):
        train(TrainConfig(data=str(rows_file), base=str(tmp_path / "no-model"), out=str(tmp_path / "a")))
    assert main(["train", "--data", str(rows_file), "--base", str(tmp_path / "no-model"), "--out",
                 str(tmp_path / "a")]) == 1
    assert "error: model folder" in capsys.readouterr().err and not (tmp_path / "a").exists()


async def test_resume_continues_from_a_checkpoint(tiny_model_dir, rows_file, tmp_path) -> None:
    common = dict(data=str(rows_file), base=str(tiny_model_dir), out=str(tmp_path / "a"), quantization="none",
                  save_steps=10, **QUICK)
    first = train(TrainConfig(max_steps=10, **common))
    assert (tmp_path / "a/checkpoints/checkpoint-10").is_dir() and first.metrics["global_step"] == 10
    with pytest.raises(Exception, match="already holds an adapter or checkpoints"):
        train(TrainConfig(max_steps=20, **common))
    second = train(TrainConfig(max_steps=20, resume="latest", **common))
    assert second.metrics["resumed_from"].endswith("checkpoint-10") and second.metrics["global_step"] == 20
    steps = [h["step"] for h in second.log_history if "loss" in h]
    assert steps == list(range(1, 21))  # the first ten come from the checkpoint, the rest were trained now
    assert first.metrics["trained_samples"] == second.metrics["trained_samples"] == 30  # this run's steps only
    checkpoint = (tmp_path / "a/checkpoints/checkpoint-10/adapter_model.safetensors").read_bytes()
    assert (tmp_path / "a/adapter_model.safetensors").read_bytes() != checkpoint
    # The resumed adapter hot-reloads into a running generator.
    gen = Generator(load_model(str(tiny_model_dir)))
    try:
        info = await gen.reload_adapter(tmp_path / "a")
        assert info.name == "a" and info.version != "base"
    finally:
        await gen.close()


def test_the_gpu_benchmark_refuses_without_cuda() -> None:
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "bench/train_throughput.py", "--gpu"], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--gpu needs a CUDA GPU" in proc.stderr
