from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from pathlib import Path

import pytest

from model import (
    AdapterError,
    GenerationRequest,
    Generator,
    GeneratorBusy,
    build_prompt,
    load_model,
)
from model.serving.sampling import TextTracker

QUESTIONS = ["매운 요리 추천해줘", "비 오는 날 뭐 먹지", "해장 추천", "야식 추천해줘", "더운 날 시원한 거"]


def prompt(q: str) -> str:
    return build_prompt([], q).text


@pytest.fixture
async def generator(any_model_dir: Path):
    """The generator on each tiny flavour: with a separate pad, and Polyglot's (no pad, padded embedding)."""
    gen = Generator(load_model(str(any_model_dir)))
    yield gen
    await gen.close()


async def test_same_seed_same_text_and_seeds_differ(generator: Generator) -> None:
    # A wide distribution (the tiny model is sharply fitted), so that different seeds have room to differ.
    req = GenerationRequest(prompt("저녁 뭐 먹지"), seed=7, temperature=1.5, top_p=1.0, max_new_tokens=40)
    first = await generator.generate(req)
    again = await generator.generate(req)
    assert first.text == again.text and first.seed == 7
    others = {(await generator.generate(GenerationRequest(req.prompt, seed=s, temperature=1.5, top_p=1.0,
                                                          max_new_tokens=40))).text for s in range(8, 14)}
    assert len(others | {first.text}) >= 3


async def test_result_fields(generator: Generator) -> None:
    res = await generator.generate(GenerationRequest(prompt("해장 추천"), seed=1, temperature=0, max_new_tokens=64))
    assert res.prompt_tokens == len(generator.tokenizer.encode(prompt("해장 추천")))
    assert 0 < res.new_tokens <= 64 and res.finish_reason in {"eos", "stop", "length"}
    assert 0 < res.ttft_s <= res.total_s
    assert res.adapter.version == "base"
    assert "국밥" in res.text  # the tiny model was fitted on this answer


async def test_stream_equals_generate(generator: Generator) -> None:
    for seed, q in enumerate(QUESTIONS):
        req = GenerationRequest(prompt(q), seed=seed, max_new_tokens=48)
        whole = await generator.generate(req)
        stream = generator.stream(req)
        deltas = [d async for d in stream]
        assert "".join(deltas) == whole.text == stream.result.text
        assert len(deltas) > 1


async def test_batched_greedy_equals_single_greedy(generator: Generator) -> None:
    reqs = [GenerationRequest(prompt(q), seed=0, temperature=0, max_new_tokens=40) for q in QUESTIONS]
    singles = [(await generator.generate(r)).text for r in reqs]
    batched = await asyncio.gather(*(generator.generate(r) for r in reqs))
    assert [b.text for b in batched] == singles


async def test_sampled_rows_do_not_depend_on_batch_partners(generator: Generator) -> None:
    req = GenerationRequest(prompt("저녁 뭐 먹지"), seed=42, temperature=1.0, max_new_tokens=30)
    alone = await generator.generate(req)
    crowd = [GenerationRequest(prompt(q), seed=i, temperature=1.0, max_new_tokens=30) for i, q in enumerate(QUESTIONS)]
    together = await asyncio.gather(generator.generate(req), *(generator.generate(r) for r in crowd))
    assert together[0].text == alone.text


def test_text_tracker_never_releases_the_stop_marker(tiny_model_dir: Path) -> None:
    from model.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    tracker = TextTracker(tok, ("###",))
    deltas = []
    for token in tok.encode(" 김치찌개 어때요?\n\n### 질문: 또 뭐", add_special_tokens=False):
        deltas.append(tracker.add(token))
        if tracker.stopped:
            break
    assert tracker.stopped and "".join(deltas) == tracker.final == "김치찌개 어때요?"
    assert all("#" not in d for d in deltas)


async def test_generation_stops_at_the_marker(tiny_model_dir: Path, tmp_path: Path) -> None:
    from model.demo.tiny import fit_texts

    loaded = load_model(str(tiny_model_dir))
    # Teach the model to run on into a new turn, as an undertrained model does.
    fit_texts(loaded.model, loaded.tokenizer, [prompt("라면") + " 신라면 어때요?\n\n### 질문: 또 뭐 먹지"], steps=40)
    gen = Generator(loaded)
    try:
        res = await gen.generate(GenerationRequest(prompt("라면"), seed=0, temperature=0, max_new_tokens=40))
    finally:
        await gen.close()
    assert (res.finish_reason, res.text) == ("stop", "신라면 어때요?")


async def test_event_loop_stays_responsive(tiny_model_dir: Path) -> None:
    gen = Generator(load_model(str(tiny_model_dir)))
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    reqs = [GenerationRequest(prompt(q), seed=i, max_new_tokens=200, min_new_tokens=200) for i, q in enumerate(QUESTIONS)]
    await asyncio.gather(*(gen.generate(r) for r in reqs))
    elapsed = time.perf_counter() - started
    done.set()
    await task
    await gen.close()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert elapsed > 0.2  # the generation took a while...
    assert len(ticks) >= elapsed / 0.05  # ...and the loop kept ticking through it
    assert max(gaps) < 0.25


async def test_queue_full_raises_generator_busy(tiny_model_dir: Path) -> None:
    gen = Generator(load_model(str(tiny_model_dir)), max_batch_size=1, max_queue=2)
    streams, busy = [], 0
    for i in range(10):
        try:
            streams.append(gen.stream(GenerationRequest(prompt("해장 추천"), seed=i, max_new_tokens=30)))
        except GeneratorBusy as exc:
            busy += 1
            assert "queue is full" in str(exc)
    assert busy >= 5
    results = [[d async for d in s] for s in streams]  # everything accepted still completes
    assert all(s.result is not None for s in streams) and len(results) == len(streams)
    await gen.close()


async def test_cancelled_stream_stops_early(generator: Generator) -> None:
    """A cancelled answer frees its slot within a step or two; left running it would take 200 decode steps."""
    steps = 0

    def count(*_args) -> None:
        nonlocal steps
        steps += 1

    hook = generator.loaded.model.get_output_embeddings().register_forward_hook(count)
    try:
        stream = generator.stream(GenerationRequest(prompt("해장 추천"), seed=3, max_new_tokens=200,
                                                    min_new_tokens=200))
        await stream.__anext__()
        await stream.aclose()
        for _ in range(500):
            if generator.info().running == 0:
                break
            await asyncio.sleep(0.01)
        stopped_after = steps
        after = await generator.generate(GenerationRequest(prompt("해장 추천"), seed=3, max_new_tokens=5))
    finally:
        hook.remove()
    assert generator.info().running == 0 and stopped_after < 50, stopped_after
    assert after.new_tokens <= 5 and generator.info().queue_length == 0


async def test_info(generator: Generator, any_model_dir: Path) -> None:
    info = generator.info()
    assert info.base == str(any_model_dir) and info.quantization == "none" and info.device == "cpu"
    assert info.queue_length == 0 and info.adapter.version == "base" and info.max_context == 1024


async def _texts_with_adapter(tiny_model_dir: Path, adapter: Path | None, reqs) -> list[str]:
    gen = Generator(load_model(str(tiny_model_dir), adapter=adapter), max_batch_size=1)
    try:
        return [(await gen.generate(r)).text for r in reqs]
    finally:
        await gen.close()


async def test_reload_during_concurrent_generations(tiny_model_dir, tiny_adapter_dir, tiny_adapter2_dir) -> None:
    reqs = [GenerationRequest(prompt(QUESTIONS[i % 5]), seed=i, temperature=0.9, max_new_tokens=24) for i in range(12)]
    expected = {
        "spicy": await _texts_with_adapter(tiny_model_dir, tiny_adapter_dir, reqs),
        "mild": await _texts_with_adapter(tiny_model_dir, tiny_adapter2_dir, reqs),
    }
    assert expected["spicy"] != expected["mild"]
    gen = Generator(load_model(str(tiny_model_dir), adapter=tiny_adapter_dir), max_batch_size=1)
    tasks = [asyncio.create_task(gen.generate(r)) for r in reqs]
    await asyncio.sleep(0.02)
    info = await gen.reload_adapter(tiny_adapter2_dir)
    results = await asyncio.gather(*tasks)
    await gen.close()
    assert info.name == "mild" and info.load_seconds > 0 and gen.info().adapter == info
    names = [r.adapter.name for r in results]
    assert "spicy" in names and "mild" in names, names  # the swap happened in the middle of the queue
    for i, res in enumerate(results):
        # Each answer is exactly what a generator serving only that adapter says: nothing ran half-swapped.
        assert res.text == expected[res.adapter.name][i]
    assert names == sorted(names, key=lambda n: n == "mild")  # once swapped, never back


async def test_failed_reload_keeps_the_old_adapter(tiny_model_dir, tiny_adapter_dir, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_adapter_dir, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not weights")
    gen = Generator(load_model(str(tiny_model_dir), adapter=tiny_adapter_dir))
    req = GenerationRequest(prompt("해장 추천"), seed=5, max_new_tokens=24)
    before = await gen.generate(req)
    with pytest.raises(AdapterError):
        await gen.reload_adapter(broken)
    with pytest.raises(AdapterError, match="does not exist"):
        await gen.reload_adapter(tmp_path / "missing")
    after = await gen.generate(req)
    await gen.close()
    assert gen.info().adapter.name == "spicy" and after.adapter.name == "spicy"
    assert after.text == before.text


async def test_reload_onto_a_base_without_adapter_and_4bit(tiny_model_dir, tiny_adapter_dir) -> None:
    gen = Generator(load_model(str(tiny_model_dir), quantization="4bit"))
    reqs = [GenerationRequest(prompt(q), seed=2, temperature=1.0, max_new_tokens=16) for q in QUESTIONS]
    base_texts = [(await gen.generate(r)).text for r in reqs]
    info = await gen.reload_adapter(tiny_adapter_dir)
    results = [await gen.generate(r) for r in reqs]
    await gen.close()
    assert info.name == "spicy" and all(r.adapter.version == info.version for r in results)
    assert [r.text for r in results] != base_texts


async def test_avoided_dishes_are_not_generated(generator: Generator) -> None:
    greedy = GenerationRequest(prompt("매운 요리 추천해줘"), seed=0, temperature=0, max_new_tokens=40)
    assert "김치찌개" in (await generator.generate(greedy)).text  # what the tiny model says when left alone
    for seed in range(4):
        req = GenerationRequest(greedy.prompt, seed=seed, max_new_tokens=40, avoid=("김치찌개", "된장찌개"))
        text = (await generator.generate(req)).text
        assert "김치찌개" not in text and "된장찌개" not in text


async def test_an_answer_budget_past_the_context_ends_at_the_context(generator: Generator) -> None:
    """The slot's cache holds the context length: the answer stops there (finish "length"), nothing breaks."""
    import dataclasses

    short_context = Generator(dataclasses.replace(generator.loaded, max_context=80))
    try:
        long = GenerationRequest(prompt("해장 추천"), seed=0, max_new_tokens=500, min_new_tokens=500, stop=())
        res, after = await asyncio.gather(short_context.generate(long),
                                          short_context.generate(GenerationRequest(prompt("야식 추천해줘"), seed=1)))
    finally:
        await short_context.close()
    assert res.finish_reason == "length" and res.prompt_tokens + res.new_tokens == 80
    assert after.text
