"""Training rows for the demo model made from the dish catalog's tags, so that a small model learns what a question
asks for: "매운 거 먹고 싶어" → a dish tagged 매운, and "다른 거" on it → another 매운 dish, not any dish at all.

A question is put together from a wish phrase (several wordings per wish, negations included: "맵지 않은", "고기 안
먹는"), an optional everyday prefix that carries no wish ("퇴근하고", "친구랑") and an ending ("추천해 줘", "뭐 있어?").
The answer opens with words that repeat the wish ("매운 게 당기면"), names one dish that fits it (model/food/fit.py), and
gives a short reason. Every phrase here was written for these rows; none is copied from the held-out questions in
data/demo_eval_questions.jsonl, and tests/test_demo_rows.py checks that no generated question is one of them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from model.food.fit import WISHES, dish_fits, fitting_dishes, wishes_in


@dataclass(frozen=True)
class WishText:
    asks: tuple[str, ...]  # how a question says it, before an ending ("매운 거")
    opens: tuple[str, ...]  # how an answer picks it up, before the dish ("매운 게 당기면")
    reasons: tuple[str, ...]  # a sentence after "〈dish〉 어때요?"


TEXTS: dict[str, WishText] = {
    "매운": WishText(
        ("매운 거", "매운 음식", "매콤한 거", "매콤한 음식", "얼큰한 거", "칼칼한 거", "맵게 먹을 거", "매운 요리",
         "화끈하게 매운 거", "매운맛 나는 거"),
        ("매운 게 당기면", "매콤한 게 생각날 땐", "얼큰하게 드시고 싶다면", "매운맛이 필요할 땐"),
        ("맵고 자극적인 맛에 땀이 쏙 빠져요.", "매콤한 양념에 밥이 술술 넘어가요.", "얼얼하게 매워서 기분 전환에 좋아요."),
    ),
    "안매운": WishText(
        ("안 매운 거", "맵지 않은 음식", "맵지 않은 거", "순한 음식", "순한 맛 메뉴", "매운 거 말고 다른 거",
         "매운 걸 못 먹는데 먹을 거", "덜 매운 거"),
        ("맵지 않은 걸 찾으면", "순하게 드시고 싶다면", "매운 게 부담스러우면"),
        ("맵지 않고 순해서 누구나 편하게 먹어요.", "자극이 적고 부드러워서 부담이 없어요.", "순한 맛이라 아이들도 잘 먹어요."),
    ),
    "차가운": WishText(
        ("차가운 거", "차가운 음식", "찬 음식", "시원한 거", "시원하게 먹을 거", "차갑게 먹는 요리", "얼음 띄운 거"),
        ("시원한 게 당기면", "차가운 게 생각날 땐", "시원하게 드시고 싶다면"),
        ("차갑고 시원해서 열이 확 식어요.", "시원한 맛에 입맛이 살아나요.", "한입 먹으면 속까지 시원해져요."),
    ),
    "따뜻한": WishText(
        ("따뜻한 거", "따뜻한 음식", "따끈한 거", "뜨끈한 음식", "뜨거운 요리", "따뜻하게 먹을 거"),
        ("따뜻한 게 당기면", "뜨끈한 게 생각날 땐", "따끈하게 드시고 싶다면"),
        ("따뜻해서 몸이 사르르 풀려요.", "뜨끈하게 먹으면 속이 든든해요.", "김이 모락모락 나서 먹는 동안 따뜻해요."),
    ),
    "여름": WishText(
        ("여름에 먹을 거", "더운 날 먹을 음식", "더울 때 먹을 거", "무더위에 먹을 메뉴", "여름 메뉴", "폭염에 먹을 거"),
        ("더운 날엔", "여름에는", "더위에 지쳤다면"),
        ("더위에 지친 입맛을 시원하게 살려 줘요.", "여름에 먹으면 기운이 나요.", "더운 날에도 산뜻하게 먹을 수 있어요."),
    ),
    "겨울": WishText(
        ("추운 날 먹을 거", "겨울에 먹을 음식", "추울 때 먹을 거", "쌀쌀한 날 메뉴", "겨울 메뉴", "눈 오는 날 먹을 거"),
        ("추운 날엔", "겨울에는", "쌀쌀할 땐"),
        ("추위에 언 몸을 따뜻하게 녹여 줘요.", "겨울에 먹으면 속부터 든든해져요.", "찬 바람 부는 날 먹기 딱 좋아요."),
    ),
    "비오는날": WishText(
        ("비 오는 날 먹을 거", "비가 올 때 먹을 음식", "장마철 메뉴", "비 오는 날 메뉴", "비 내리는 날 먹을 거"),
        ("비 오는 날엔", "비가 올 땐", "장마철에는"),
        ("빗소리를 들으며 먹으면 더 맛있어요.", "비 오는 날 생각나는 대표 메뉴예요.", "눅눅한 날씨에 먹으면 기분이 좋아져요."),
    ),
    "국물": WishText(
        ("국물 요리", "국물 있는 거", "국물 음식", "국물 있는 메뉴", "뜨끈한 국물", "국 종류", "찌개 종류"),
        ("국물이 당기면", "국물 요리로는", "국물 있는 메뉴로는"),
        ("국물이 진해서 밥 한 공기가 금방이에요.", "국물까지 싹 비우게 돼요.", "깊은 국물 맛이 속을 든든하게 채워 줘요."),
    ),
    "면": WishText(
        ("면 요리", "면 종류", "국수 종류", "면 음식", "면으로 된 거", "국수 요리"),
        ("면이 당기면", "면 요리로는", "후루룩 면이 생각날 땐"),
        ("쫄깃한 면발이 후루룩 넘어가요.", "면 요리라 가볍게 한 그릇 먹기 좋아요.", "면발과 양념이 잘 어울려요."),
    ),
    "고기": WishText(
        ("고기 요리", "고기 음식", "고기 들어간 거", "고기 메뉴", "고기 먹을 거", "든든한 고기 요리"),
        ("고기가 당기면", "고기 요리로는", "고기가 생각날 땐"),
        ("고기가 푸짐해서 든든해요.", "고소한 고기 맛에 힘이 나요.", "단백질이 넉넉해서 배가 든든해요."),
    ),
    "해산물": WishText(
        ("해산물 요리", "해물 요리", "생선 요리", "해산물 들어간 거", "해물 들어간 음식", "회 종류", "생선 들어간 거"),
        ("해산물이 당기면", "해물 요리로는", "바다 맛이 생각날 땐"),
        ("싱싱한 해산물 맛이 살아 있어요.", "바다 향이 가득해서 입맛이 돌아요.", "해물이 푸짐하게 들어가요."),
    ),
    "채식": WishText(
        ("채식 메뉴", "채식 음식", "비건 메뉴", "고기 없는 음식", "고기 안 들어간 거", "고기 빼고 먹을 거",
         "고기 안 먹는 사람이 먹을 거", "채식하는 사람 메뉴"),
        ("채식으로는", "고기 없이 드시려면", "채식 메뉴로는"),
        ("고기 없이도 맛이 꽉 차요.", "채소와 곡물로 만들어서 속이 편해요.", "고기를 안 넣어도 든든하게 먹을 수 있어요."),
    ),
    "디저트": WishText(
        ("디저트", "후식", "달달한 거", "달콤한 거", "단 거", "카페 디저트", "달콤한 디저트", "단 음식"),
        ("달달한 게 당기면", "디저트로는", "후식으로는", "달콤한 게 생각날 땐"),
        ("달콤해서 기분이 좋아져요.", "음료와 곁들이면 더 맛있어요.", "달달한 맛에 피로가 풀려요."),
    ),
    "음료": WishText(
        ("마실 거", "음료", "음료수", "마실 만한 거", "시원한 음료", "따뜻한 음료"),
        ("마실 거로는", "음료로는", "한 잔 드시고 싶다면"),
        ("한 잔 마시면 기분이 상쾌해져요.", "목을 부드럽게 적셔 줘요.", "가볍게 마시기 좋아요."),
    ),
    "간식": WishText(
        ("간식", "출출할 때 먹을 거", "주전부리", "군것질", "간단한 간식", "오후 간식"),
        ("출출할 땐", "간식으로는", "입이 심심할 땐"),
        ("간단하게 먹기 좋은 간식이에요.", "한두 개 집어 먹기 딱 좋아요.", "출출함을 달래기에 알맞아요."),
    ),
    "아침": WishText(
        ("아침 메뉴", "아침에 먹을 거", "아침밥", "아침 식사", "출근 전에 먹을 거", "모닝 메뉴", "아침으로 먹을 음식"),
        ("아침에는", "아침 식사로는", "바쁜 아침엔"),
        ("아침에 먹어도 속이 편해요.", "든든하게 하루를 시작할 수 있어요.", "간단하게 아침을 챙기기 좋아요."),
    ),
    "야식": WishText(
        ("야식", "야식 메뉴", "밤에 먹을 거", "새벽에 먹을 음식", "늦은 밤 메뉴", "자기 전에 먹을 거", "밤에 시킬 거"),
        ("야식으로는", "늦은 밤엔", "밤에 출출할 땐"),
        ("밤에 먹으면 더 맛있는 메뉴예요.", "야식으로 시켜 먹기 좋아요.", "늦은 시간 허기를 달래 줘요."),
    ),
    "해장": WishText(
        ("해장 메뉴", "해장 음식", "해장할 거", "숙취 풀 음식", "술 마신 다음 날 먹을 거", "과음한 날 메뉴",
         "속 풀 음식", "숙취에 좋은 거"),
        ("해장에는", "숙취엔", "과음한 다음 날엔"),
        ("속을 시원하게 풀어 줘요.", "숙취로 지친 속을 달래 줘요.", "국물이 쓰린 속을 편하게 해 줘요."),
    ),
    "술안주": WishText(
        ("술안주", "안주", "맥주 안주", "소주 안주", "술이랑 먹을 거", "와인 안주", "막걸리 안주", "맥주랑 먹을 거"),
        ("술안주로는", "안주로는", "술 한잔에는"),
        ("술이 술술 들어가는 안주예요.", "한잔 곁들이기 딱 좋아요.", "술과 함께 먹으면 더 맛있어요."),
    ),
    "다이어트": WishText(
        ("다이어트 메뉴", "다이어트 음식", "살 안 찌는 거", "칼로리 낮은 음식", "저칼로리 메뉴", "살 빼는 중에 먹을 거",
         "식단 관리 메뉴"),
        ("다이어트 중이라면", "가볍게 드시려면", "칼로리가 걱정되면"),
        ("칼로리가 낮아서 부담이 적어요.", "가볍지만 포만감이 있어요.", "식단 관리할 때 먹기 좋아요."),
    ),
    "회복식": WishText(
        ("아플 때 먹을 거", "감기 걸렸을 때 먹을 음식", "몸살 났을 때 메뉴", "배탈 났을 때 먹을 거", "회복에 좋은 음식",
         "기운 없을 때 먹을 거"),
        ("몸이 안 좋을 땐", "아플 때는", "기운이 없을 땐"),
        ("부드럽고 소화가 잘돼서 속이 편해요.", "기운을 되찾는 데 도움이 돼요.", "자극이 적어 아플 때 먹기 좋아요."),
    ),
    "편의점": WishText(
        ("편의점 메뉴", "편의점에서 먹을 거", "편의점 음식", "편의점에서 살 거", "편의점 간편식"),
        ("편의점에서는", "편의점 메뉴로는"),
        ("편의점에서 바로 사서 먹을 수 있어요.", "간단하게 한 끼를 해결할 수 있어요.", "전자레인지에 데우면 금방이에요."),
    ),
}  # fmt: skip

PREFIXES = ("", "", "", "오늘 ", "요즘 ", "점심으로 ", "저녁으로 ", "퇴근하고 ", "주말에 ", "친구랑 ", "혼자 ",
            "집에서 ", "지금 ", "오랜만에 ", "기분 전환으로 ")  # fmt: skip
ENDINGS = (" 추천해 줘", " 먹고 싶어", " 뭐 있어?", " 알려 줘", " 골라 줘", " 추천 부탁해", " 없을까?", " 당기는데",
           " 뭐가 좋을까?", " 추천해 주세요")  # fmt: skip
RETRY_OPENS = ("그럼", "그렇다면", "이번엔", "대신")
DRINKS = ("음료", "술")  # categories: a drink answers only a question that asks for one


def question(rng: random.Random, wish: str) -> str:
    text = TEXTS[wish]
    return (rng.choice(PREFIXES) + rng.choice(text.asks) + rng.choice(ENDINGS)).strip()


def answer(rng: random.Random, wish: str, dish: str, retry: bool = False) -> str:
    text = TEXTS[wish]
    opener = f"{rng.choice(RETRY_OPENS)} {rng.choice(text.opens)}" if retry else rng.choice(text.opens)
    return f"{opener} {dish} 어때요? {rng.choice(text.reasons)}"


@dataclass(frozen=True)
class TagRow:
    """One training question about a wish: its answer dish, and the dishes turned down before it (retry rows)."""

    question: str
    answer: str
    turned_down: tuple[str, ...] = ()


def dish_pools(catalog: Sequence, familiar: Mapping[str, int], size: int) -> dict[str, list[str]]:
    """For each wish, the `size` fitting dishes the demo data names most (then catalog order): a small model learns a
    dozen names per wish as whole words, where 125 spicy dishes seen twice each come out as invented blends."""
    pools = {}
    for wish in TEXTS:
        fitting = [d for d in fitting_dishes(catalog, [wish]) if wish == "음료" or d.category not in DRINKS]
        ranked = sorted(range(len(fitting)), key=lambda i: (-familiar.get(fitting[i].name, 0), i))
        pools[wish] = [fitting[i].name for i in ranked[:size]]
    return pools


def tag_rows(catalog: Sequence, rng: random.Random, per_wish: int, retries_per_wish: int,
             pools: Mapping[str, Sequence[str]] | None = None) -> list[TagRow]:
    """`per_wish` first answers and `retries_per_wish` "다른 거" answers for every wish, each naming a dish of the wish's
    pool (every fitting dish without `pools`) that fits everything the generated question asks for, as model/food/fit.py
    reads it ("뜨끈한 국물" asks for 따뜻한 and 국물)."""
    by_name = {d.name: d for d in catalog}
    rows: list[TagRow] = []
    for wish in TEXTS:
        pool = [by_name[n] for n in pools[wish]] if pools else fitting_dishes(catalog, [wish])
        for n in range(per_wish + retries_per_wish):
            for _ in range(10):  # a wording whose wishes too few dishes meet is drawn again
                asked = question(rng, wish)
                wanted = [w for w in WISHES if w in set(wishes_in(asked)) | {wish}]
                dishes = [d.name for d in pool if dish_fits(d, wanted)]
                if len(dishes) >= 3:
                    break
            else:
                continue
            if n < per_wish:
                rows.append(TagRow(asked, answer(rng, wish, rng.choice(dishes))))
            else:
                first, *more = rng.sample(dishes, rng.choice((2, 3)))
                rows.append(TagRow(asked, answer(rng, wish, more[-1], retry=True), (first, *more[:-1])))
    return rows
