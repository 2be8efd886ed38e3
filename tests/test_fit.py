"""What a question asks for (model/food/fit.py): wishes read from kiwipiepy lemmas, and whether an answer's dish
fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.food.dishes import DishCatalog
from model.food.fit import WISHES, answer_fits, request_check, wishes_in

HELD_OUT = Path(__file__).resolve().parents[1] / "data" / "demo_eval_questions.jsonl"


@pytest.mark.parametrize(("question", "wishes"), [
    ("매운 거 먹고 싶어", ("매운",)),
    ("얼큰한 국물 땡겨", ("매운", "국물")),
    ("맵지 않은 메뉴", ("안매운",)),
    ("안 매운 걸로 추천해줘", ("안매운",)),
    ("매운 거 못 먹어요", ("안매운",)),
    ("덜 매운 걸로", ("안매운",)),
    ("매운 거 말고 순한 거", ("안매운",)),
    ("시원한 국물", ("국물",)),  # a hot soup that clears the head, not a cold dish
    ("시원한 거 먹고 싶다", ("차가운",)),
    ("찬 음식", ("차가운",)),
    ("차가운 음식 없을까?", ("차가운",)),  # asks whether there is one; 없 does not negate here
    ("고기 안 먹는 친구랑 뭐 먹지", ("채식",)),
    ("고기 빼고", ("채식",)),
    ("비건 친구랑 먹을 거", ("채식",)),
    ("고기 먹고 싶어", ("고기",)),
    ("술 마신 다음 날", ("해장",)),
    ("맥주랑 어울리는 안주", ("술안주",)),
    ("밤에 출출해", ("야식",)),
    ("카페에서 마실 거", ("음료",)),
    ("비가 주룩주룩 내리는데", ("비오는날",)),
    ("푹푹 찌는 날씨", ("여름",)),
])
def test_wishes_from_lemmas(question: str, wishes: tuple[str, ...]) -> None:
    assert wishes_in(question) == wishes


@pytest.mark.parametrize("question", [
    "매운탕 끓이는 법",  # a dish name, not a wish
    "매우 배고파",  # 매우 is not 맵
    "회사 근처 점심",  # 회사 is not 회
    "회식 메뉴 추천",
    "점심 뭐 먹지",
    "김치찌개 먹고 싶어",
    "매운 거 좋아하는데 동생은 못 먹어, 순한 걸로도 괜찮고",  # both ways: no clear wish
])
def test_no_wish_where_there_is_none(question: str) -> None:
    assert wishes_in(question) == ()


def test_the_held_out_questions_state_what_the_reader_reads() -> None:
    """data/demo_eval_questions.jsonl states each question's wishes by hand; the reader must agree with every one."""
    rows = [json.loads(line) for line in HELD_OUT.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 40 and sum(bool(r["wishes"]) for r in rows) >= 40
    disagree = [(r["instruction"], r["wishes"], wishes_in(r["instruction"])) for r in rows
                if sorted(wishes_in(r["instruction"])) != sorted(r["wishes"])]
    assert not disagree
    catalog = DishCatalog.load()
    # each reference answer names a catalog dish that fits: the targets are reachable with this catalog
    assert all(answer_fits(catalog, r["output"], r["wishes"]) for r in rows if r["wishes"])


def test_answer_fits_and_the_resample_predicate() -> None:
    catalog = DishCatalog.load()
    assert answer_fits(catalog, "매운 게 당기면 낙지볶음 어때요?", ["매운"]) is True
    assert answer_fits(catalog, "물냉면이나 냉동 만두 어때요?", ["매운"]) is False
    assert answer_fits(catalog, "든든한 걸로 드세요.", ["매운"]) is None  # names no catalog dish
    assert answer_fits(catalog, "닭갈비나 소불고기 어때요?", ["채식"]) is False
    assert answer_fits(catalog, "산채비빔밥 어때요?", ["채식"]) is True
    check = request_check("고기 안 먹는 친구랑 뭐 먹지", catalog)
    assert check is not None and check.wishes == ("채식",)
    assert check.misses("닭갈비 어때요?") and not check.misses("두부조림 어때요?")
    assert check.misses("친구 취향을 먼저 물어보세요.")  # names no dish: not a recommendation either
    assert request_check("점심 뭐 먹지", catalog) is None and request_check("매운 거", None) is None


def test_every_wish_has_dishes_that_fit() -> None:
    catalog = DishCatalog.load()
    for label, wish in WISHES.items():
        assert sum(wish.fits(d) for d in catalog) >= 10, label


async def test_the_service_resamples_an_answer_that_misses_the_request(tmp_path: Path) -> None:
    """"매운 거" answered with a mild dish is sampled again (bounded); a question without a checkable wish is not."""
    import asyncio

    from bot_fixtures import fresh_db, service_on
    from fakes import FakeGenerator

    db = await asyncio.to_thread(fresh_db, tmp_path)
    catalog = DishCatalog.load()
    gen = FakeGenerator(["물냉면 어때요?", "계란찜 어때요?", "낙지볶음 어때요?", "떡볶이 어때요?"])
    async with service_on(db, gen, catalog=catalog) as service:
        spicy = await service.reply(1, 1, "입안이 얼얼할 만큼 매운 걸로")
        retried = await service.retry(1, 1, spicy.turn_id)  # the retry keeps the question's wish
        # Nothing to check: the first sample stands (another user: for user 1, 떡볶이 is now a recent dish to vary).
        plain = await service.reply(3, 3, "점심 뭐 먹지")
    assert spicy.text == "낙지볶음 어때요?" and len(gen.requests) == 5
    assert retried.text == "떡볶이 어때요?" and plain.text == "떡볶이 어때요?"

    stubborn = FakeGenerator(["물냉면 어때요?"])
    async with service_on(db, stubborn, catalog=catalog, max_resamples=2) as service:
        kept = await service.reply(2, 2, "매운 거 먹고 싶어")
    assert kept.text == "물냉면 어때요?" and len(stubborn.requests) == 3  # bounded: the last sample is kept
