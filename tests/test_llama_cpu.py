"""The llama.cpp CPU path on the Polyglot-faithful tiny model: `mechuri convert-gguf`, then `LlamaCppGenerator` as
the service uses it (seeds, streaming, batching, reload, prompt cache, bans by the answer-level check)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("xllamacpp")

from model import AdapterError, GenerationRequest, Generator, ModelLoadError, build_prompt, load_model
from model.prompt import PromptTurn
from model.serving.llamacpp import LlamaCppGenerator

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["매운 요리 추천해줘", "비 오는 날 뭐 먹지", "해장 추천", "야식 추천해줘", "더운 날 시원한 거"]


def prompt(q: str) -> str:
    return build_prompt([], q).text


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def converted(polyglot_model_dir: Path, polyglot_adapters: tuple[Path, Path],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mechuri convert-gguf` as a user runs it (f32, so the comparison with peft measures the engine, not rounding)."""
    out = tmp_path_factory.mktemp("gguf") / "f32"
    done = subprocess.run([sys.executable, "-m", "mechuri", "convert-gguf", str(polyglot_model_dir), str(out),
                           "--kind", "f32", "--adapter", str(polyglot_adapters[0])], cwd=REPO, capture_output=True,
                          text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "MECHURI_QUANTIZATION=gguf" in done.stdout and len(list((out / "lora").glob("spicy-*.gguf"))) == 1
    return out


def first_logprobs(gen: LlamaCppGenerator, ids: list[int], lora: float | None = None) -> dict[int, float]:
    """The server's top-10 log-probabilities of the next token (from the raw logits), the LoRA at `lora`'s scale."""
    body = {"prompt": ids, "n_predict": 1, "temperature": 0.0, "n_probs": 10}
    answer = gen._engine.server.handle_completions(
        body if lora is None else {**body, "lora": [{"id": 0, "scale": lora}]})
    return {t["id"]: t["logprob"] for t in answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}


def test_converted_model_and_lora_match_peft(converted: Path, polyglot_model_dir: Path,
                                             polyglot_adapters: tuple[Path, Path]) -> None:
    """The next-token log-probabilities of the GGUF base + GGUF LoRA match HF + peft; with the LoRA off they match
    the bare base, and the LoRA moves them far more than the engines differ (the adapter is applied)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    gen = LlamaCppGenerator(converted, adapter=polyglot_adapters[0], slots=1, threads=1)
    base = AutoModelForCausalLM.from_pretrained(polyglot_model_dir)
    peft = PeftModel.from_pretrained(base, str(polyglot_adapters[0]))
    moved = 0.0
    for q in QUESTIONS[:3]:
        ids = gen.tokenizer.encode(prompt(q), add_special_tokens=False)
        with torch.inference_mode():
            ours = peft.eval()(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
            with peft.disable_adapter():
                bare = peft(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
        for scale, reference in ((1.0, ours), (0.0, bare)):
            got = first_logprobs(gen, ids, scale)
            assert max(got, key=got.get) == int(reference.argmax())
            assert max(abs(lp - reference[i].item()) for i, lp in got.items()) < 0.02, (q, scale)
        moved = max(moved, (ours - bare).abs().max().item())
    assert moved > 0.5
    asyncio.run(gen.close())


async def test_greedy_answers_match_the_torch_engine(converted: Path, polyglot_model_dir: Path,
                                                     polyglot_adapters: tuple[Path, Path]) -> None:
    reqs = [GenerationRequest(prompt(q), seed=0, temperature=0.0, repetition_penalty=1.0, max_new_tokens=24)
            for q in QUESTIONS]
    torch_gen = Generator(load_model(str(polyglot_model_dir), adapter=polyglot_adapters[0], device="cpu"))
    expected = [(await torch_gen.generate(r)).text for r in reqs]
    await torch_gen.close()
    gen = LlamaCppGenerator(converted, adapter=polyglot_adapters[0], slots=2, threads=1)
    got = [(await gen.generate(r)).text for r in reqs]
    await gen.close()
    assert got == expected and len(set(got)) > 1


async def _texts(gen: LlamaCppGenerator, reqs: list[GenerationRequest]) -> list[str]:
    return [(await gen.generate(r)).text for r in reqs]


async def test_seeds_streaming_and_concurrent_requests(converted: Path, polyglot_adapters: tuple[Path, Path]) -> None:
    reqs = [GenerationRequest(prompt(QUESTIONS[i % 5]), seed=i, temperature=0.9, max_new_tokens=30)
            for i in range(6)]
    gen = LlamaCppGenerator(converted, adapter=polyglot_adapters[0], slots=3, threads=1)
    try:
        alone = await _texts(gen, reqs)
        assert len(set(alone)) > 2  # the seeds differ, and so do the answers
        together = await asyncio.gather(*(gen.generate(r) for r in reqs))  # 6 requests on 3 slots
        assert [r.text for r in together] == alone
        stream = gen.stream(reqs[0])
        deltas = [d async for d in stream]
        assert "".join(deltas) == stream.result.text == alone[0] and "\ufffd" not in stream.result.text
        assert stream.result.finish_reason in ("eos", "stop", "length") and stream.result.ttft_s > 0
        info = gen.info()
        assert info.quantization == "gguf" and info.adapter.name == "spicy" and info.running == 0
    finally:
        await gen.close()


async def test_reload_mid_stream_drops_nothing(converted: Path, polyglot_adapters: tuple[Path, Path]) -> None:
    spicy, mild = polyglot_adapters
    long = GenerationRequest(prompt("야식 추천해줘"), seed=3, temperature=1.0, max_new_tokens=900, stop=())
    short = GenerationRequest(prompt("해장 추천"), seed=4, temperature=0.9, max_new_tokens=20)
    expected = {}
    for adapter in polyglot_adapters:
        one = LlamaCppGenerator(converted, adapter=adapter, slots=1, threads=1)
        expected[adapter.name] = await _texts(one, [long, short])
        await one.close()
    assert expected["spicy"] != expected["mild"]
    gen = LlamaCppGenerator(converted, adapter=spicy, slots=2, threads=1)
    stream = gen.stream(long)
    first = await stream.__anext__()
    info = await gen.reload_adapter(mild)
    after = await gen.generate(short)  # on the new server while the long answer is still being written
    rest = [d async for d in stream]
    broken = converted.parent / "broken-adapter"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError):
        await gen.reload_adapter(broken)
    still = await gen.generate(short)  # a failed reload leaves the serving adapter in place
    await gen.close()
    assert still.adapter.name == "mild" and still.text == after.text
    assert info.name == "mild" and after.adapter.name == "mild" and after.text == expected["mild"][1]
    assert rest, "the long answer ended before the reload: the test proves nothing"
    assert stream.result.adapter.name == "spicy" and first + "".join(rest) == expected["spicy"][0]


async def test_a_ban_is_kept_by_the_answer_level_check(converted: Path) -> None:
    """llama.cpp does not ban phrases while sampling: the drawer's check stops a sample that names the dish and
    draws again, so the user never sees it."""
    import itertools

    from fakes import FakeCatalog

    from bot.service.drawing import AnswerDrawer, AvoidList, Partial

    seeds = itertools.count(100)
    gen = LlamaCppGenerator(converted, slots=1, threads=1)
    sampled: list[GenerationRequest] = []
    stream = gen.stream

    def recording(request: GenerationRequest):
        sampled.append(request)
        return stream(request)

    gen.stream = recording  # type: ignore[method-assign]
    drawer = AnswerDrawer(gen, FakeCatalog(["김치찌개", "된장찌개", "해물파전"]), max_resamples=8,
                          seed_source=lambda: next(seeds))
    avoid = AvoidList()
    avoid.add(["김치찌개"], "allergy:대두", guarantee=True)
    request = GenerationRequest(prompt("매운 요리 추천해줘"), seed=2, temperature=0.7, max_new_tokens=40,
                                avoid=avoid.spellings(None))

    async def resampled(_request: GenerationRequest, _attempt: int) -> None:
        return None

    drawn = await drawer.draw(request, avoid, Partial(None), resampled)
    await gen.close()
    assert request.avoid == ("김치찌개",)
    assert drawn.attempts > 1  # the tiny model loves 김치찌개 here: the first sample named it and was stopped
    assert drawn.blocked or "김치찌개" not in drawn.text
    assert len({r.seed for r in sampled}) == len(sampled) == drawn.attempts


async def test_the_runtime_starts_llama_cpp_with_prompt_caching(converted: Path) -> None:
    """`mechuri bot` and `mechuri chat` build their generator here: MECHURI_QUANTIZATION=gguf selects llama.cpp,
    and a follow-up turn prefills only what is new."""
    from bot.service.runtime import start_generator
    from bot.settings import Settings

    settings = Settings(model_base=str(converted), quantization="gguf", max_batch_size=2, llama_repack=False,
                        telegram_bot_token="1:x")
    gen = await start_generator(settings)
    try:
        assert isinstance(gen, LlamaCppGenerator) and gen.slots == 2 and gen.repack is False
        # MECHURI_LLAMA_KV_TOKENS=4096 split in two, capped at the tiny model's 1,024; weights read, not mapped
        assert gen.max_context == 1024 and gen.kv_tokens == 2048 and not gen.kv_unified and not gen.mmap
        first_prompt = prompt("해장 추천")
        first = await gen.generate(GenerationRequest(first_prompt, seed=1, max_new_tokens=12))
        assert first.text and gen.cached_tokens == 0
        follow = build_prompt([PromptTurn("해장 추천", first.text)], "다른 거").text
        await gen.generate(GenerationRequest(follow, seed=2, max_new_tokens=12))
        assert gen.cached_tokens >= first.prompt_tokens - 1
    finally:
        await gen.close()
    with pytest.raises(ModelLoadError, match="MECHURI_QUANTIZATION=gguf"):
        load_model(str(converted), quantization="int4")


@pytest.mark.timeout(240)
def test_mechuri_chat_runs_on_the_converted_folder(converted: Path, polyglot_adapters: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    from test_chat_cli import answers_in

    done = subprocess.run(
        [sys.executable, "-m", "mechuri", "chat", "--model", str(converted), "--adapter", str(polyglot_adapters[1]),
         "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'llama.db'}", "--seed", "5"],
        input="매운 요리 추천해줘\n다른 거\n더 가벼운 거 없어?\n", capture_output=True, text=True, timeout=200,
        env={**cli_env(), "MECHURI_QUANTIZATION": "gguf", "MECHURI_MAX_BATCH_SIZE": "2"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(answers_in(done.stdout)) == 3 and all(answers_in(done.stdout))
    assert "mild-" in " ".join(p.name for p in (converted / "lora").iterdir())  # converted on load, and cached


@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_0"])
def test_each_kind_converts_and_stays_close(kind: str, polyglot_model_dir: Path, tmp_path: Path) -> None:
    from model.gguf_convert import convert_base

    out = convert_base(polyglot_model_dir, tmp_path / kind, kind)
    from transformers import AutoModelForCausalLM

    gen = LlamaCppGenerator(out, slots=1, threads=1)
    base = AutoModelForCausalLM.from_pretrained(polyglot_model_dir).eval()
    ids = gen.tokenizer.encode(prompt("매운 요리 추천해줘"), add_special_tokens=False)
    with torch.inference_mode():
        reference = base(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    got = first_logprobs(gen, ids)
    asyncio.run(gen.close())
    tolerance = {"f16": 0.02, "q8_0": 0.1, "q4_0": 0.6}[kind]
    assert max(abs(lp - reference[i].item()) for i, lp in got.items()) < tolerance



def test_mechuri_generate_on_the_converted_folder(converted: Path) -> None:
    args = [sys.executable, "-m", "mechuri", "generate", "매운 요리 추천해줘", "--model", str(converted),
            "--quantization", "gguf", "--seed", "3", "--max-new-tokens", "20"]
    runs = [subprocess.run(args, capture_output=True, text=True, timeout=120, env=cli_env(), cwd=REPO)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert runs[0].stdout.strip() and runs[0].stdout == runs[1].stdout  # the same seed, the same answer
    assert "cpu/gguf f32" in runs[0].stderr


def long_requests(n: int, new_tokens: int = 60) -> list[GenerationRequest]:
    """About 400 prompt tokens each, each starting differently (no shared prefix)."""
    return [GenerationRequest(f"{i}번 손님: " + " ".join(QUESTIONS[i:] + QUESTIONS[:i]) * 24 + prompt(q), seed=10 + i,
                              temperature=1.0, max_new_tokens=new_tokens, stop=()) for i, q in enumerate(QUESTIONS[:n])]


async def test_shared_kv_pool_waits_for_room_and_never_fails(converted: Path, polyglot_adapters: tuple[Path, Path]) -> None:
    """`kv_unified`: three slots share a 1,024-token pool (one context). Three long prompts do not fit it together
    (llama.cpp alone would fail every running request with "Context size has been exceeded"): they wait their turn,
    none fails and none is cut (each ends at EOS or at its max_new_tokens), and one request may still use the
    model's whole context."""
    gen = LlamaCppGenerator(converted, adapter=polyglot_adapters[0], slots=3, threads=1, kv_tokens=1024, kv_unified=True)
    reqs = long_requests(3)
    try:
        assert gen.info().max_context == 1024
        together = await asyncio.gather(*(gen.generate(r) for r in reqs))
        assert sum(r.prompt_tokens + r.new_tokens for r in together) > 1024  # more than the pool holds at once
        for r in together:
            assert r.finish_reason == "eos" or r.new_tokens == 60
            assert not r.prompt_truncated
        whole = await gen.generate(GenerationRequest(" ".join(QUESTIONS) * 60, seed=1, max_new_tokens=20, stop=()))
        assert whole.prompt_tokens + 20 > 900 and not whole.prompt_truncated
        assert gen._kv is not None and gen._kv.free == gen.kv_tokens  # every reservation returned
    finally:
        await gen.close()


async def test_kv_tokens_split_between_slots(converted: Path, polyglot_adapters: tuple[Path, Path]) -> None:
    """By default each slot gets its share of `kv_tokens`, and that is the context prompts are trimmed to; seeds
    reproduce their answers alone and together, as with a whole context per slot."""
    gen = LlamaCppGenerator(converted, adapter=polyglot_adapters[0], slots=2, threads=1, kv_tokens=1024)
    reqs = long_requests(2, new_tokens=150)
    try:
        assert gen.info().max_context == 512 and gen._kv is None
        alone = [await gen.generate(r) for r in reqs]
        together = await asyncio.gather(*(gen.generate(r) for r in reqs))
        assert [r.text for r in together] == [r.text for r in alone] and len({r.text for r in alone}) == 2
        assert all(r.prompt_truncated and r.prompt_tokens + 150 <= 512 for r in alone)
    finally:
        await gen.close()


async def test_q8_kv_cache_keeps_greedy_answers(converted: Path, polyglot_adapters: tuple[Path, Path]) -> None:
    """K/V in q8_0 halves the pool's memory; greedy answers stay those of f16 K/V on the tiny model."""
    reqs = [GenerationRequest(prompt(q), seed=0, temperature=0.0, repetition_penalty=1.0, max_new_tokens=40)
            for q in QUESTIONS]
    texts = {}
    for kind in ("f16", "q8_0"):
        gen = LlamaCppGenerator(converted, adapter=polyglot_adapters[0], slots=2, threads=1, kv_type=kind)
        texts[kind] = await _texts(gen, reqs)
        await gen.close()
    assert texts["q8_0"] == texts["f16"]


@pytest.mark.timeout(180)
def test_mechuri_bot_answers_and_reloads_on_llama_cpp(converted: Path, polyglot_adapters: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    """`mechuri bot` (the real PTB Application, against the fake Bot API) on MECHURI_QUANTIZATION=gguf: a user is
    answered with the buttons, an admin's /reload of a PEFT adapter is served by a second llama.cpp server, a broken
    adapter keeps the serving one, and /status names the path."""
    from test_bot_e2e import bot_answers_and_reloads

    model = {"MECHURI_MODEL_BASE": str(converted), "MECHURI_QUANTIZATION": "gguf", "MECHURI_MAX_BATCH_SIZE": "2"}
    reports, turns, _ = bot_answers_and_reloads(tmp_path, model, polyglot_adapters[1], "mild", wait_s=60)
    assert "준비 완료" in reports[1] and "불러오지 못했어요" in reports[3] and "'mild'" in reports[3], reports
    assert "어댑터: mild" in reports[4] and "양자화: gguf" in reports[4], reports[4]
    assert [t[1] for t in turns] == ["user", "assistant"] and turns[1][3] == "ok"
