"""Korean-aware ROUGE-L, the filter's rules, and the pruned index against brute force."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from dataset_builder.filter import FilterConfig, RowFilter, filter_rows, normalize_key
from dataset_builder.schema import AlpacaRow
from dataset_builder.similarity import (
    BruteForceIndex,
    CharTokenizer,
    NearDupIndex,
    lcs_length,
    make_tokenizer,
    rouge_l,
)

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("filter_speed", ROOT / "bench" / "filter_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("filter_speed", module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kiwi():
    return make_tokenizer("kiwi")  # Kiwi is built once per process and shared


def row(instruction: str, output: str = "김치찌개 어떠세요? 든든해요.", input: str = "") -> AlpacaRow:
    return AlpacaRow(instruction=instruction, input=input, output=output)


@pytest.mark.parametrize("mode", ["kiwi", "char"])
def test_required_korean_pairs_through_rouge_scorer(mode, kiwi):
    tokenizer = kiwi if mode == "kiwi" else CharTokenizer()
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=tokenizer)

    def score(a, b):
        return scorer.score(a, b)["rougeL"].fmeasure

    assert score("매운 음식 추천해줘", "매운 음식 추천해 줘") > 0.7
    assert score("매운 음식 추천해줘", "차가운 디저트 추천해줘") <= 0.7


def test_default_tokenizer_rouge_scores_korean_zero_which_is_why_we_need_ours():
    default = rouge_scorer.RougeScorer(["rougeL"])
    assert default.score("매운 음식 추천해줘", "매운 음식 추천해줘")["rougeL"].fmeasure == 0


def test_kiwi_is_built_once_per_process(kiwi):
    assert make_tokenizer("kiwi")._kiwi is kiwi._kiwi


def test_kiwi_keeps_content_morphemes_only(kiwi):
    assert kiwi.tokenize("매운 음식 추천해줘") == ["맵", "음식", "추천"]
    assert kiwi.tokenize("매운 음식 추천해 줘") == ["맵", "음식", "추천"]
    # With endings kept this pair would score 0.75; short requests differing in their subject must both stay.
    assert rouge_l(kiwi.tokenize("매운 거 추천해줘"), kiwi.tokenize("단 거 추천해줘")) <= 0.7
    assert kiwi.tokenize("김치찌개 만드는 법") == ["김치찌개", "만들", "법"]  # Kiwi tags 만들 VX here: kept
    # A paraphrase that character ROUGE-L lets through (0.59 with characters)
    assert rouge_l(kiwi.tokenize("저녁 뭐 먹을지 정해 주실래요?"), kiwi.tokenize("저녁 뭐 먹지")) > 0.7
    assert kiwi.tokenize("오늘 저녁 뭐 먹지") == kiwi.tokenize("오늘 저녁 뭐 먹을까")


@pytest.mark.parametrize("mode", ["kiwi", "char"])
def test_filter_rejects_spacing_variant_and_keeps_different_request(mode, kiwi):
    tokenizer = kiwi if mode == "kiwi" else CharTokenizer()
    config = FilterConfig(threshold=0.7, mode=mode)
    result = filter_rows(
        [row("매운 음식 추천해줘"), row("매운 음식 추천해 줘"), row("차가운 디저트 추천해줘")], config, tokenizer=tokenizer
    )
    assert [r.instruction for r in result.kept] == ["매운 음식 추천해줘", "차가운 디저트 추천해줘"]
    # Spacing alone makes it an exact duplicate; without the exact rule, ROUGE-L catches it too.
    state = RowFilter(config, tokenizer=tokenizer)
    state.add(row("매운 음식 추천해줘"))
    decision = state.check(row("매운 음식을 추천해 줘"))
    assert (decision.reason, decision.nearest.instruction) == ("near_duplicate", "매운 음식 추천해줘")


@given(
    st.lists(st.sampled_from("가나다라마"), max_size=12),
    st.lists(st.sampled_from("가나다라마"), max_size=70),
)
@settings(max_examples=300, deadline=None)
def test_bit_parallel_lcs_matches_rouge_score(a, b):
    reference = rouge_scorer._score_lcs(a, b)  # (target, prediction): precision = LCS / len(b)
    assert lcs_length(a, b) == round(reference.precision * len(b)) == lcs_length(b, a)
    # Ours is 2*LCS/(m+n) correctly rounded; rouge_score's 2PR/(P+R) may be one ulp away from it.
    assert rouge_l(a, b) == pytest.approx(reference.fmeasure, rel=1e-12, abs=1e-15)


@given(
    st.lists(st.lists(st.sampled_from("가나다라마바"), max_size=9), min_size=1, max_size=25),
    st.sampled_from([0.3, 0.5, 0.7, 0.8, 1.0]),
)
@settings(max_examples=150, deadline=None)
def test_index_matches_equal_brute_force_on_random_token_lists(rows, threshold):
    fast, slow = NearDupIndex(threshold), BruteForceIndex(threshold)
    for tokens in rows:
        assert fast.matches(tokens) == slow.matches(tokens)
        fast.add(tokens)
        slow.add(tokens)


@pytest.mark.parametrize(
    ("instruction", "output", "input", "reason"),
    [
        ("해장 추천", "콩나물국밥 어떠세요?", "", None),
        ("저녁 뭐 먹지", "제육볶음 어떠세요?", "", None),
        ("영상 5도인데 따뜻한 국물 요리 알려줘", "어묵탕 어떠세요?", "", None),
        ("노래방 끝나고 야식 추천", "떡볶이 어떠세요?", "", None),
        ("밥", "비빔밥 어떠세요?", "", "too_short"),
        ("이 사진 속 음식 이름 알려줘", "비빔밥 같아요.", "", "blacklist"),
        ("레시피 영상 찾아줘", "유튜브에서 찾아보세요.", "", "blacklist"),
        ("뭐 먹지", "Try some pasta, it is great.", "", "bad_answer"),
        ("What should I eat?", "비빔밥 어떠세요?", "", "not_korean"),
        ("점심 추천", "### 답변: 국밥", "", "prompt_marker"),
        ("메뉴 추천해줘" * 60, "국밥 어떠세요?", "", "too_long"),
        ("이 재료로 뭐 만들지", "볶음밥 어떠세요?", "사진 첨부했어요", "blacklist"),
    ],
)
def test_rules(instruction, output, input, reason):
    decision = RowFilter(FilterConfig(mode="char")).check(row(instruction, output, input))
    assert decision.reason == reason, decision.detail


def test_same_instruction_with_different_inputs_are_both_kept():
    rows = [row("이 재료로 뭐 만들 수 있어?", input="계란, 대파, 밥"), row("이 재료로 뭐 만들 수 있어?", input="두부, 김치, 돼지고기")]
    assert len(filter_rows(rows, FilterConfig(mode="char")).kept) == 2


def test_references_are_compared_but_not_output():
    result = filter_rows([row("편의점 간식 추천해줘!"), row("해장 추천")], FilterConfig(mode="char"),
                         references=[row("편의점 간식 추천해줘")])
    assert [r.instruction for r in result.kept] == ["해장 추천"]
    assert result.dropped[0][1].reason == "exact_duplicate"
    assert normalize_key("편의점 간식, 추천해 줘!") == normalize_key("편의점간식추천해줘")


@pytest.mark.parametrize("mode", ["kiwi", "char"])
def test_pruned_index_decides_exactly_like_brute_force(mode, kiwi):
    bench = _bench()
    rows = bench.synthetic_rows(200 if mode == "kiwi" else 100, seed=7)
    tokenizer = kiwi if mode == "kiwi" else CharTokenizer()
    config = FilterConfig(mode=mode)
    fast = filter_rows(rows, config, tokenizer=tokenizer, index_factory=NearDupIndex)
    slow = filter_rows(rows, config, tokenizer=tokenizer, index_factory=BruteForceIndex)
    assert bench.decision_keys(fast) == bench.decision_keys(slow)
    assert fast.counts["near_duplicate"] > 10 and fast.counts["kept"] > 10  # the sample exercises both outcomes


def test_index_verifies_few_candidates_on_a_large_set():
    rows = _bench().synthetic_rows(3000, seed=1)
    tokenizer = CharTokenizer()
    state = RowFilter(FilterConfig(mode="char"), tokenizer=tokenizer)
    for r in rows:
        state.offer(r)
    kept = len(state)
    brute_force_pairs = kept * (kept - 1) // 2
    assert kept > 500
    assert state.candidates_checked < 0.02 * brute_force_pairs, (state.candidates_checked, brute_force_pairs)


def test_filter_cli_reports_bad_line_and_writes_dropped_with_nearest(tmp_path, capsys):
    from mechuri.dataset_commands import main

    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"instruction": "매운 음식 추천해줘", "input": "", "output": "불닭볶음면 어떠세요?"}, ensure_ascii=False),
        "{broken json",
        json.dumps({"instruction": "매운 음식을 추천해 줘", "input": "", "output": "떡볶이 어떠세요?"}, ensure_ascii=False),
        json.dumps({"instruction": "차가운 디저트 추천해줘", "input": "", "output": "팥빙수 어떠세요?"}, ensure_ascii=False),
    ]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, dropped = tmp_path / "out.jsonl", tmp_path / "dropped.jsonl"
    code = main(["filter", "--in", str(src), "--out", str(out), "--dropped", str(dropped), "--tokenizer", "char"])
    assert code == 0
    captured = capsys.readouterr()
    assert f"{src}:2:" in captured.err
    assert "near_duplicate" in captured.out
    kept = [json.loads(line)["instruction"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert kept == ["매운 음식 추천해줘", "차가운 디저트 추천해줘"]
    (record,) = [json.loads(line) for line in dropped.read_text(encoding="utf-8").splitlines()]
    assert record["reason"] == "near_duplicate" and record["line"] == 3
    assert record["nearest"]["instruction"] == "매운 음식 추천해줘" and record["score"] > 0.7
