"""Food-safety notes (model/food/safety.py, data/safety_notes.csv): paraphrases match by lemma, look-alikes do not,
and the conversation service attaches the caution or refuses the premise."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from bot_fixtures import all_turns, fresh_db, service_on
from fakes import FakeGenerator

from bot.korean import with_particle
from model.food.dishes import DishCatalog
from model.food.morph import lemmas, phrase
from model.food.safety import DEFAULT_PATH, SafetyNotes, SafetyNotesError, parse_rows


@pytest.fixture(scope="module")
def notes() -> SafetyNotes:
    return SafetyNotes.load()


def ids(notes: SafetyNotes, question: str) -> set[str]:
    return {n.id for n in notes.check(question).notes}


@pytest.mark.parametrize(("question", "note"), [
    ("아기 이유식으로 꿀 넣은 죽 추천해줘", "honey-infant"),
    ("10개월 아가한테 꿀물 줘도 될까?", "honey-infant"),
    ("돌 전 아기 간식으로 꿀 바른 빵 어때", "honey-infant"),
    ("임신 중인데 회 먹고 싶어", "pregnancy-raw-fish"),
    ("임산부인데 초밥 먹어도 돼?", "pregnancy-raw-fish"),
    ("임신했는데 육회 땡겨", "pregnancy-raw-meat"),
    ("임신 중인데 맥주 한 잔 정도는 괜찮겠지? 안주 추천", "pregnancy-alcohol"),
    ("임신 중인데 저녁 뭐 먹지", "pregnancy-general"),
    ("임산부 커피 마셔도 될까", "pregnancy-caffeine"),
    ("감기약 먹었는데 소주 한잔 해도 돼?", "alcohol-medicine"),
    ("산에서 딴 버섯으로 찌개 끓여도 돼?", "wild-mushroom"),
    ("복어 직접 손질해서 먹어도 돼?", "pufferfish-home"),
    ("싹 난 감자로 감자조림 해도 돼?", "potato-sprout"),
    ("두 살 아이 간식으로 떡 줘도 될까", "infant-choking"),
    ("강아지랑 같이 먹을 초콜릿 케이크", "pet-toxic"),
    ("수유 중인데 와인 한 잔 괜찮아?", "breastfeeding-alcohol"),
])
def test_cautions_match_paraphrases(notes: SafetyNotes, question: str, note: str) -> None:
    verdict = notes.check(question)
    assert note in ids(notes, question) and verdict.refusal is None and verdict.cautions


@pytest.mark.parametrize("question", [
    "술 마시고 운전해도 되는 안주 추천",
    "맥주 한 캔 마시고 운전할 건데 안주 뭐 먹지",
    "운전하기 전에 소주 한잔 할 때 먹을 거",
    "오늘 차 끌고 나왔는데 술자리 안주 뭐가 좋아",
    "음주운전 해도 안 걸리는 날 먹을 메뉴",
    "고등학생인데 술안주 추천해줘",
    "중학생 친구들이랑 맥주 마실 때 안주",
])
def test_dangerous_premises_are_refused(notes: SafetyNotes, question: str) -> None:
    assert notes.check(question).refusal


@pytest.mark.parametrize("question", [
    "꿀떡 맛집 추천",  # 꿀 inside another word, no infant
    "꿀잼 영화 보면서 먹을 야식",
    "대리 부를 거라 소주 안주 추천해줘",  # drinking, but not driving
    "술 안 마시고 운전할 건데 휴게소 간식 추천",  # negated
    "맥주 마시지 않고 운전할 거야 간식 추천",
    "운전하면서 먹을 간식",
    "버섯 들어간 요리 추천",
    "회식 메뉴 추천",  # 회식 is not 회
    "회사 점심 추천",
    "매운 거 먹고 싶어",
])
def test_look_alikes_do_not_match(notes: SafetyNotes, question: str) -> None:
    assert notes.check(question).notes == ()


def test_the_table_is_well_formed(notes: SafetyNotes) -> None:
    assert len(notes) >= 30
    catalog = DishCatalog.load()
    rows = list(csv.DictReader(DEFAULT_PATH.open(encoding="utf-8")))
    for row in rows:
        assert row["caution"].rstrip().endswith(("요.", "세요.", "드릴게요.")), row["id"]  # polite 해요체
        for item in filter(None, row["avoid"].split("|")):
            if item.startswith("category:"):
                assert catalog.in_category(item.removeprefix("category:")), (row["id"], item)
            else:
                assert item in catalog, (row["id"], item)
    # Each rule word is read the same inside sentences as written alone: otherwise it could never match.
    words = {w.strip() for row in rows for field in (row["all_of"], row["none_of"]) for group in field.split(";")
             for w in group.split("|") if w.strip()}
    for word in sorted(words - {"밖에 둔", "어제 시킨"}):  # verb phrases, checked by the paraphrases above
        alone = phrase(word)
        inside = [tuple(x.form for x in lemmas(s) if x.is_content)
                  for s in (f"{word} 이야기를 했어요", with_particle(word, "은") + " 괜찮아?")]
        assert all(any(s[k:k + len(alone)] == alone for k in range(3)) for s in inside), (word, alone, inside)


def test_a_broken_table_names_the_line(tmp_path: Path) -> None:
    header = "id,kind,all_of,none_of,caution,avoid\n"
    with pytest.raises(SafetyNotesError, match="line 2: x: kind must be one of caution, refuse"):
        parse_rows((header + "x,warn,꿀,,조심하세요.,\n").splitlines(keepends=True), "t.csv")
    with pytest.raises(SafetyNotesError, match="line 2: expected 6 columns"):
        parse_rows((header + "x,caution,꿀,,조심, 하세요.,\n").splitlines(keepends=True), "t.csv")
    with pytest.raises(SafetyNotesError, match="not found"):
        SafetyNotes.load(tmp_path / "none.csv")


async def test_the_service_cautions_refuses_and_steers_away(tmp_path: Path) -> None:
    import asyncio

    db = await asyncio.to_thread(fresh_db, tmp_path)
    catalog = DishCatalog.load()
    # The first sample names raw fish for a pregnant user: it is resampled, banned while sampling, and cautioned.
    gen = FakeGenerator(["연어회 어때요?", "소고기무국 어때요?"])
    async with service_on(db, gen, catalog=catalog, safety=SafetyNotes.load()) as service:
        answer = await service.reply(1, 1, "임신 중인데 초밥 먹어도 돼?")
        refused = await service.reply(1, 1, "술 마시고 운전해도 되는 안주 추천")
    assert answer.text.startswith("소고기무국 어때요?\n\n※ 임신 중에는 회·초밥") and answer.can_retry
    assert "연어회" in gen.requests[0].avoid and "초밥" in gen.requests[0].avoid
    assert refused.text.startswith("술을 마신 뒤에 운전하는 건") and not refused.can_retry
    assert len(gen.requests) == 2  # the refusal generated nothing
    stored = [t for t in all_turns(db) if t[1] == "assistant"]
    assert [t[2] for t in stored] == [answer.text, refused.text]  # stored as shown
