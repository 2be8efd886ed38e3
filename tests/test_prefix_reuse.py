"""Follow-up turns reuse the kept K/V of earlier turns: the same seed gives the same answer with and without reuse."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch

from model import GenerationRequest, Generator, build_prompt, load_model
from model.prompt import PromptTurn
from model.serving.prefix import MIN_REUSE, Prefix, PrefixCache

FIRST = ["매운 요리 추천해줘", "비 오는 날 뭐 먹지", "해장 추천"]
SECOND = ["그거 말고 다른 거", "더 가벼운 거 없어?", "국물 있는 걸로"]


def conversations(seed: int, first: dict[str, str]) -> list[GenerationRequest]:
    """Turn 2 of each conversation (its history is turn 1's prompt and answer), then a "다른 거" of turn 1."""
    out = []
    for q1, q2 in zip(FIRST, SECOND, strict=True):
        history = [PromptTurn(q1, first[q1])]
        out.append(GenerationRequest(build_prompt(history, q2).text, seed=seed, temperature=1.0, max_new_tokens=24))
        out.append(GenerationRequest(build_prompt([], q1).text, seed=seed + 1, temperature=1.0, max_new_tokens=24,
                                     avoid=(first[q1].split()[0],) if first[q1].split() else ()))
    return out


async def _run(gen: Generator, seed: int) -> tuple[dict[str, str], list[str]]:
    first = {q: (await gen.generate(GenerationRequest(build_prompt([], q).text, seed=seed, temperature=1.0,
                                                      max_new_tokens=24))).text for q in FIRST}
    follow = [(await gen.generate(r)).text for r in conversations(seed, first)]
    together = await asyncio.gather(*(gen.generate(r) for r in conversations(seed, first)))  # hits in one prefill
    assert [r.text for r in together] == follow
    return first, follow


async def test_same_seed_same_answer_with_and_without_reuse(tiny_model_dir: Path) -> None:
    loaded = load_model(str(tiny_model_dir), dtype=torch.float32)
    plain, reusing = Generator(loaded), Generator(loaded, prefix_cache_mib=64)
    try:
        for seed in (0, 1, 2):
            assert await _run(reusing, seed) == await _run(plain, seed)
        cache = reusing._batch.prefix
        # Every follow-up and every "다른 거" found its prefix: the comparison above ran the reuse path.
        assert cache.hits >= 3 * 2 * 2 * 3 and cache.reused_tokens > 20 * cache.hits
        assert plain._batch.prefix is None
    finally:
        await plain.close()
        await reusing.close()


async def test_reload_forgets_kept_prefixes(tiny_model_dir: Path, tiny_adapter_dir: Path) -> None:
    gen = Generator(load_model(str(tiny_model_dir), dtype=torch.float32), prefix_cache_mib=64)
    try:
        req = GenerationRequest(build_prompt([], "해장 추천").text, seed=3, max_new_tokens=16)
        await gen.generate(req)
        assert len(gen._batch.prefix) == 1
        await gen.reload_adapter(tiny_adapter_dir)
        assert len(gen._batch.prefix) == 0  # K/V computed under the old adapter must never be reused
        after = await gen.generate(req)
    finally:
        await gen.close()
    fresh = Generator(load_model(str(tiny_model_dir), adapter=tiny_adapter_dir, dtype=torch.float32))
    try:
        assert after.text == (await fresh.generate(req)).text
    finally:
        await fresh.close()


def _prefix(ids: list[int], width: int = 4) -> Prefix:
    return Prefix(tuple(ids), [torch.zeros(2, len(ids), width)], [torch.zeros(2, len(ids), width)])


def test_prefix_cache_longest_match_lru_and_bytes() -> None:
    one = list(range(100, 100 + 2 * MIN_REUSE))
    entry_bytes = _prefix(one).nbytes
    cache = PrefixCache(max_bytes=3 * entry_bytes)  # room for two or three entries, not for all four
    cache.store(_prefix(one))
    longer = [*one, 7, 8, 9]
    cache.store(_prefix(longer))
    assert len(cache) == 1  # the longer conversation replaces the turn it extends
    found, length = cache.lookup([*one, 7, 8, 5, 5])
    assert found.ids == tuple(longer) and length == len(one) + 2
    assert cache.lookup(one)[1] == len(one) - 1  # the last prompt token always runs, for its logits
    assert cache.lookup(list(range(MIN_REUSE - 1))) is None
    other, third = list(range(500, 500 + 2 * MIN_REUSE)), list(range(900, 900 + 2 * MIN_REUSE))
    cache.store(_prefix(other))
    cache.lookup(longer)  # touch: `other` is now the least recently used
    cache.store(_prefix(third))
    assert cache.lookup(other) is None and cache.lookup(longer) is not None
    assert cache.bytes <= cache.max_bytes
