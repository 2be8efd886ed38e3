"""The allergy guarantee with a real model: the tiny GPT-NeoX, fitted on answers that name 김치찌개, 해물파전,
칼국수, 제육볶음, 된장찌개, 후라이드치킨 …, is pushed towards dishes that carry 대두, 밀, 달걀 and 돼지고기. Through the
real Generator (byte-level phrase ban), the real catalog and ConversationService, no answer to a user with those
allergies may name one. The test fails if a single answer slips through."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from bot_fixtures import fresh_db, rows, service_on

from bot.settings import GenerationDefaults
from bot.taste.profile import allergy
from model import DishCatalog, Generator, load_model
from model.demo.tiny import TINY_QA

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CATALOG = DishCatalog.load()
ALLERGENS = {"대두", "밀", "달걀", "돼지고기"}
QUESTIONS = [q for q, context, _ in TINY_QA if not context]


def carrying(text: str) -> list[str]:
    return [d.name for d in CATALOG.find(text) if ALLERGENS & set(d.allergens)]


async def test_a_model_pushed_towards_allergen_dishes_never_shows_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    db = await asyncio.to_thread(fresh_db, tmp_path)
    generator = Generator(load_model(str(tiny_model_dir), quantization="none"), max_batch_size=4)
    sampling = GenerationDefaults(max_new_tokens=40, temperature=1.0, top_p=0.95)
    try:
        async with service_on(db, generator, catalog=CATALOG, variety_days=0) as service:
            service.generation = sampling
            service.seed_source = itertools.count(1).__next__
            free = [await service.reply(1, 1, q) for q in QUESTIONS for _ in range(2)]
            # Left alone, the model names allergen dishes in most answers: the guarantee has work to do.
            assert sum(bool(carrying(a.text)) for a in free) >= len(free) // 2
            await service.taste.remember(2, [allergy(a) for a in sorted(ALLERGENS)])
            guarded = [await service.reply(2, 2, q) for q in QUESTIONS for _ in range(3)]
    finally:
        await generator.close()
    assert [(a.text, carrying(a.text)) for a in guarded if carrying(a.text)] == []
    assert sum(a.fallback for a in guarded) < len(guarded)  # most answers are real answers, not refusals
    stored = rows(db, "SELECT t.text FROM turns t JOIN conversations c ON c.id = t.conversation_id "
                      "WHERE c.user_id = 2 AND t.role = 'assistant'")
    assert [t for (t,) in stored if carrying(t)] == []
