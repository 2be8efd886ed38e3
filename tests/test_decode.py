"""The decode loop on both tiny flavours: equivalence with transformers, batch independence, continuous admission,
ids that must never be sampled, no broken characters, and a step that compiles as one graph."""

from __future__ import annotations

import asyncio
import codecs
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model import GenerationRequest, Generator, build_prompt, load_model
from model.serving.bans import TokenBytes
from model.serving.sampling import REPLACEMENT_CHAR
from model.serving.utf8 import BOUNDARY, Utf8Table

QUESTIONS = ["매운 요리 추천해줘", "비 오는 날 뭐 먹지", "해장 추천", "야식 추천해줘", "더운 날 시원한 거"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def prompt(q: str) -> str:
    return build_prompt([], q).text


@pytest.fixture(scope="module")
def loaded(any_model_dir: Path):
    return load_model(str(any_model_dir))


async def _with(loaded, fn, **kwargs):
    gen = Generator(loaded, **kwargs)
    try:
        return await fn(gen)
    finally:
        await gen.close()


def _hf_greedy(loaded, question: str, new_tokens: int, penalty: float) -> str:
    tok = loaded.tokenizer
    ids = torch.tensor([tok.encode(prompt(question), add_special_tokens=False)])
    out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                                repetition_penalty=penalty, eos_token_id=loaded.eos_token_id,
                                pad_token_id=loaded.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("###")[0].strip()


@pytest.mark.parametrize("penalty", [1.0, 1.1])
async def test_greedy_equals_transformers_generate_alone_and_batched(loaded, penalty) -> None:
    reqs = [GenerationRequest(prompt(q), seed=0, temperature=0, max_new_tokens=40, repetition_penalty=penalty)
            for q in QUESTIONS]
    expected = [_hf_greedy(loaded, q, 40, penalty) for q in QUESTIONS]

    async def run(gen: Generator) -> tuple[list[str], list[str]]:
        alone = [(await gen.generate(r)).text for r in reqs]
        batched = [r.text for r in await asyncio.gather(*(gen.generate(r) for r in reqs))]
        return alone, batched

    alone, batched = await _with(loaded, run)
    assert alone == expected and batched == expected


async def test_a_seeded_row_is_the_same_alone_in_a_crowd_and_when_it_joins_halfway(loaded) -> None:
    req = GenerationRequest(prompt("저녁 뭐 먹지"), seed=42, temperature=1.0, max_new_tokens=30)
    # Partners of very different lengths: a one-line question and a long conversation (hundreds of tokens of padding
    # for the short rows in a shared prefill, if padding leaked anywhere).
    history = "\n\n".join(f"### 질문: {q}\n\n### 답변: 김치찌개 어때요? 돼지고기를 넣고 푹 끓여요." for q in QUESTIONS * 8)
    crowd = [GenerationRequest(prompt(q), seed=i, temperature=1.0, max_new_tokens=30) for i, q in enumerate(QUESTIONS)]
    crowd.append(GenerationRequest(history + "\n\n" + prompt("점심은?"), seed=9, temperature=1.0, max_new_tokens=30))
    assert len(loaded.tokenizer.encode(crowd[-1].prompt)) > 300

    async def run(gen: Generator) -> tuple[str, str, str]:
        alone = (await gen.generate(req)).text
        together = await asyncio.gather(*(gen.generate(r) for r in crowd[:3]), gen.generate(req),
                                        *(gen.generate(r) for r in crowd[3:]))
        long = gen.stream(GenerationRequest(prompt("해장 추천"), seed=3, max_new_tokens=120, min_new_tokens=120))
        await long.__anext__()  # the long answer is being written...
        joined = (await gen.generate(req)).text  # ...when this one joins the running batch
        async for _ in long:
            pass
        return alone, together[3].text, joined

    alone, in_crowd, joined = await _with(loaded, run)
    assert alone and in_crowd == alone and joined == alone


async def test_padding_never_counts_in_the_repetition_penalty(loaded) -> None:
    """With pad = EOS (the Polyglot tokenizer), a short prompt padded beside a long one must not have its EOS
    penalised: a strong penalty makes any leak visible as an answer that no longer stops where it did alone."""
    short = GenerationRequest(prompt("해장 추천"), seed=0, temperature=0, max_new_tokens=60, repetition_penalty=3.0)
    long = GenerationRequest(prompt("매운 요리 추천해줘 " * 40), seed=0, temperature=0, max_new_tokens=4)

    async def run(gen: Generator):
        alone = await gen.generate(short)
        _, beside = await asyncio.gather(gen.generate(long), gen.generate(short))
        return alone, beside

    alone, beside = await _with(loaded, run)
    assert alone.finish_reason == "eos" and (beside.text, beside.finish_reason) == (alone.text, alone.finish_reason)


@pytest.mark.parametrize("admission", ["continuous", "static"])
async def test_a_request_that_arrives_during_a_long_answer_starts_at_once(loaded, admission) -> None:
    """Continuous batching: the newcomer's answer is done long before the long one. Static batching (the old
    generator) makes it wait for the whole long answer: the same test shows the difference."""
    finished: dict[str, float] = {}

    async def run(gen: Generator) -> float:
        long = gen.stream(GenerationRequest(prompt("해장 추천"), seed=3, max_new_tokens=200, min_new_tokens=200))
        await long.__anext__()

        async def drain() -> None:
            async for _ in long:
                pass
            finished["long"] = time.perf_counter()

        task = asyncio.create_task(drain())
        short = await gen.generate(GenerationRequest(prompt("야식 추천해줘"), seed=1, max_new_tokens=8))
        finished["short"] = time.perf_counter()
        await task
        return short.ttft_s

    ttft = await _with(loaded, run, admission=admission)
    if admission == "continuous":
        assert finished["short"] < finished["long"]
        assert ttft < (finished["long"] - finished["short"])  # far sooner than the long answer's remaining time
    else:
        assert finished["short"] > finished["long"]


def _boost(loaded, ids: list[int], amount: float = 1e4):
    """Make the model prefer `ids` above everything: a hook on the output layer."""
    bonus = torch.zeros(loaded.model.get_output_embeddings().weight.shape[0])
    bonus[ids] = amount
    return loaded.model.get_output_embeddings().register_forward_hook(lambda _m, _i, out: out + bonus.to(out.dtype))


async def test_padded_embedding_rows_and_special_tokens_are_never_sampled(polyglot_model_dir: Path) -> None:
    loaded = load_model(str(polyglot_model_dir))
    tok = loaded.tokenizer
    rows = loaded.model.get_output_embeddings().weight.shape[0]
    never = [*range(len(tok), rows), *(i for i in tok.all_special_ids if i != loaded.eos_token_id)]
    assert rows > len(tok) and len(never) > rows - len(tok)
    reqs = [GenerationRequest(prompt(q), seed=s, temperature=t, max_new_tokens=30) for s, q in enumerate(QUESTIONS)
            for t in (0, 1.0)]

    async def texts(gen: Generator) -> list[str]:
        return [(await gen.generate(r)).text for r in reqs]

    normal = await _with(loaded, texts)
    hook = _boost(loaded, never)
    try:
        boosted = await _with(loaded, texts)
    finally:
        hook.remove()
    # Those ids decode to nothing: had any been sampled, the answers would shrink or change.
    assert boosted == normal and all(boosted)


def _fragments(tok) -> list[int]:
    """Tokens that are not whole characters on their own: a lead byte without its continuation, or the reverse."""
    pieces = TokenBytes(tok).by_id
    broken = []
    for i, data in enumerate(pieces):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            broken.append(i)
    return broken


@pytest.mark.parametrize("avoid", [(), ("김치찌개", "해물파전", "콩나물국밥")])
async def test_no_broken_character_even_from_a_model_that_prefers_them(loaded, avoid) -> None:
    fragments = _fragments(loaded.tokenizer)
    assert len(fragments) > 50
    hook = _boost(loaded, fragments, amount=6.0)
    try:
        # Without the mask the same model does write broken characters (transformers' own sampling shows it).
        ids = torch.tensor([loaded.tokenizer.encode(prompt("해장 추천"))])
        torch.manual_seed(0)
        raw = loaded.model.generate(ids, do_sample=True, max_new_tokens=40, pad_token_id=loaded.pad_token_id)
        assert REPLACEMENT_CHAR in loaded.tokenizer.decode(raw[0, ids.shape[1]:], skip_special_tokens=True)

        async def run(gen: Generator) -> list[tuple[str, list[str], tuple[int, ...]]]:
            seen = []
            for seed in range(12):
                stream = gen.stream(GenerationRequest(prompt(QUESTIONS[seed % 5]), seed=seed, temperature=1.0,
                                                      max_new_tokens=40, avoid=avoid))
                deltas = [d async for d in stream]
                seen.append((stream.result.text, deltas, stream.result.token_ids))
            return seen

        results = await _with(loaded, run)
    finally:
        hook.remove()
    pieces = TokenBytes(loaded.tokenizer).by_id
    assert all(text for text, _, _ in results)
    for text, deltas, ids in results:
        # The bytes as sampled, not only the text shown: every token kept the answer valid UTF-8.
        written = b"".join(pieces[i] for i in ids if i != loaded.eos_token_id)
        assert _valid_prefix(written), written
        assert REPLACEMENT_CHAR not in text and not any(REPLACEMENT_CHAR in d for d in deltas), text
        assert not any(dish in text for dish in avoid)


def _valid_prefix(data: bytes) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        return REPLACEMENT_CHAR not in decoder.decode(data, final=False)
    except UnicodeDecodeError:
        return False


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=12))
def test_the_utf8_table_allows_exactly_the_valid_prefixes(tokens: list[bytes]) -> None:
    """Token by token, the table's verdict equals Python's strict decoder on the bytes so far."""
    table = Utf8Table(tokens, len(tokens), "cpu")
    state, written = BOUNDARY, b""
    for token, data in enumerate(tokens):
        allowed = bool(table.allowed[state, token])
        assert allowed == _valid_prefix(written + data), (written, data)
        if not allowed:
            return
        state, written = int(table.after[state, token]), written + data


def test_the_decode_step_compiles_as_one_graph_with_the_same_tokens(tiny_model_dir: Path) -> None:
    """fullgraph=True fails on any host sync or graph break: this is the property CUDA-graph capture needs."""
    from model.serving.decode import DecodeBatch, Newcomer

    loaded = load_model(str(tiny_model_dir))
    tok = loaded.tokenizer
    with torch.inference_mode():
        batch = DecodeBatch(loaded.model, slots=2, context=loaded.max_context,
                            vocab_rows=loaded.model.get_output_embeddings().weight.shape[0],
                            token_bytes=TokenBytes(tok).by_id, eos=loaded.eos_token_id, pad=loaded.pad_token_id,
                            never=tok.all_special_ids, device="cpu")
        newcomers = [Newcomer(0, GenerationRequest("", seed=1, temperature=1.0), tok.encode(prompt("해장 추천"))),
                     Newcomer(1, GenerationRequest("", seed=2, temperature=0), tok.encode(prompt("야식 추천해줘")))]
        batch.prefill(newcomers)
        saved = {name: getattr(batch.state, name).clone() for name in ("position", "last_token", "generated",
                                                                         "presence", "utf8")}
        eager = [batch.step(2, 64, True).tolist() for _ in range(8)]
        for name, value in saved.items():
            getattr(batch.state, name).copy_(value)
        compiled = torch.compile(batch._step, fullgraph=True, backend="aot_eager")
        assert [compiled(2, 64, True).tolist() for _ in range(8)] == eager
