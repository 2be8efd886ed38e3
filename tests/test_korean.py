"""Particles that fit the word: the same choice as kiwipiepy's Kiwi.join on Hangul, and digits/letters read aloud."""

from __future__ import annotations

import pytest

from bot.korean import particle, with_particle
from model.food.dishes import DishCatalog

KIWI_TAGS = {"을": "JKO", "이": "JKS", "은": "JX", "으로": "JKB", "과": "JC"}


@pytest.fixture(scope="module")
def kiwi():
    from kiwipiepy import Kiwi

    return Kiwi()


def test_same_choice_as_kiwi_join_on_every_catalog_dish(kiwi) -> None:
    words = [d.name for d in DishCatalog.load()] + ["기본 모델", "어댑터", "서울", "칼", "밥", "물", "사과", "'면'"]
    wrong = []
    for word in words:
        for given, tag in KIWI_TAGS.items():
            expected = kiwi.join([(word, "NNG"), (given, tag)])
            if with_particle(word, given) != expected:
                wrong.append((word, given, with_particle(word, given), expected))
    assert not wrong, wrong[:10]


@pytest.mark.parametrize(("word", "given", "expected"), [
    ("어댑터", "을(를)", "어댑터를"),
    ("기본 모델", "을(를)", "기본 모델을"),
    ("'v2'", "을", "'v2'를"),  # 브이투
    ("'spicy-v3'", "를", "'spicy-v3'을"),  # 삼
    ("3", "를", "3을"),  # Kiwi.join writes 3를
    ("10", "가", "10이"),  # 십
    ("2000", "는", "2000은"),  # 천
    ("URL", "으로", "URL로"),  # 엘: ㄹ takes 로
    ("'missing'", "을", "'missing'을"),  # 미싱
    ("'model'", "으로", "'model'로"),  # 모델
    ("'bot'", "이", "'bot'이"),  # 봇
    ("'test'", "을", "'test'를"),  # 테스트
    ("'adapter'", "가", "'adapter'가"),  # 어댑터
    ("GPU", "이", "GPU가"),
    ("김치찌개", "이에요", "김치찌개예요"),
    ("된장국", "예요", "된장국이에요"),
    ("서울", "(으)로", "서울로"),
    ("부산항", "(으)로", "부산항으로"),
    ("냉면", "이랑", "냉면이랑"),
    ("파스타", "이나", "파스타나"),
])
def test_particle_forms(word: str, given: str, expected: str) -> None:
    assert with_particle(word, given) == expected


def test_unreadable_or_unknown() -> None:
    assert particle("🍜", "을(를)") == "를"  # never prints the ugly "을(를)"
    assert particle("🍜", "을") == "을"
    assert particle("모델", "에서") == "에서"  # not a particle that changes form
