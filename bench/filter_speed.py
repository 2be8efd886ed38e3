"""How fast is `mechuri dataset filter`, and does its pruned ROUGE-L index decide exactly like brute force?

    .venv/bin/python bench/filter_speed.py [--rows 10000] [--sample 1000] [--mode slots|kiwi|char|all]

Rows are synthetic Korean chat requests built combinatorially (times, situations, targets, constraints, endings,
dish templates), with some exact duplicates and rows the rules drop mixed in, so every filter rule fires. The target
is 10,000 rows in <= 60 s on 2 cores; agreement is checked row by row (kept or not, reason, nearest row) against
`rouge_scorer.RougeScorer` over every kept row (in slots mode: every kept row with the same slots).
bench/near_duplicates.py reports this per mode together with precision and recall on the labelled pairs.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_builder.filter import MODES, FilterConfig, filter_rows, make_matcher
from dataset_builder.schema import AlpacaRow
from dataset_builder.similarity import BruteForceIndex, NearDupIndex

WHEN = ("", "오늘", "지금", "내일", "이번 주말", "퇴근하고", "새벽에", "출근 전에", "시험 끝나고", "비 오는 날")
WHO = ("", "혼자", "친구 둘이랑", "부모님이랑", "아이랑", "회사 동료들과", "여자친구랑", "손님 여섯 명이랑", "자취방에서")
WHY = ("", "비가 와서", "너무 더워서", "쌀쌀해서", "다이어트 중이라", "술 마신 다음 날이라", "감기 기운이 있어서",
       "입맛이 없어서", "스트레스 받아서", "돈이 없어서", "배가 너무 고파서", "운동 끝나서")
TARGET = ("점심", "저녁", "야식", "아침", "간식", "디저트", "술안주", "국물 요리", "면 요리", "밥 메뉴", "배달 음식",
          "편의점 메뉴", "해장 음식", "가벼운 샐러드", "고기 요리", "생선 요리", "분식", "브런치", "도시락 반찬")
LIMIT = ("", "만 원 이하로", "매운 거 빼고", "10분 안에 되는", "전자레인지로 되는", "기름지지 않은", "단백질 많은",
         "돼지고기 없이", "오래 두고 먹을 수 있는", "아이도 먹을 수 있는", "뜨끈한", "시원한")
ASK = ("추천해줘", "뭐 먹지?", "알려줄래?", "골라 주세요", "뭐가 좋을까?", "메뉴 좀 정해줘", "추천 부탁해요", "있을까?")
DISH = ("김치찌개", "된장찌개", "제육볶음", "떡볶이", "잡채", "불고기", "비빔밥", "칼국수", "냉면", "삼계탕", "갈비찜",
        "순두부찌개", "닭갈비", "김밥", "파전", "부대찌개", "콩나물국밥", "카레", "오므라이스", "감자탕", "쌀국수")
DISH_ASK = ("{d} 만드는 법 알려줘", "{d} 맛있게 끓이는 비법이 있을까?", "{d}에 어울리는 반찬은?", "{d} 칼로리 높아?",
            "{d} 재료 뭐 필요해?", "{d} 말고 비슷한 메뉴 없어?", "{d} 처음 만들어 보는데 주의할 점")
REGION = ("부산", "전주", "제주", "속초", "대구", "광주", "춘천", "여수", "안동", "통영", "강릉")
REGION_ASK = ("{r} 가면 꼭 먹어야 하는 음식", "{r} 향토 음식 알려줘", "{r} 여행 중인데 {t} 뭐 먹을까")
ANSWERS = ("{d} 어떠세요? 든든하고 맛있어요.", "오늘은 {d}를 추천해요. 부담 없이 드시기 좋아요.",
           "{d}가 잘 어울려요. 따뜻하게 드세요!", "가볍게 {d} 드셔 보세요. 금방 준비돼요.")


def synthetic_rows(n: int, seed: int = 0) -> list[AlpacaRow]:
    rng = random.Random(seed)
    rows: list[AlpacaRow] = []
    while len(rows) < n:
        kind = rng.random()
        dish = rng.choice(DISH)
        if kind < 0.55:
            parts = [rng.choice(WHEN), rng.choice(WHO), rng.choice(WHY), rng.choice(LIMIT), rng.choice(TARGET)]
            instruction = " ".join(p for p in parts if p) + " " + rng.choice(ASK)
        elif kind < 0.75:
            instruction = rng.choice(DISH_ASK).format(d=dish)
        elif kind < 0.85:
            instruction = rng.choice(REGION_ASK).format(r=rng.choice(REGION), t=rng.choice(TARGET))
        elif kind < 0.92 and rows:
            instruction = rng.choice(rows).instruction.replace(" ", "  ", 1) + rng.choice(("", "!", "?", "~"))
        elif kind < 0.95:
            instruction = rng.choice(("이 사진 속 음식 이름 알려줘", "레시피 영상 찾아줘", "Give me a recipe", "?"))
        else:
            instruction = f"냉장고에 {rng.choice(DISH)} 재료가 있는데 뭐 해 먹지"
        output = rng.choice(ANSWERS).format(d=dish) if rng.random() > 0.02 else "Sure, try pasta."
        inp = f"{rng.randint(2, 8)}명, 예산 {rng.randint(1, 9)}만 원" if rng.random() < 0.1 else ""
        rows.append(AlpacaRow(instruction=instruction, input=inp, output=output))
    return rows


def decision_keys(result) -> list[tuple]:
    return [(d.kept, d.reason, d.score, d.nearest.question() if d.nearest else None) for d in result.decisions]


def agreement(rows: list[AlpacaRow], config: FilterConfig, tokenizer=None) -> tuple[int, int, float, float]:
    """(rows that agree, rows, pruned seconds, brute-force seconds)."""
    fast = filter_rows(rows, config, tokenizer=tokenizer, index_factory=NearDupIndex)
    slow = filter_rows(rows, config, tokenizer=tokenizer, index_factory=BruteForceIndex)
    same = sum(a == b for a, b in zip(decision_keys(fast), decision_keys(slow), strict=True))
    return same, len(rows), fast.seconds, slow.seconds


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Speed:
    mode: str
    startup_s: float  # Kiwi, and in slots mode the lexicon and catalog: only in a process that has not built them
    rows: int
    seconds: float
    tokenize_seconds: float
    counts: dict
    agree: int
    sample: int
    pruned_s: float
    brute_s: float
    rss_mb: float


def measure(mode: str, rows: list[AlpacaRow], sample: int, threshold: float | None = None) -> Speed:
    config = FilterConfig(mode=mode, threshold=threshold)
    start = time.perf_counter()
    make_matcher(config).prepare(["매운 음식 추천해줘"])  # Kiwi starts, loads its model; slots compile the lexicon
    startup = time.perf_counter() - start
    result = filter_rows(rows, config)
    same, total, fast_s, slow_s = agreement(rows[:sample], config)
    return Speed(mode, startup, len(rows), result.seconds, result.tokenize_seconds, dict(result.counts), same, total,
                 fast_s, slow_s, rss_mb())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=1_000)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--mode", choices=(*MODES, "all"), default="all")
    modes.add_argument("--tokenizer", choices=("kiwi", "char", "both"), help="older spelling: plain ROUGE-L modes only")
    parser.add_argument("--threshold", type=float, help="default: the mode's own (0.7 for all three)")
    args = parser.parse_args()
    if args.tokenizer:
        args.mode = {"both": "rouge"}.get(args.tokenizer, args.tokenizer)
    print(f"python {platform.python_version()}, {args.rows} synthetic rows")
    rows = synthetic_rows(args.rows)
    chosen = {"all": MODES, "rouge": ("kiwi", "char")}.get(args.mode, (args.mode,))
    for mode in chosen:
        s = measure(mode, rows, args.sample, args.threshold)
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.counts.items(), key=lambda kv: -kv[1]))
        print(f"[{mode}] start-up {s.startup_s:.2f} s; {s.rows} rows in {s.seconds:.2f} s = "
              f"{s.rows / s.seconds:,.0f} rows/s (tokenizing {s.tokenize_seconds:.2f} s; {reasons})")
        print(f"[{mode}] brute-force agreement on {s.sample} rows: {s.agree}/{s.sample} "
              f"(pruned {s.pruned_s:.2f} s, brute force {s.brute_s:.2f} s); peak RSS {s.rss_mb:.0f} MB")
    print(f"load average {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
