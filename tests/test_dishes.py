"""The dish catalog (data/dishes.csv) and the dish extractor that the "다른 거" retry flow relies on."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from model.food.dishes import ALLERGENS, DEFAULT_PATH, TAGS, CatalogError, DishCatalog, normalize

HEADER = "name,aliases,category,tags,allergens\n"
MEAT_AND_SEAFOOD = {"돼지고기", "쇠고기", "닭고기", "게", "새우", "오징어", "고등어", "조개류"}


@pytest.fixture(scope="module")
def catalog() -> DishCatalog:
    return DishCatalog.load()


def raw_rows() -> list[list[str]]:
    """The CSV read without our loader, so data checks do not trust the code they check."""
    with open(DEFAULT_PATH, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "aliases", "category", "tags", "allergens"]
    return rows[1:]


# ---- the data -----------------------------------------------------------------------------------------------------


def test_catalog_is_big_and_uses_only_the_vocabulary(catalog: DishCatalog) -> None:
    assert len(catalog) >= 320
    for dish in catalog:
        assert dish.tags, dish.name
        assert set(dish.tags) <= TAGS, dish.name
        assert set(dish.allergens) <= ALLERGENS, dish.name
        assert len(dish.category.split()) == 1, dish.name
        assert ("매운" in dish.tags) != ("안매운" in dish.tags), f"{dish.name}: exactly one of 매운 / 안매운"
        assert not {"차가운", "따뜻한"} <= set(dish.tags), dish.name
    expected = set("찌개 국 밥 면 고기 해산물 분식 반찬 죽 전 디저트 음료 술 간식 샐러드 빵".split())
    assert expected <= {d.category for d in catalog}


def test_rows_are_well_formed_and_unique() -> None:
    rows = raw_rows()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    for row in rows:
        assert len(row) == 5, row
        assert all(cell == cell.strip() for cell in row), row
        for field in (row[1], row[3], row[4]):
            assert "" not in field.split("|") or field == "", row  # no empty items such as "a||b"


def test_no_spelling_names_two_dishes_and_none_is_generic() -> None:
    owner: dict[str, str] = {}
    for name, aliases, *_ in raw_rows():
        for spelling in [name, *filter(None, aliases.split("|"))]:
            key = normalize(spelling)
            assert len(key) >= 2, f"{name}: {spelling!r} is one syllable"
            assert owner.setdefault(key, name) == name, f"{spelling!r} names both {owner[key]} and {name}"
    generic = set(
        "국 밥 면 전 회 떡 빵 차 술 죽 김치 고기 두부 계란 우유 과일 반찬 국물 요리 음식 메뉴 덮밥 찌개 나물 가지".split()
    )
    assert not generic & owner.keys()


def test_vegetarian_dishes_have_no_meat_or_seafood(catalog: DishCatalog) -> None:
    for dish in catalog.with_tags("채식"):
        assert not MEAT_AND_SEAFOOD & set(dish.allergens), dish.name
        assert not {"고기", "해산물"} & set(dish.tags), dish.name


@pytest.mark.parametrize(
    ("name", "allergens"),
    [
        ("짜장면", {"밀", "대두", "돼지고기"}),
        ("후라이드치킨", {"닭고기", "밀"}),
        ("간장게장", {"게", "대두", "밀"}),
        ("새우튀김", {"새우", "밀"}),
        ("물냉면", {"메밀", "쇠고기"}),
        ("고등어구이", {"고등어"}),
        ("카페라떼", {"우유"}),
        ("와인", {"아황산류"}),
        ("굴국밥", {"조개류"}),
    ],
)
def test_common_recipe_allergens(catalog: DishCatalog, name: str, allergens: set[str]) -> None:
    assert allergens <= set(catalog[name].allergens)


def test_japchae_allergens_follow_the_soy_sauce_not_the_noodles(catalog: DishCatalog) -> None:
    assert {"대두", "밀"} <= set(catalog["잡채"].allergens)
    assert "메밀" not in catalog["잡채"].allergens


# ---- extraction ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("김치찌개 먹고 싶어요", ["김치찌개"]),
        ("비빔냉면이 좋겠어요", ["비빔냉면"]),
        ("김치볶음밥 어때요", ["김치볶음밥"]),
        ("해물파전에 막걸리", ["해물파전", "막걸리"]),
        ("순대국밥 한 그릇", ["순댓국"]),
        ("돌솥비빔밥", ["돌솥비빔밥"]),
        ("참치김치찌개", ["참치김치찌개"]),
        ("치즈돈까스랑 로제떡볶이", ["치즈돈까스", "로제떡볶이"]),
        ("물냉면 말고 그냥 냉면", ["물냉면", "냉면"]),
        ("콩국수는 여름 별미", ["콩국수"]),
    ],
)
def test_longest_alias_wins(catalog: DishCatalog, text: str, names: list[str]) -> None:
    assert catalog.names_in(text) == names


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("김치 찌개", "김치찌개"),
        ("비빔 냉면", "비빔냉면"),
        ("김치 볶음밥을", "김치볶음밥"),
        ("후라이드 치킨이랑", "후라이드치킨"),
        ("프라이드치킨", "후라이드치킨"),
        ("자장면", "짜장면"),
        ("LA 갈비", "LA갈비"),
        ("la갈비", "LA갈비"),
        ("소고기 무국이", "소고기무국"),
        ("삶은 계란", "삶은달걀"),
        ("김치 전", "김치전"),
    ],
)
def test_spacing_variants_and_aliases(catalog: DishCatalog, text: str, name: str) -> None:
    assert catalog.names_in(text) == [name]


@pytest.mark.parametrize(
    "particle", ["는", "를", "나", "이나", "랑", "이랑", "도", "만", "에는", "이에요", "가", "보다", "처럼"]
)
def test_particles_after_a_name(catalog: DishCatalog, particle: str) -> None:
    assert catalog.names_in(f"오늘은 김치찌개{particle} 먹어요") == ["김치찌개"]
    assert catalog.names_in(f"오늘은 김치 찌개{particle} 먹어요") == ["김치찌개"]


def test_every_spelling_finds_its_own_dish(catalog: DishCatalog) -> None:
    failures = []
    for dish in catalog:
        for spelling in dish.spellings:
            for text in (
                spelling,
                f"{spelling}는",
                f"저는 {spelling}를 좋아해요",
                f"오늘은 {spelling}, 그리고 물",
                f"'{spelling}'(이)나 \"{spelling}\"",
            ):
                if catalog.names_in(text) != [dish.name]:
                    failures.append((text, catalog.names_in(text), dish.name))
    assert not failures, failures[:20]


@pytest.mark.parametrize(
    "text",
    [
        "전혀 안 매워요",
        "한국 음식",
        "국물이 시원해요",
        "저라면 따뜻한 국물 요리를 먹겠어요",  # -라면 is a conditional ending, not ramyeon
        "매운 걸 원하신다면 말씀해 주세요. 제가 너라면 고민하지 않겠어요",
        "콜라겐이 풍부해서 피부에 좋아요",
        "반죽을 얇게 밀면 돼요. 밀대로 밀면 편해요",
        "사과 자르기는 쉬워요",
        "소 주문이 들어왔어요",
        "떡 국물은 어떻게 만드나요",
        "김치 전에 손을 씻으세요",
        "수정 과정에서 바뀌었어요",
        "체육회 모임이 있어요",
        "무채색 옷이 잘 어울려요",
        "오늘은 무엇을 먹을까요? 든든하고 건강한 한 끼를 추천해 드릴게요.",
        "단백질과 식이섬유가 풍부하고 칼로리가 낮아서 다이어트에 좋아요. 점심으로 가볍게 드셔 보세요.",
        "비 오는 날에는 따뜻한 음식이 생각나죠. 기분 전환에도 좋아요.",
        "",
        "   ",
    ],
)
def test_no_false_positives_in_ordinary_sentences(catalog: DishCatalog, text: str) -> None:
    assert catalog.names_in(text) == []


def test_guards_still_let_the_real_dish_through(catalog: DishCatalog) -> None:
    assert catalog.names_in("김치찌개라면 좋겠어요") == ["김치찌개"]
    assert catalog.names_in("라면 먹자. 야식엔 라면이죠") == ["라면"]
    assert catalog.names_in("부산 밀면은 시원해요") == ["밀면"]
    assert catalog.names_in("콜라 한 캔") == ["콜라"]
    assert catalog.names_in("수정과 정말 맛있어요") == ["수정과"]
    assert catalog.names_in("대구 탕수육 맛집") == ["탕수육"]


def test_order_of_first_appearance_each_once(catalog: DishCatalog) -> None:
    text = "짬뽕이랑 짜장면, 그리고 또 짬뽕. 마지막으로 탕수육과 짜장 면"
    assert catalog.names_in(text) == ["짬뽕", "짜장면", "탕수육"]
    assert [d.name for d in catalog.find(text)] == ["짬뽕", "짜장면", "탕수육"]
    mentions = catalog.mentions(text)
    assert [m.dish.name for m in mentions] == ["짬뽕", "짜장면", "짬뽕", "탕수육", "짜장면"]
    assert mentions[-1].surface == "짜장 면"
    for m in mentions:
        assert text[m.start : m.end] == m.surface
    spaced = catalog.mentions("맛있는 김치  찌개를")[0]
    assert spaced.surface == "김치  찌개" and spaced.dish.name == "김치찌개"


def test_decomposed_hangul_is_matched(catalog: DishCatalog) -> None:
    assert catalog.names_in(unicodedata.normalize("NFD", "오늘은 김치찌개")) == ["김치찌개"]


def test_rejected_in_finds_only_turned_down_dishes(catalog: DishCatalog) -> None:
    answer = "짜장면이랑 짬뽕 중에 고르세요"
    assert [d.name for d in catalog.rejected_in(answer, ["자장면", "탕수육", "없는요리"])] == ["짜장면"]
    assert catalog.rejected_in(answer, []) == []


# ---- lookups ------------------------------------------------------------------------------------------------------


def test_get_by_name_alias_or_spacing(catalog: DishCatalog) -> None:
    assert catalog.get("자장면") is catalog.get("짜장면") is catalog.get("짜장 면")
    assert catalog.get("김치 찌개") is catalog["김치찌개"]
    assert catalog.get("없는요리") is None
    assert "닭도리탕" in catalog and "없는요리" not in catalog
    with pytest.raises(KeyError, match="없는요리"):
        catalog["없는요리"]


def test_lookups_by_tag_category_and_allergen(catalog: DishCatalog) -> None:
    hangover = catalog.with_tags("해장")
    assert catalog["콩나물국밥"] in hangover and all("해장" in d.tags for d in hangover)
    assert all({"매운", "국물"} <= set(d.tags) for d in catalog.with_tags("매운", "국물"))
    with pytest.raises(ValueError, match="unknown tag"):
        catalog.with_tags("맛있는")
    assert catalog["김치찌개"] in catalog.in_category("찌개")
    crustaceans = catalog.with_allergen("갑각류")
    assert catalog["새우튀김"] in crustaceans and catalog["간장게장"] in crustaceans
    assert catalog.with_allergen("소고기") == catalog.with_allergen("쇠고기")
    wheat_free = catalog.free_of("밀", "계란")
    assert catalog["짜장면"] not in wheat_free and catalog["계란말이"] not in wheat_free
    assert catalog["생선회"] in wheat_free
    with pytest.raises(ValueError, match="unknown allergen"):
        catalog.with_allergen("치즈")


# ---- loading ------------------------------------------------------------------------------------------------------


def test_default_catalog_loads_once() -> None:
    assert DishCatalog.load() is DishCatalog.load() is DishCatalog.load(DEFAULT_PATH)


def write(path: Path, body: str) -> Path:
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_small_catalog_file_and_reload_after_edit(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "김치찌개,김치 찌개,찌개,매운|국물,돼지고기\n\n된장찌개,,찌개,안매운,대두\n")
    first = DishCatalog.load(path)
    assert first.names_in("김치 찌개랑 된장찌개") == ["김치찌개", "된장찌개"]
    assert DishCatalog.load(path) is first
    write(path, "순두부찌개,,찌개,매운,대두\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert DishCatalog.load(path).names_in("순두부찌개") == ["순두부찌개"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("김치찌개,,찌개,매운,\n된장찌개,찌개,안매운,대두\n", "line 3: expected 5 columns"),
        ("김치찌개,,찌개,매운,\n된장찌개,,찌개,짭짤한,대두\n", "line 3: 된장찌개: unknown tag"),
        ("김치찌개,,찌개,매운,\n\n된장찌개,,찌개,안매운,콩\n", "line 4: 된장찌개: unknown allergen"),
        (
            "김치찌개,,찌개,매운,\n된장찌개,김치 찌개,찌개,안매운,\n",
            "line 3: 된장찌개: '김치 찌개' is already used on line 2",
        ),
        (",,찌개,매운,\n", "line 2: the name is empty"),
        ("김치찌개,,한국 찌개,매운,\n", "line 2: 김치찌개: the category must be one word"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path / "bad.csv", body)
    with pytest.raises(CatalogError, match=message) as info:
        DishCatalog.load(path)
    assert str(path.resolve()) in str(info.value)


def test_bad_header_empty_file_short_name_and_missing_file(tmp_path: Path) -> None:
    bad_header = tmp_path / "header.csv"
    bad_header.write_text("name,aliases,category\n김치찌개,,찌개\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="line 1: the header must be"):
        DishCatalog.load(bad_header)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(CatalogError, match="empty file"):
        DishCatalog.load(empty)
    with pytest.raises(CatalogError, match="shorter than two characters"):
        DishCatalog.load(write(tmp_path / "short.csv", "파전,전,전,안매운,밀\n"))
    with pytest.raises(CatalogError, match=r"not found: .*nowhere\.csv"):
        DishCatalog.load(tmp_path / "nowhere.csv")


def test_extractor_imports_neither_torch_nor_bot() -> None:
    code = "import sys, model.food.dishes; bad = {'torch', 'bot', 'transformers'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1], timeout=60)


# ---- speed --------------------------------------------------------------------------------------------------------


def test_extracting_from_a_thousand_answers_is_fast(catalog: DishCatalog) -> None:
    names = [d.name for d in catalog]
    filler = (
        "오늘처럼 쌀쌀한 날에는 따뜻한 국물 요리가 좋아요. 전혀 맵지 않아서 한국 사람이라면 누구나 좋아하는 맛이에요. "
        "영양도 풍부하고 든든해서 점심이나 저녁 메뉴로 딱이에요. "
    )
    answers = [
        f"{filler}{names[i % len(names)]}나 {names[(i * 7 + 3) % len(names)]}를 추천드려요. {filler}"
        f"{names[(i * 13 + 5) % len(names)]}도 드셔 보세요!"
        for i in range(1000)
    ]
    best = float("inf")
    for _ in range(3):  # best of three: the bound is about the code, not about a busy machine
        started = time.perf_counter()
        found = [catalog.names_in(answer) for answer in answers]
        best = min(best, time.perf_counter() - started)
    assert best < 1.0, f"1,000 answers took {best:.2f} s"
    assert found[0][:2] == [names[0], names[3]]
    assert sum(len(f) for f in found) >= 2900  # three dishes per answer, minus the odd repeat
