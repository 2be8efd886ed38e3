"""`mechuri dataset stats FILE`: what a dataset covers, in plain tables.

Row counts, length distributions, the most similar pairs (ROUGE-L), situation coverage by keywords, and dish
coverage when the catalog `data/dishes.csv` (columns name,aliases,category,tags,allergens; lists `|`-separated)
exists. Works on Alpaca JSONL and on seed-task JSONL.
"""

from __future__ import annotations

import csv
import heapq
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dataset_builder.cleaning import normalize_key
from dataset_builder.schema import AlpacaRow, BadLine, read_alpaca_or_seed
from dataset_builder.similarity import NearDupIndex, Tokenizer, tokenize_all

DEFAULT_CATALOG = Path("data/dishes.csv")

# Situation -> patterns searched in the question (instruction + input). Keyword counts are a rough guide.
SITUATIONS: dict[str, tuple[str, ...]] = {
    "아침": ("아침", "브런치", "조식", "출근 전"),
    "점심": ("점심", "(?<!브)런치", "점메추"),
    "저녁": ("저녁", "저메추", "퇴근"),
    "야식": ("야식", "새벽", "늦은 밤", "밤에", "밤늦"),
    "날씨·계절": ("날씨", "비 오", "비가", "비 와", "눈 오", "눈이 ", "더운", "더워", "덥", "추운", "추워", "춥",
                 "쌀쌀", "장마", "여름", "겨울", "폭염", "영하", "습해", "습한"),
    "해장": ("해장", "숙취", "과음", "술 마신 다음"),
    "다이어트": ("다이어트", "칼로리", "살 빼", "살빼", "체중", "식단", "건강식"),
    "회복식": ("아플", "아파", "아픈", "감기", "몸살", "회복", "죽(?!겠|을 것)", "소화", "배탈", "장염", "입맛", "기운"),
    "디저트·카페": ("디저트", "카페", "케이크", "커피", "음료", "아이스크림", "달달", "단 거", "단것", "빵", "후식"),
    "편의점": ("편의점", "GS25", "CU", "세븐일레븐", "이마트24"),
    "배달": ("배달", "시켜 먹", "시켜먹", "포장"),
    "요리법": ("만드는 법", "만드는 방법", "만들어", "레시피", "요리법", "어떻게 만들", "끓이", "조리법"),
    "재료·영양": ("재료", "영양", "냉장고", "비타민", "단백질", "성분", "식재료"),
    "데이트·모임·가족": ("데이트", "모임", "회식", "가족", "부모님", "아이(?!스)", "아이들", "친구", "손님", "집들이", "생일",
                   "기념일", "명절", "연인", "여자친구", "남자친구"),
    "지역 음식": ("지역", "부산", "전주", "제주", "강원", "대구", "광주", "여행", "향토", "명물", "춘천", "통영", "속초",
              "여수", "안동"),
    "술안주": ("안주", "맥주", "소주", "막걸리", "와인", "하이볼", "술자리", "한잔"),
    "혼밥": ("혼밥", "혼자", "1인", "자취"),
    "알레르기·못 먹는 것": ("알레르기", "알러지", "못 먹", "비건", "채식", "글루텐", "유당", "땅콩", "갑각류", "견과류 알"),
    "다른 거·후속": ("다른 거", "다른 걸", "다른 메뉴", "다른 것", "말고", "별로", "또 다른", "다시 추천", "그거 말고"),
}


@dataclass
class Dish:
    name: str
    aliases: tuple[str, ...]
    category: str


def read_catalog(path: Path) -> list[Dish]:
    with path.open(encoding="utf-8", newline="") as f:
        return [
            Dish(
                name=rec["name"].strip(),
                aliases=tuple(a.strip() for a in (rec.get("aliases") or "").split("|") if a.strip()),
                category=(rec.get("category") or "").strip(),
            )
            for rec in csv.DictReader(f)
            if (rec.get("name") or "").strip()
        ]


_NUMBER = re.compile(r"^[-+]?[0-9][0-9.,]*%?$")
_CONTROL = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(cell: str) -> str:
    """One cell, one line: a question whose input starts on a new line must not break the table."""
    return cell.translate(str.maketrans(_CONTROL))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left/right aligned text table (numbers right, text left), Hangul counted as two columns wide."""

    def width(s: str) -> int:
        return sum(2 if "\u1100" <= c <= "\uffdc" and not c.isascii() else 1 for c in s)

    cells = [[_escape(str(h)) for h in headers]] + [
        [f"{c:.3f}" if isinstance(c, float) else _escape(str(c)) for c in r] for r in rows
    ]
    widths = [max(width(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_NUMBER.match(r[i]) for r in cells[1:]) for i in range(len(headers))]
    out = []
    for n, r in enumerate(cells):
        parts = []
        for i, c in enumerate(r):
            pad = " " * (widths[i] - width(c))
            parts.append(pad + c if numeric[i] else c + pad)
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _percentile(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def length_table(named: dict[str, list[int]]) -> str:
    rows = []
    for name, values in named.items():
        if not values:
            continue
        v = sorted(values)
        percentiles = [_percentile(v, q) for q in (0.1, 0.5, 0.9)]
        rows.append([name, len(v), v[0], *percentiles, v[-1], f"{statistics.fmean(v):.1f}"])
    return table(["field (chars)", "rows", "min", "p10", "p50", "p90", "max", "mean"], rows)


def situation_table(rows: Sequence[AlpacaRow]) -> str:
    patterns = {name: re.compile("|".join(words)) for name, words in SITUATIONS.items()}
    out = []
    for name, pattern in patterns.items():
        hits = [r for r in rows if pattern.search(r.question())]
        example = hits[0].instruction[:30] if hits else "-- none --"
        out.append([name, len(hits), f"{len(hits) / max(len(rows), 1):.1%}", example])
    return table(["situation", "rows", "share", "example"], out)


def dish_tables(rows: Sequence[AlpacaRow], dishes: Sequence[Dish]) -> str:
    # Longest names first so "김치찌개" wins over "김치". One-letter names ("죽", "떡") match too much to count, and
    # two-letter ones must start a word: the "라면" in "먹을 거라면" is an ending, not noodles.
    surface_to_dish = {}
    for dish in dishes:
        for surface in (dish.name, *dish.aliases):
            if len(surface) >= 2:
                surface_to_dish.setdefault(surface, dish.name)
    if not surface_to_dish:
        return "dish catalog has no usable names"
    alternatives = [
        re.escape(s) if len(s) > 2 else rf"(?<![가-힣]){re.escape(s)}"
        for s in sorted(surface_to_dish, key=len, reverse=True)
    ]
    pattern = re.compile("|".join(alternatives))
    category = {d.name: d.category for d in dishes}
    mentions: Counter = Counter()
    for row in rows:
        mentions.update({surface_to_dish[m.group(0)] for m in pattern.finditer(row.output)})
    mentioned = [d.name for d in dishes if mentions[d.name]]
    by_category: Counter = Counter()
    dishes_per_category = Counter(d.category for d in dishes)
    for name, count in mentions.items():
        by_category[category.get(name, "")] += count
    lines = [
        f"catalog dishes named in some answer: {len(mentioned)} / {len(dishes)} ({len(mentioned) / len(dishes):.0%})",
        "",
        table(["most named dish", "rows"], mentions.most_common(10)),
        "",
        table(
            ["category", "dishes", "mentions"],
            [[c or "(none)", dishes_per_category[c], by_category[c]] for c in sorted(dishes_per_category)],
        ),
    ]
    never = [d.name for d in dishes if not mentions[d.name]]
    if never:
        lines += ["", f"never named ({len(never)}): " + ", ".join(never[:20]) + (" ..." if len(never) > 20 else "")]
    return "\n".join(lines)


def similar_pairs(
    rows: Sequence[AlpacaRow], tokenizer: Tokenizer, threshold: float = 0.5, top: int = 10
) -> list[tuple[float, int, int]]:
    """The `top` most similar question pairs above `threshold` (ROUGE-L F1), as (score, i, j) with i < j."""
    token_lists = tokenize_all(tokenizer, [r.question() for r in rows])
    index = NearDupIndex(threshold)
    best: list[tuple[float, int, int]] = []
    for j, tokens in enumerate(token_lists):
        for score, i in index.matches(tokens):
            heapq.heappush(best, (score, -i, j))
            if len(best) > top:
                heapq.heappop(best)
        index.add(tokens)
    return [(s, -i, j) for s, i, j in sorted(best, reverse=True)]


def render(path: Path, tokenizer: Tokenizer, catalog: Path | None, top_pairs: int = 10) -> str:
    bad: list[BadLine] = []
    rows = [row for _, row in read_alpaca_or_seed(path, bad)]
    with_input = sum(1 for r in rows if r.input.strip())
    unique = len({normalize_key(r.question()) for r in rows})
    parts = [
        f"# {path}",
        table(
            ["rows", "bad lines", "unique questions", "empty input", "with input"],
            [[len(rows), len(bad), unique, len(rows) - with_input, with_input]],
        ),
        "",
        length_table(
            {
                "instruction": [len(r.instruction) for r in rows],
                "input (non-empty)": [len(r.input) for r in rows if r.input.strip()],
                "output": [len(r.output) for r in rows],
            }
        ),
        "",
        situation_table(rows),
        "",
    ]
    pairs = similar_pairs(rows, tokenizer, top=top_pairs) if rows else []
    if pairs:
        parts.append(
            table(
                ["ROUGE-L", "row", "question", "row", "question"],
                [[s, i + 1, rows[i].question()[:28], j + 1, rows[j].question()[:28]] for s, i, j in pairs],
            )
        )
    else:
        parts.append(f"no question pair above ROUGE-L 0.5 ({tokenizer.name} tokens)")
    if catalog is not None and catalog.exists():
        parts += ["", dish_tables(rows, read_catalog(catalog))]
    for b in bad[:10]:
        parts.append(f"bad line {b}")
    return "\n".join(parts)
