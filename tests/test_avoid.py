"""model/serving/bans.py: the byte-level phrase ban bans exactly what the first, slow version banned, for long
lists too."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from phrase_ban_reference import ReferencePhraseBan

from model import DishCatalog
from model.serving.bans import PhraseBan, TokenBytes


@pytest.fixture(scope="module")
def vocab(tiny_model_dir: Path) -> TokenBytes:
    from model.loading import load_tokenizer

    return TokenBytes(load_tokenizer(str(tiny_model_dir)))


def allergy_phrases(*allergens: str) -> list[str]:
    catalog = DishCatalog.load()
    return [s for a in allergens for dish in catalog.with_allergen(a) for s in dish.spellings]


def histories(vocab: TokenBytes, phrases: list[str], count: int, seed: int) -> list[list[int]]:
    """Token histories that end inside phrases (where the prefix rules fire), plus random ones."""
    rng = random.Random(seed)
    by_text = {piece: i for i, piece in enumerate(vocab.by_id)}
    found = []
    for _ in range(count):
        phrase = rng.choice(phrases).encode()
        cut = rng.randrange(1, len(phrase))
        text = rng.choice([b"", b" ", "오늘은 ".encode()]) + phrase[:cut]
        ids, i = [], 0
        while i < len(text):  # greedy longest-token cover of the bytes: one of many possible tokenisations
            for j in range(min(len(text), i + 12), i, -1):
                if text[i:j] in by_text:
                    ids.append(by_text[text[i:j]])
                    i = j
                    break
            else:
                raise AssertionError("a byte without a token")
        found.append(ids)
        found.append([rng.randrange(len(vocab.by_id)) for _ in range(rng.randrange(0, 60))])
    return found


@pytest.mark.parametrize("allergens", [("새우",), ("밀", "대두")])
def test_long_ban_lists_ban_exactly_what_the_reference_bans(vocab: TokenBytes, allergens: tuple[str, ...]) -> None:
    phrases = allergy_phrases(*allergens)
    assert len(phrases) > (1000 if len(allergens) == 2 else 100)
    fast, slow = PhraseBan(vocab, phrases), ReferencePhraseBan(vocab, phrases)
    assert fast.always == slow.always and fast.always
    checked = fired = 0
    for history in histories(vocab, phrases, 150, seed=len(allergens)):
        expected = set(slow.banned(history))
        assert set(fast.banned(history)) == expected, history
        checked += 1
        fired += len(expected) > len(slow.always)
    assert checked == 300 and fired > 50  # many of the phrase-prefix histories fire a prefix rule


def test_a_second_ban_of_the_same_phrases_reuses_the_token_sets(vocab: TokenBytes) -> None:
    phrases = allergy_phrases("땅콩")
    first = PhraseBan(vocab, phrases)
    cached = dict(vocab._rules)
    second = PhraseBan(vocab, [*phrases, "김치찌개"])
    assert all(vocab._rules[p] is rules for p, rules in cached.items())
    assert set(first.always) <= set(second.always)
    assert PhraseBan(vocab, []).banned([1, 2, 3]) == [] and PhraseBan(vocab, ["  "]).banned([]) == []


async def test_a_banned_phrase_is_banned_from_the_first_token_on(tiny_model_dir: Path) -> None:
    """The answer's first token comes from the prefill, not a decode step: the ban must hold there too."""
    from model import GenerationRequest, Generator, build_prompt, load_model

    generator = Generator(load_model(str(tiny_model_dir), quantization="none"))
    try:
        prompt = build_prompt([], "매운 요리 추천해줘").text
        alone = await generator.generate(GenerationRequest(prompt, seed=0, temperature=0, max_new_tokens=12))
        first_word = alone.text.split()[0]
        assert len(first_word) >= 2 and alone.text.startswith(first_word)  # what the model says first, left alone
        for seed in range(3):
            banned = await generator.generate(GenerationRequest(prompt, seed=seed, max_new_tokens=12,
                                                                avoid=(first_word,)))
            assert first_word not in banned.text, banned.text
    finally:
        await generator.close()
