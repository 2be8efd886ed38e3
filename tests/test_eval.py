"""`mechuri eval`: answer-only loss, generation checks through the real Generator, the table and the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from model.demo.tiny import TINY_QA
from model.eval.evaluate import AnswerCheck, hangul_counts, repeats_sentence, summarise

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_repeats_and_hangul() -> None:
    assert repeats_sentence("김치찌개 어때요? 맛있어요. 김치찌개 어때요?")
    assert repeats_sentence("김치 김치 김치 김치 김치 김치 김치")  # a loop without punctuation
    assert not repeats_sentence("김치찌개 어때요? 된장찌개도 좋아요. 네.네.")  # short interjections don't count
    assert hangul_counts("김치 ok!") == (2, 5)


def test_summary_shares() -> None:
    def check(reason: str, text: str, dishes: list[str] | None) -> AnswerCheck:
        return AnswerCheck("q", text, 0, reason, 5, dishes, repeats_sentence(text))

    report = summarise("A", None, "base", 1.0, 3, [check("eos", "비빔밥 어때요?", ["비빔밥"]), check("stop", "음", []),
                                                  check("length", "ab ab ab ab ab ab ab ab", [])])
    assert (report.eos_share, report.stop_share, report.ended_share) == (1 / 3, 1 / 3, 2 / 3)
    assert report.length_share == 1 / 3 and report.dish_share == 1 / 3 and report.repeat_share == 1 / 3
    assert abs(report.perplexity - 2.718281828) < 1e-6
    assert summarise("A", None, "base", None, 0, [check("eos", "x", None)]).dish_share is None  # no catalog


def test_eval_prints_the_table_and_writes_json(any_model_dir: Path, any_adapter_dir: Path, tmp_path: Path,
                                               capsys) -> None:
    from mechuri.cli import main

    data = tmp_path / "held_out.jsonl"
    rows = [json.dumps({"instruction": q, "input": c, "output": a}, ensure_ascii=False) for q, c, a in TINY_QA]
    data.write_text("\n".join([*rows, "not json"]) + "\n", encoding="utf-8")
    out = tmp_path / "eval.json"
    code = main(["eval", "--base", str(any_model_dir), "--adapter", str(any_adapter_dir), "--data", str(data),
                 "--compare-base", "--limit", "4", "--json", str(out), "--max-new-tokens", "48"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "skipped line 9: not valid JSON" in printed
    header = next(line for line in printed.splitlines() if line.startswith("metric"))
    assert "A: spicy" in header and "B: base" in header
    for label in ("eval loss (answer + EOS)", "ended with EOS", "ended at stop text ###", "Hangul share",
                  "names a catalog dish", "repeats a sentence"):
        assert label in printed

    report = json.loads(out.read_text(encoding="utf-8"))
    adapter, base = report["models"]
    assert adapter["answers"] == base["answers"] == 4 and len(base["checks"]) == 4
    assert [c["seed"] for c in base["checks"]] == [0, 1, 2, 3]
    # The session's tiny base was fitted on these very rows: low loss, and it ends its answers. The random adapter
    # only disturbs it.
    assert base["eval_loss"] < 0.5 and adapter["eval_loss"] > base["eval_loss"]
    assert abs(base["perplexity"] - math.exp(base["eval_loss"])) < 1e-9
    assert base["ended_share"] == 1.0 and base["hangul_share"] > 0.8
    assert base["dish_share"] is not None and base["dish_share"] > 0.5  # answers name 김치찌개, 해물파전, …
    assert report["data"]["bad_lines"] == [{"line": 9, "reason": "not valid JSON (Expecting value at column 1)"}]

    # Fixed seeds: the same command gives the same answers.
    assert main(["eval", "--base", str(any_model_dir), "--data", str(data), "--limit", "4", "--json",
                 str(tmp_path / "again.json"), "--max-new-tokens", "48"]) == 0
    again = json.loads((tmp_path / "again.json").read_text(encoding="utf-8"))["models"][0]
    assert [c["answer"] for c in again["checks"]] == [c["answer"] for c in base["checks"]]


def test_eval_of_missing_data_fails_clearly(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from mechuri.cli import main

    assert main(["eval", "--base", str(tiny_model_dir), "--data", str(tmp_path / "none.jsonl")]) == 1
    assert "does not exist: give an Alpaca JSONL file" in capsys.readouterr().err


def test_what_a_reader_sees() -> None:
    """Broken characters, fit to the request and the word-salad proxy, first answers and "다른 거" apart."""
    from model.eval.evaluate import format_table, reader_stats
    from model.eval.reader import corpus_words, unknown_words

    known = corpus_words([Path(__file__).resolve().parents[1] / "data" / "mechuri_starter.jsonl"])
    assert unknown_words("김치찌개 어때요?", known) == [] and unknown_words("할엔탈이 어때요?", known) == ["할엔탈이"]
    assert unknown_words("감칠� 방울토마토", known) == ["감칠�"]  # a broken word is never a known one

    def check(kind: str, text: str, fits: bool | None, turned_down: bool = False) -> AnswerCheck:
        return AnswerCheck("q", text, 0, "eos", 5, [], False, kind=kind, wishes=["매운"] if fits is not None else [],
                           fits=fits, broken="\ufffd" in text, unknown_words=unknown_words(text, known),
                           names_turned_down=turned_down)

    first = [check("first", "김치찌개 어때요?", True), check("first", "오이채를 추천해요.��", False),
             check("first", "할엔탈이 어때요?", None)]
    retry = [check("retry", "떡볶이 어때요?", True, turned_down=True), check("retry", "냉면 어때요?", False)]
    stats = reader_stats(first)
    assert stats.broken_share == 1 / 3 and stats.fit_checked == 2 and stats.fit_share == 0.5
    assert stats.known_words_share == 1 / 3 and stats.turned_down_share is None
    assert reader_stats(retry).turned_down_share == 0.5 and reader_stats([]) is None
    report = summarise("A", None, "base", None, 0, first + retry)
    assert report.answers == 3 and report.retry.answers == 2  # today's columns count first answers only
    table = format_table([report])
    for label in ("first answers: with broken char �", "first answers: fit the request", "50% of 2",
                  "다른 거 answers: only training words", "다른 거 answers: name a turned-down dish"):
        assert label in table


def test_eval_retry_and_corpus_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from mechuri.cli import main

    data = tmp_path / "held_out.jsonl"
    rows = [{"instruction": "매운 요리 추천해줘", "input": "", "output": "떡볶이 어때요?", "wishes": ["매운"]},
            {"instruction": "점심 뭐 먹지", "input": "", "output": "김밥 어때요?"}]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("김치찌개 어때요", encoding="utf-8")
    out = tmp_path / "eval.json"
    assert main(["eval", "--base", str(tiny_model_dir), "--data", str(data), "--retry", "--corpus", str(corpus),
                 "--json", str(out), "--max-new-tokens", "32"]) == 0
    model = json.loads(out.read_text(encoding="utf-8"))["models"][0]
    kinds = [c["kind"] for c in model["checks"]]
    assert kinds == ["first", "first", "retry", "retry"]
    first, plain, retry, _ = model["checks"]
    assert first["wishes"] == ["매운"] and first["fits"] is not None and plain["wishes"] == [] and plain["fits"] is None
    assert retry["turned_down"] == first["dishes"] and model["first"]["fit_checked"] == 1
    assert model["first"]["known_words_share"] is not None
