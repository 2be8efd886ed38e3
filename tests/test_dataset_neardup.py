"""Near-duplicate decisions a Korean reader agrees with (slots mode), exact ties, cleaned inputs, Korean answers with
foreign dish names, and `mechuri dataset filter --explain`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from dataset_builder.cleaning import clean_row, korean_sentence_share
from dataset_builder.filter import FilterConfig, RowFilter, filter_rows
from dataset_builder.schema import AlpacaRow
from dataset_builder.similarity import BruteForceIndex, CharTokenizer, NearDupIndex
from dataset_builder.slots import SlotExtractor

ROOT = Path(__file__).resolve().parents[1]
ANSWER = "김치찌개 어떠세요? 든든해요."


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def extractor() -> SlotExtractor:
    return SlotExtractor()


def row(instruction: str, output: str = ANSWER, input: str = "") -> AlpacaRow:
    return AlpacaRow(instruction=instruction, input=input, output=output)


def dropped_after(first: str, second: str, mode: str = "slots") -> bool:
    state = RowFilter(FilterConfig(mode=mode))
    state.add(row(first))
    return state.check(row(second)).reason in ("exact_duplicate", "near_duplicate")


# One pair per failure class of issue 16; the first of each group are the issue's own examples.
SAME_FRAME_DIFFERENT_SLOT = [
    ("이탈리아에서 유명한 음식은 무엇인가요?", "영국에서 유명한 음식은 무엇인가요?"),  # cuisine / country
    ("떡갈비를 어떻게 만들어야 맛있게 먹을 수 있을까요?", "육개장을 어떻게 만들어야 맛있게 먹을 수 있을까요?"),  # dish
    ("파이를 만드는 방법", "파스타를 만드는 방법"),  # a dish the catalog lacks (파이) against one it has
    ("김밥 만드는 방법", "캔디 만드는 법"),
    ("감자로 만들 수 있는 요리", "고구마로 만들 수 있는 요리"),  # ingredient
    ("부산 가면 꼭 먹어야 하는 음식", "대구 가면 꼭 먹어야 하는 음식"),  # region
    ("점심으로 먹기 좋은 국물 요리", "저녁으로 먹기 좋은 국물 요리"),  # meal time
    ("아이랑 먹을 저녁 메뉴", "부모님이랑 먹을 저녁 메뉴"),  # person
    ("매운 음식 추천해줘", "안 매운 음식 추천해줘"),  # constraint, by negation
    ("만 원 이하 점심 메뉴", "2만 원 이하 점심 메뉴"),  # constraint, by number
    ("돼지고기 없이 만드는 김치찌개", "돼지고기 넣은 김치찌개"),
]
DIFFERENT_QUESTION_TYPE = [
    ("김치찌개 만드는 법", "김치찌개 맛집 추천"),  # recipe vs where to eat
    ("삼겹살 칼로리", "삼겹살 굽는 법"),  # nutrition vs recipe
    ("두부 영양가", "두부 요리 추천"),  # nutrition vs recommendation
    ("잡채 보관 방법", "잡채 만드는 방법"),  # storage vs recipe
    ("아침은 꼭 챙겨 먹어야 해?", "아침 메뉴 추천"),  # yes/no advice vs recommendation
]
SAME_TASK = [
    ("사과의 영양가에 대해 알려주세요", "사과의 영양 가치에 대해 알려주세요."),  # compound split
    ("떡볶이 양념 만드는 법", "떡볶이 소스 만드는 방법"),  # synonyms 양념/소스, 법/방법
    ("다이어트에 좋은 간식을 추천해주세요", "다이어트 중인데 맛있으면서 건강한 간식을 추천해주세요."),  # paraphrase
    ("저녁 메뉴 추천해줘", "저녁 메뉴 추천해 주시겠어요?"),  # politeness
    ("오늘저녁 뭐먹지", "오늘 저녁 뭐 먹지"),  # spacing
    ("우리나라 대표 음식 알려줘", "한국에서 유명한 음식 알려줘"),  # 우리나라/한국, 대표/유명
    ("비 오는 날 점심 추천", "점심 추천해줘, 비 오는 날이라"),  # word order
    ("맵지 않은 음식 추천해줘", "안 매운 메뉴 뭐 있어?"),  # negation both ways
    ("전주 비빔밥 맛집 알려줘", "전주비빔밥 잘하는 집 알려줘"),  # catalog alias that names the region
]


@pytest.mark.parametrize(("a", "b"), SAME_FRAME_DIFFERENT_SLOT + DIFFERENT_QUESTION_TYPE)
def test_different_tasks_are_both_kept(a, b, extractor):
    assert not dropped_after(a, b), (extractor.frame(a).describe(), extractor.frame(b).describe())


@pytest.mark.parametrize(("a", "b"), SAME_TASK)
def test_the_same_task_reworded_is_dropped(a, b, extractor):
    assert dropped_after(a, b), (extractor.frame(a).describe(), extractor.frame(b).describe())


def test_plain_rouge_modes_stay_available_and_make_the_issues_mistakes():
    # What the issue measured: kiwi ROUGE-L drops a different country and keeps 영양가 / 영양 가치.
    assert dropped_after("이탈리아에서 유명한 음식은 무엇인가요?", "영국에서 유명한 음식은 무엇인가요?", "kiwi")
    assert not dropped_after("떡볶이 양념 만드는 법", "떡볶이 소스 만드는 방법", "kiwi")
    assert dropped_after("김밥 만드는 방법", "김밥 만드는 법", "char")


def test_frames_name_the_slots(extractor):
    frame = extractor.frame("전주 가서 매운 거 말고 비빔밥 맛집 알려줘")
    assert frame.qtype == "where"
    assert dict(frame.slots) == {"region": "전주", "constraint": "순한", "dish": "비빔밥"}
    assert extractor.frame("김치 찌개 만드는법").key == extractor.frame("김치찌개 만드는 법").key
    assert dict(extractor.frame("4인분 잡채 재료").slots)["number"] == "4"
    # Joined morphemes make compounds, but only of nouns: "음식 중 식어도" is not 중식 (Chinese food).
    assert "cuisine" not in dict(extractor.frame("배달 음식 중 식어도 맛있는 거").slots)
    assert dict(extractor.frame("메뉴 세 가지 추천").slots) == {"number": "3"}  # not 가지, the eggplant
    assert extractor.frame("비빔밥 만드는 방법을 알려 주실 수 있나요?").qtype == "recipe"  # a polite request


def test_without_the_catalog_dishes_still_count_as_different(tmp_path):
    bare = SlotExtractor(catalog=tmp_path / "missing.csv")
    a, b = bare.frame("떡갈비 만드는 법"), bare.frame("육개장 만드는 법")
    assert a.key != b.key and ("topic", "떡갈비") in a.slots


def test_heldout_pairs_meet_the_targets():
    bench = _load("near_duplicates")
    pairs = bench.load_pairs()
    predicted = bench.decide(pairs, "slots")
    heldout = bench.score(pairs, predicted, "heldout")
    assert heldout.precision >= 0.90 and heldout.recall >= 0.85, heldout


@pytest.mark.parametrize("mode", ["slots", "char"])
def test_pruned_index_decides_exactly_like_brute_force(mode):
    speed = _load("filter_speed")
    rows = speed.synthetic_rows(300, seed=3)
    fast = filter_rows(rows, FilterConfig(mode=mode), index_factory=NearDupIndex)
    slow = filter_rows(rows, FilterConfig(mode=mode), index_factory=BruteForceIndex)
    assert speed.decision_keys(fast) == speed.decision_keys(slow)
    assert fast.counts["near_duplicate"] > 5 and fast.counts["kept"] > 5


# LCS 7 of 9 and 11 characters: ROUGE-L is exactly 2*7/20 = 0.7; rouge_score's floats say 0.7000000000000001.
TIE_A, TIE_B = "가나다라마바사아자", "가나다라마바사차카타파"


def test_a_score_exactly_at_the_threshold_is_kept():
    fmeasure = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer()).score(TIE_A, TIE_B)["rougeL"].fmeasure
    assert fmeasure > 0.7  # the trap: a float comparison would drop it under "> 0.7"
    tokens_a, tokens_b = list(TIE_A), list(TIE_B)
    for index in (NearDupIndex(0.7), BruteForceIndex(0.7)):
        index.add(tokens_a)
        assert index.matches(tokens_b) == []
    state = RowFilter(FilterConfig(mode="char", threshold=0.7))
    state.add(row(TIE_A))
    assert state.check(row(TIE_B)).kept
    lower = RowFilter(FilterConfig(mode="char", threshold=0.69))
    lower.add(row(TIE_A))
    decision = lower.check(row(TIE_B))
    assert decision.reason == "near_duplicate" and decision.score == 0.7


def test_inputs_that_repeat_the_instruction_are_cleaned_and_caught_as_exact_duplicates():
    rows = [
        row("떡볶이 만드는 법 알려줘"),
        row("떡볶이 만드는 법 알려줘", input="떡볶이 만드는 법 알려줘"),  # input = instruction
        row("해장 메뉴 추천", input="해장 메뉴 추천: 국물 있는 걸로"),  # input starts with the instruction
        row("점심 추천해줘", output="오늘은 비빔밥 어떠세요? 채소가 많아 좋아요.",
            input="오늘은 비빔밥 어떠세요? 채소가 많아 좋아요."),  # input = output
        row("이 중에 골라줘", output="된장찌개가 좋겠어요, 구수하고 든든해요.",
            input="후보: 김치찌개, 된장찌개. 된장찌개가 좋겠어요, 구수하고 든든해요."),  # input holds the answer
    ]
    result = filter_rows(rows, FilterConfig(mode="char"))
    reasons = [d.reason for d in result.decisions]
    assert reasons == [None, "exact_duplicate", None, None, "answer_in_input"]
    assert "once cleaned (input repeated the instruction)" in result.decisions[1].detail
    assert [r.input for r in result.kept] == ["", "국물 있는 걸로", ""]
    assert result.cleaned == 2
    assert clean_row(row("해장", input="계란, 대파")) == (row("해장", input="계란, 대파"), "")


@pytest.mark.parametrize(
    ("output", "korean"),
    [
        ("Carbonara, Aglio e olio, Cacio e pepe 중에서 골라 보세요.", True),  # 33 % Hangul letters
        ("오늘은 Pad Thai나 Pho 어떠세요? Pho는 국물이 따뜻해서 좋아요.", True),
        ("추천 파스타예요:\n- Carbonara\n- Alfredo", True),  # names in a list do not count against it
        ("Try some pasta, it is great.", False),
        ("Sure, try pasta.", False),
        ("김치찌개 is great, you should try it tonight.", False),
    ],
)
def test_korean_answers_with_foreign_dish_names_are_good_answers(output, korean):
    assert (korean_sentence_share(output) >= 0.5) is korean
    decision = RowFilter(FilterConfig(mode="char")).check(row("파스타 추천해줘", output=output))
    assert (decision.reason != "bad_answer") is korean, decision.detail


def test_filter_cli_explains_each_near_duplicate_drop(tmp_path, capsys):
    from mechuri.cli import main

    src = tmp_path / "in.jsonl"
    rows = [("떡볶이 양념 만드는 법", ""), ("이탈리아 요리 추천해줘", ""), ("떡볶이 소스 만드는 방법", ""),
            ("프랑스 요리 추천해줘", ""), ("해장 메뉴 추천", "해장 메뉴 추천")]
    src.write_text("".join(json.dumps({"instruction": i, "input": n, "output": ANSWER}, ensure_ascii=False) + "\n"
                           for i, n in rows), encoding="utf-8")
    out, dropped = tmp_path / "out.jsonl", tmp_path / "dropped.jsonl"
    code = main(["dataset", "filter", "--in", str(src), "--out", str(out), "--dropped", str(dropped), "--explain"])
    assert code == 0
    text = capsys.readouterr().out
    assert f"{src}:3: near_duplicate, score 1.000" in text
    assert "dropped: 떡볶이 소스 만드는 방법" in text and f"matched: 떡볶이 양념 만드는 법  ({src}:1)" in text
    assert "recipe | dish=떡볶이; kind=소스 | rest: -" in text
    assert "1 cleaned" in text and "slots mode, threshold 0.7" in text
    kept = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["instruction"], r["input"]) for r in kept] == [
        ("떡볶이 양념 만드는 법", ""), ("이탈리아 요리 추천해줘", ""), ("프랑스 요리 추천해줘", ""), ("해장 메뉴 추천", "")]
    (record,) = [json.loads(line) for line in dropped.read_text(encoding="utf-8").splitlines()]
    assert record["line"] == 3 and record["nearest_source"] == f"{src}:1" and record["score"] == 1.0
    assert record["slots"]["row"] == record["slots"]["nearest"] == {
        "qtype": "recipe", "slots": {"dish": ["떡볶이"], "kind": ["소스"]}, "rest": []}


def test_filter_cli_modes_and_a_missing_catalog(tmp_path, capsys):
    from mechuri.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"instruction": "점심 추천", "output": ANSWER}, ensure_ascii=False) + "\n", "utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["dataset", "filter", "--in", str(src), "--out", str(out), "--mode", "kiwi"]) == 0
    assert "kiwi mode, threshold 0.7" in capsys.readouterr().out
    assert main(["dataset", "filter", "--in", str(src), "--out", str(out), "--tokenizer", "char"]) == 0
    assert "char mode, threshold 0.7" in capsys.readouterr().out
    missing = tmp_path / "nope.csv"
    assert main(["dataset", "filter", "--in", str(src), "--out", str(out), "--catalog", str(missing)]) == 1
    assert f"dish catalog {missing} not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dataset", "filter", "--in", str(src), "--out", str(out), "--mode", "kiwi", "--tokenizer", "char"])
    with pytest.raises(ValueError, match="unknown mode 'jamo'"):
        FilterConfig(mode="jamo")
