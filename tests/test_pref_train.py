"""`mechuri train --method dpo|kto` and `mechuri eval --prefs` on tiny models: data checks, short real TRL runs from
an adapter and from the base, folders that plain peft and the serving path load, and preference scores whose answer is
known."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from model.demo.tiny import TINY_QA
from model.prompt import build_prompt
from model.training.sft_data import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pairs() -> list[dict]:
    """Each tiny question with its own answer kept and the next question's answer turned down."""
    return [{"prompt": build_prompt([], q, context=c or None).text, "chosen": a,
             "rejected": TINY_QA[(i + 1) % len(TINY_QA)][2], "adapter_version": "abc123"}
            for i, (q, c, a) in enumerate(TINY_QA)]


def kto_rows() -> list[dict]:
    rows = pairs()
    return ([{"prompt": r["prompt"], "completion": r["chosen"], "label": True} for r in rows]
            + [{"prompt": r["prompt"], "completion": r["rejected"], "label": False} for r in rows])


def write(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prefs")
    return {"dpo": write(root / "dpo.jsonl", pairs()), "kto": write(root / "kto.jsonl", kto_rows()),
            "dpo_broken": write(root / "dpo_broken.jsonl", pairs(), ("{broken", '["a"]')),
            "alpaca": write(root / "held_out.jsonl", [{"instruction": q, "input": c, "output": a}
                                                      for q, c, a in TINY_QA])}


# ----- data -----

def test_the_export_format_loads_with_datasets_and_with_us(files) -> None:
    from datasets import load_dataset

    from model.training.preference_data import read_prefs

    dpo = load_dataset("json", data_files=str(files["dpo"]), split="train")
    rows, report = read_prefs(files["dpo"], "dpo")
    assert [(r.prompt, r.chosen, r.rejected) for r in rows] == [(d["prompt"], d["chosen"], d["rejected"]) for d in dpo]
    assert report.bad == [] and rows[0].prompt.endswith("### 답변:")
    kto = load_dataset("json", data_files=str(files["kto"]), split="train")
    rows, _ = read_prefs(files["kto"], "kto")
    assert [(r.completion, r.label) for r in rows] == [(d["completion"], d["label"]) for d in kto]
    # KTO also reads DPO pairs: one kept and one turned-down row per pair.
    rows, _ = read_prefs(files["dpo"], "kto")
    assert len(rows) == 2 * len(TINY_QA) and [r.label for r in rows[:2]] == [True, False]


def test_bad_lines_are_counted_and_skipped(tmp_path) -> None:
    from model.training.preference_data import read_prefs

    good = pairs()[0]
    path = write(tmp_path / "d.jsonl", [good], (
        "{broken", '["a"]', json.dumps({**good, "rejected": good["chosen"]}),
        json.dumps({**good, "prompt": "### 질문: 해장"}), json.dumps({**good, "chosen": ""}),
        json.dumps({"prompt": good["prompt"], "chosen": "국밥"})))
    rows, report = read_prefs(path, "dpo")
    assert len(rows) == 1 and report.rows == 1
    assert [(p.line, p.reason.split(" (")[0].split(":")[0]) for p in report.bad] == [
        (2, "not valid JSON"), (3, "expected a JSON object, got list"),
        (4, '"chosen" and "rejected" are the same answer'), (5, '"prompt" does not end with "### 답변'),
        (6, '"chosen" must be a non-empty string'), (7, 'missing key(s) "rejected"')]
    assert "skipped 6 bad line(s)" in report.summary()
    kto = write(tmp_path / "k.jsonl", [{"prompt": good["prompt"], "completion": "국밥", "label": True}],
                (json.dumps({"prompt": good["prompt"], "completion": "국밥", "label": "yes"}),))
    rows, report = read_prefs(kto, "kto")
    assert len(rows) == 1 and [(p.line, p.reason) for p in report.bad] == [(2, '"label" must be true or false')]


def test_the_wrong_format_fails_clearly(files, tiny_model_dir, tmp_path, capsys) -> None:
    from mechuri.cli import main
    from model.training.preference_data import read_prefs

    with pytest.raises(DataError, match=rf'missing key\(s\) "chosen", "rejected" on {2 * len(TINY_QA)} line\(s\); --method dpo needs '
                                        r'"prompt", "chosen", "rejected".*--method kto'):
        read_prefs(files["kto"], "dpo")
    with pytest.raises(DataError, match=r"no usable rows .*the file is empty"):
        read_prefs(write(tmp_path / "empty.jsonl", []), "kto")
    out = tmp_path / "never"
    assert main(["train", "--method", "dpo", "--data", str(files["kto"]), "--base", str(tiny_model_dir),
                 "--out", str(out), "--no-progress"]) == 1
    assert 'error: ' in (err := capsys.readouterr().err) and 'missing key(s) "chosen", "rejected"' in err
    assert not (out / "adapter_config.json").exists()
    assert main(["train", "--data", str(files["alpaca"]), "--base", str(tiny_model_dir), "--out", str(out),
                 "--init-adapter", str(tmp_path)]) == 2  # sft stays as it was: no init adapter


def test_pairs_are_tokenized_as_sft_and_serving_tokenize(tiny_model_dir) -> None:
    """The prompt ids are the generator's for the same text; the answer ids (EOS included) are SFT's labels."""
    from model.loading import eos_id_of, load_tokenizer
    from model.training.preference_data import PairRow, tokenize_prefs
    from model.training.sft_data import IGNORE_INDEX, AlpacaRow, DataReport, tokenize_row

    tokenizer = load_tokenizer(str(tiny_model_dir))
    eos = eos_id_of(tokenizer)
    for i, (q, c, a) in enumerate(TINY_QA):
        prompt = build_prompt([], q, context=c or None, tokenizer=tokenizer, budget=1000).text
        (pair,) = tokenize_prefs(tokenizer, [PairRow(prompt, a, "국밥 어때요?", 1)], DataReport(path="x"), eos_id=eos,
                                 max_length=1024)
        sft = tokenize_row(tokenizer, AlpacaRow(q, c, a, line=i), eos)
        assert pair["prompt_ids"] == tokenizer.encode(prompt, add_special_tokens=False)
        assert pair["prompt_ids"] + pair["chosen_ids"] == sft.input_ids
        assert pair["chosen_ids"] == [t for t in sft.labels if t != IGNORE_INDEX] and pair["rejected_ids"][-1] == eos
        # The exporter writes the space after "### 답변:" itself (TRL joins strings): the same ids, no double space.
        (spaced,) = tokenize_prefs(tokenizer, [PairRow(prompt, " " + a, "국밥", 1)], DataReport(path="x"), eos_id=eos,
                                   max_length=1024)
        assert spaced["chosen_ids"] == pair["chosen_ids"]
    report = DataReport(path="x")
    assert tokenize_prefs(tokenizer, [PairRow(prompt, "밥 " * 300, "국밥", 7)], report, eos_id=eos,
                          max_length=64) == [] and [p.line for p in report.too_long] == [7]


# ----- training -----

def _lora(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_dpo_from_an_adapter(any_model_dir, any_adapter_dir, files, tmp_path, capsys) -> None:
    """Starts from the served adapter (also the frozen reference), writes SFT's folder shape, moves towards the kept
    answers, and loads through plain peft, model.loading and the generator's /reload path."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mechuri.cli import main
    from model import Generator, load_model

    out = tmp_path / "dpo"
    code = main(["train", "--method", "dpo", "--data", str(files["dpo_broken"]), "--eval-data", str(files["dpo"]),
                 "--init-adapter", str(any_adapter_dir), "--base", str(any_model_dir), "--out", str(out),
                 "--max-steps", "6", "--batch-size", "4", "--lr", "5e-3", "--logging-steps", "1", "--eval-steps", "3",
                 "--quantization", "none", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "skipped line 9: not valid JSON" in printed and "training done" in printed
    for name in ("adapter_model.safetensors", "adapter_config.json", "loss.png", "metrics.json", "README.md"):
        assert (out / name).is_file(), name
    assert not (out / "ref").exists()  # only the trained adapter, never TRL's frozen reference copy
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "dpo" and m["beta"] == 0.1 and m["init_adapter"] == str(any_adapter_dir)
    assert "init adapter" in m["reference"] and m["global_step"] == 6 and m["data"]["bad_lines"][0]["line"] == 9
    assert len(m["train_loss_curve"]) == 6 and len(m["train_margin_curve"]) == 6
    assert [s for s, _ in m["eval_loss_curve"]] == [3, 6] and m["eval_rewards_accuracy"] is not None
    assert m["train_loss_curve"][0][1] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start
    assert m["eval_rewards_margin"] > 0 and m["tokens_per_s"] > 0 and m["rows_per_s"] > 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(any_model_dir)
    assert "dpo" in (out / "README.md").read_text()

    before, after = _lora(any_adapter_dir), _lora(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k].to(before[k].dtype)) for k in before)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(any_model_dir), str(out))
    assert list(plain.peft_config) == ["default"]

    async def reload() -> str:
        gen = Generator(load_model(str(any_model_dir), adapter=any_adapter_dir))
        try:
            return (await gen.reload_adapter(out)).name
        finally:
            await gen.close()

    assert asyncio.run(reload()) == "dpo"

    # Before and after, side by side: trained on these very pairs, A prefers the kept answers at least as often as
    # its start B, and its reward with B as the reference (what DPO optimised) is positive.
    report = tmp_path / "eval.json"
    assert main(["eval", "--base", str(any_model_dir), "--adapter", str(out), "--compare-adapter",
                 str(any_adapter_dir), "--data", str(files["alpaca"]), "--prefs", str(files["dpo"]), "--limit", "2",
                 "--max-new-tokens", "16", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    for label in ("prefers chosen (own log-prob)", "DPO reward acc. vs base (β 0.1)", "DPO reward acc. vs B",
                  "ended with EOS", "first answers: with broken char"):
        assert label in printed
    a, b = (r["prefs"] for r in json.loads(report.read_text())["models"])
    assert a["pairs"] == b["pairs"] == len(TINY_QA) and a["accuracy"] >= b["accuracy"] and a["margin"] > b["margin"]
    assert a["vs_accuracy"] > 0.5 and a["vs_margin"] > 0 and b["vs_label"] is None


def test_kto_from_the_base(tiny_model_dir, files, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from model.training.config import PrefTrainConfig
    from model.training.preference import train_preferences

    result = train_preferences(PrefTrainConfig(
        data=str(files["kto"]), base=str(tiny_model_dir), out=str(tmp_path / "kto"), method="kto", max_steps=4,
        batch_size=4, lr=5e-3, logging_steps=1, quantization="none", progress=False))
    m = result.metrics
    assert m["method"] == "kto" and m["init_adapter"] is None and "base model" in m["reference"]
    assert m["global_step"] == 4 and len(m["train_loss_curve"]) == 4 and m["train_kl"] is not None
    assert (tmp_path / "kto/loss.png").is_file()
    assert any(v.abs().sum() > 0 for k, v in _lora(tmp_path / "kto").items() if "lora_B" in k)  # B starts at 0
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / "kto"))
    with pytest.raises(DataError, match="--batch-size 2 or more"):
        train_preferences(PrefTrainConfig(data=str(files["kto"]), base=str(tiny_model_dir), method="kto",
                                          out=str(tmp_path / "k1"), batch_size=1, quantization="none"))


def test_sft_weight_adds_the_chosen_answers_loss(tiny_model_dir, files, tmp_path) -> None:
    from model.training.config import PrefTrainConfig
    from model.training.preference import train_preferences

    def first_loss(name: str, **extra) -> float:
        result = train_preferences(PrefTrainConfig(
            data=str(files["dpo"]), base=str(tiny_model_dir), out=str(tmp_path / name), max_steps=1, batch_size=4,
            logging_steps=1, quantization="none", progress=False, **extra))
        assert result.metrics["sft_weight"] == extra.get("sft_weight", 0.0)
        return result.metrics["train_loss_first"]

    plain = first_loss("plain")
    assert plain == pytest.approx(0.6931, abs=1e-3)  # a fresh LoRA is the reference itself: log 2
    # + weight × the chosen answers' mean token NLL, measured before the first step: linear in the weight.
    nll = first_loss("rpo1", sft_weight=1.0) - plain
    assert nll > 1e-3 and first_loss("rpo10", sft_weight=10.0) - plain == pytest.approx(10 * nll, rel=1e-3)
    with pytest.raises(ValueError, match="--sft-weight is for --method dpo"):
        train_preferences(PrefTrainConfig(data=str(files["kto"]), base=str(tiny_model_dir), out=str(tmp_path / "k"),
                                          method="kto", sft_weight=1.0, quantization="none", progress=False))


def test_dpo_4bit_on_cpu_with_evaluation(polyglot_model_dir, files, tmp_path) -> None:
    """QLoRA's layout on a CPU (keep_4bit_layout), an evaluation between training steps, and an adapter that loads."""
    from model.demo.tiny import make_tiny_adapter
    from model.loading import load_model
    from model.training.config import PrefTrainConfig
    from model.training.preference import train_preferences

    init = make_tiny_adapter(polyglot_model_dir, tmp_path / "init", seed=3)
    result = train_preferences(PrefTrainConfig(
        data=str(files["dpo"]), eval_data=str(files["dpo"]), base=str(polyglot_model_dir), out=str(tmp_path / "q"),
        init_adapter=str(init), quantization="4bit", max_steps=4, eval_steps=2, batch_size=4, lr=5e-3,
        logging_steps=1, progress=False))
    assert [s for s, _ in result.metrics["eval_loss_curve"]] == [2, 4] and result.metrics["global_step"] == 4
    assert load_model(str(polyglot_model_dir), adapter=tmp_path / "q").adapter.name == "q"


# ----- preference eval -----

def test_scores_have_the_known_answer(tiny_model_dir, tmp_path) -> None:
    """The session's base was fitted on TINY_QA: it prefers each fitted answer to the same answer reversed. Swapping
    the pair flips the sign; a zero LoRA equals its base, so its implicit reward is 0 and never counts as a win."""
    from peft import LoraConfig, get_peft_model

    from model.eval.preference import load_pairs, score_model
    from model.loading import load_model

    rows = [{"prompt": build_prompt([], q, context=c or None).text, "chosen": a, "rejected": a[::-1]}
            for q, c, a in TINY_QA]
    loaded = load_model(str(tiny_model_dir))
    tokenizer = loaded.tokenizer
    tok = dict(eos_id=loaded.eos_token_id, max_length=512)
    pairs, _, note = load_pairs(str(write(tmp_path / "p.jsonl", rows)), loaded.tokenizer, **tok)
    scores = score_model(loaded.model, pairs, tokenizer, beta=0.1)
    assert note == "DPO pairs" and scores.accuracy == 1.0 and scores.margin > 5 and scores.reward_accuracy is None
    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    flipped, _, _ = load_pairs(str(write(tmp_path / "s.jsonl", swapped)), loaded.tokenizer, **tok)
    back = score_model(loaded.model, flipped, tokenizer, beta=0.1)
    assert back.accuracy == 0.0 and back.margin == pytest.approx(-scores.margin, rel=1e-4)

    zero = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["query_key_value"]))  # B = 0
    same = score_model(zero, pairs, tokenizer, beta=0.1)
    assert same.accuracy == 1.0 and same.reward_margin == pytest.approx(0.0, abs=1e-4) and same.reward_accuracy < 1

    # KTO rows that share a prompt become pairs; rows without a partner cannot.
    kto = [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"} for r in rows for k in
           ("chosen", "rejected")]
    from_kto, _, note = load_pairs(str(write(tmp_path / "k.jsonl", kto)), loaded.tokenizer, **tok)
    assert [p["chosen_ids"] for p in from_kto] == [p["chosen_ids"] for p in pairs] and "from KTO rows" in note
    with pytest.raises(DataError, match="needs DPO pairs"):
        load_pairs(str(write(tmp_path / "k1.jsonl", kto[::2])), loaded.tokenizer, **tok)
