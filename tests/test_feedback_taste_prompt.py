"""Preference rows that know the taste (issue 23, part 5): the DPO/KTO rows `mechuri dataset feedback` exports carry
the remembered taste in their prompt exactly as the bot's prompt did, so that a preference round learns "for this
person", not a rule that contradicts another person's rows."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from bot_fixtures import service_on
from databases import SqliteDatabase
from fakes import FakeGenerator

from bot.feedback.export import ExportOptions, export_feedback
from bot.taste.profile import TasteItem, allergy, diet
from model import DishCatalog

CATALOG = DishCatalog.load()


@pytest.fixture
def db(tmp_path: Path) -> SqliteDatabase:
    return SqliteDatabase.fresh(tmp_path)


def export(db: SqliteDatabase, out: Path, fmt: str) -> list[dict]:
    export_feedback(db.url, out, options=ExportOptions(format=fmt))
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


async def test_exported_rows_carry_the_taste_exactly_as_the_bot_prompted(db, tmp_path: Path) -> None:
    gen = FakeGenerator(["삼계탕 어때요?", "곰탕 어때요?", "샐러드 어때요?"])
    seeds = itertools.count(1000)
    async with service_on(db, gen, catalog=CATALOG, check_fit=False, seed_source=lambda: next(seeds)) as svc:
        await svc.taste.remember(5, [allergy("새우"), diet("nopork"), TasteItem("dislike", "ingredient", "오이")])
        first = await svc.reply(1, 5, "저녁 추천해줘")
        await svc.retry(1, 5, first.turn_id)  # turned down: a pair
        await svc.reply(1, 5, "고마워, 내일은?")  # moves on: the retry's answer is kept
        other = await svc.reply(2, 6, "저녁 추천해줘")  # the same question from someone with no taste
        await svc.retry(2, 6, other.turn_id)
        await svc.reply(2, 6, "좋아")
    taste_prompt = gen.prompts[0]
    assert "### 맥락:" in taste_prompt and "알레르기: 새우" in taste_prompt and "오이" in taste_prompt
    dpo = export(db, tmp_path / "dpo.jsonl", "dpo")
    kto = export(db, tmp_path / "kto.jsonl", "kto")
    mine = [r for r in dpo if "알레르기: 새우" in r["prompt"]]
    assert [r["prompt"] for r in mine] == [taste_prompt]  # byte for byte what the model saw
    assert [(r["chosen"], r["rejected"]) for r in mine] == [(" 곰탕 어때요?", " 삼계탕 어때요?")]
    plain = [r for r in dpo if r not in mine]
    assert len(plain) == 1 and "### 맥락:" not in plain[0]["prompt"]  # the other person's row says nothing of taste
    assert {r["prompt"] for r in kto if r["completion"] in (" 삼계탕 어때요?", " 곰탕 어때요?")} >= {taste_prompt}
