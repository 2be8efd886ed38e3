"""The CPU path: int8 / int4 weight-only base (torch kernels) + an unmerged LoRA, through the one Generator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import GenerationRequest, Generator, ModelLoadError, build_prompt, load_model
from model.prompt import PromptTurn
from model.quantized import WeightOnlyLinear

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["매운 요리 추천해줘", "비 오는 날 뭐 먹지", "해장 추천", "야식 추천해줘", "더운 날 시원한 거"]


def prompt(q: str) -> str:
    return build_prompt([], q).text


@pytest.fixture(scope="module")
def prepared_dir(polyglot_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mechuri quantize` as a user runs it."""
    out = tmp_path_factory.mktemp("prepared") / "int4"
    done = subprocess.run([sys.executable, "-m", "mechuri", "quantize", str(polyglot_model_dir), str(out),
                           "--kind", "int4", "--group-size", "32"], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "MECHURI_QUANTIZATION=int4" in done.stdout
    return out


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def dequantized_reference(quantized_model, base_dir: Path, adapter: Path):
    """peft on a plain bf16 model whose Linear weights are exactly the quantised layers' dequantised weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16).eval()
    modules = dict(plain.named_modules())
    for name, module in quantized_model.named_modules():
        if isinstance(module, WeightOnlyLinear):
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            modules[name].weight.data = module.dequantized().to(torch.bfloat16)
    return PeftModel.from_pretrained(plain, str(adapter)).eval()


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantised_base_with_lora_matches_peft_on_the_dequantised_weights(
        kind: str, polyglot_model_dir: Path, polyglot_adapters: tuple[Path, Path]) -> None:
    loaded = load_model(str(polyglot_model_dir), adapter=polyglot_adapters[0], quantization=kind, device="cpu")
    layers = [m for m in loaded.model.modules() if isinstance(m, WeightOnlyLinear)]
    assert len(layers) == 2 * 4 + 1 and all(m.kind == kind for m in layers)  # 4 per layer, and the output head
    ids = torch.tensor([loaded.tokenizer.encode(prompt("매운 요리 추천해줘"))])
    ours = logits_of(loaded.model, ids)
    reference = logits_of(dequantized_reference(loaded.model, polyglot_model_dir, polyglot_adapters[0]), ids)
    with loaded.model.disable_adapter():
        without_lora = logits_of(loaded.model, ids)
    scale = reference.abs().max().item()
    assert (ours - reference).abs().max().item() < 0.02 * scale
    # The adapter moves the logits far more than the kernels' rounding does: the comparison above has teeth.
    assert (without_lora - reference).abs().max().item() > 0.1 * scale


def test_prepared_folder_loads_to_the_same_model(polyglot_model_dir: Path, prepared_dir: Path,
                                                 polyglot_adapters: tuple[Path, Path]) -> None:
    from model.quantized import load_prepared, quantize_model, read_marker

    marker = read_marker(prepared_dir)
    assert marker["kind"] == "int4" and len(marker["layers"]) == 9
    prepared = load_prepared(prepared_dir, marker)
    fresh = load_model(str(polyglot_model_dir), quantization="none", dtype=torch.bfloat16, device="cpu").model
    quantize_model(fresh, "int4", 32)
    ids = torch.tensor([[5, 17, 300, 42, 8, 99]])
    assert torch.equal(logits_of(prepared, ids), logits_of(fresh, ids))
    loaded = load_model(str(prepared_dir), adapter=polyglot_adapters[0], quantization="int4")
    assert loaded.pad_token_id == loaded.eos_token_id == 2  # Polyglot's tokenizer travels with the folder
    with pytest.raises(ModelLoadError, match="MECHURI_QUANTIZATION=int4"):
        load_model(str(prepared_dir), quantization="none")


def test_prepared_int8_folder_runs_every_batch_shape(polyglot_model_dir: Path, tmp_path: Path) -> None:
    """Weights read from a file land at unaligned offsets unless copied; the int8 kernel crashed on those."""
    from model.quantized import load_prepared, quantize_model, read_marker, save_quantized

    loaded = load_model(str(polyglot_model_dir), quantization="none", dtype=torch.bfloat16, device="cpu")
    quantize_model(loaded.model, "int8")
    save_quantized(loaded.model, loaded.tokenizer, tmp_path / "int8", "int8", 128)
    prepared = load_prepared(tmp_path / "int8", read_marker(tmp_path / "int8"))
    for length in (1, 3, 8, 33):
        ids = torch.arange(5, 5 + length)[None]
        assert torch.equal(logits_of(prepared, ids), logits_of(loaded.model, ids))


async def _texts(gen: Generator, requests: list[GenerationRequest]) -> list[str]:
    return [(await gen.generate(r)).text for r in requests]


async def test_seeds_bans_streaming_and_batching_on_int4(polyglot_model_dir: Path,
                                                          polyglot_adapters: tuple[Path, Path]) -> None:
    gen = Generator(load_model(str(polyglot_model_dir), adapter=polyglot_adapters[0], quantization="int4"),
                    max_batch_size=4)
    try:
        reqs = [GenerationRequest(prompt(q), seed=i, temperature=1.0, max_new_tokens=24)
                for i, q in enumerate(QUESTIONS)]
        alone = await _texts(gen, reqs)
        assert alone == await _texts(gen, reqs)  # a seed reproduces its answer
        crowd = await asyncio.gather(*(gen.generate(r) for r in reqs))
        assert [r.text for r in crowd] == alone  # ... alone or batched with others
        stream = gen.stream(reqs[0])
        assert "".join([d async for d in stream]) == alone[0] == stream.result.text
        greedy = GenerationRequest(prompt("매운 요리 추천해줘"), seed=0, temperature=0, max_new_tokens=40)
        said = (await gen.generate(greedy)).text
        words = [w for w in said.split() if len(w) >= 2][:2]
        assert words, said
        for seed in range(4):
            banned = GenerationRequest(greedy.prompt, seed=seed, max_new_tokens=40, avoid=tuple(words))
            text = (await gen.generate(banned)).text
            assert not any(w in text for w in words), (words, text)
    finally:
        await gen.close()


async def test_reload_mid_stream_drops_nothing_on_int4(polyglot_model_dir: Path,
                                                       polyglot_adapters: tuple[Path, Path]) -> None:
    spicy, mild = polyglot_adapters
    reqs = [GenerationRequest(prompt(QUESTIONS[i % 5]), seed=i, temperature=0.9, max_new_tokens=20)
            for i in range(8)]
    expected = {}
    for adapter in polyglot_adapters:
        one = Generator(load_model(str(polyglot_model_dir), adapter=adapter, quantization="int4"))
        expected[adapter.name] = await _texts(one, reqs)
        await one.close()
    assert expected["spicy"] != expected["mild"]
    gen = Generator(load_model(str(polyglot_model_dir), adapter=spicy, quantization="int4"), max_batch_size=2)
    tasks = [asyncio.create_task(gen.generate(r)) for r in reqs]
    await asyncio.sleep(0.05)
    info = await gen.reload_adapter(mild)
    results = await asyncio.gather(*tasks)
    await gen.close()
    names = [r.adapter.name for r in results]
    assert info.name == "mild" and "spicy" in names and "mild" in names, names
    assert [r.text for r in results] == [expected[n][i] for i, n in enumerate(names)]


@pytest.mark.timeout(240)
def test_mechuri_chat_runs_on_the_prepared_int4_folder(prepared_dir: Path, tmp_path: Path) -> None:
    """What a CPU user runs: the folder `mechuri quantize` wrote, MECHURI_QUANTIZATION=int4, a follow-up turn."""
    from test_chat_cli import answers_in, run_cli

    db = tmp_path / "cpu.db"
    out = run_cli(["chat", "--model", str(prepared_dir), "--database-url", f"sqlite+aiosqlite:///{db}"],
                  "매운 요리 추천해줘\n다른 거\n더 가벼운 거 없어?\n",
                  env={"HF_HUB_OFFLINE": "1", "MECHURI_QUANTIZATION": "int4"}, timeout=200)
    assert len(answers_in(out)) == 3 and all(answers_in(out))


async def test_the_bot_runtime_starts_the_int4_generator_with_prefix_reuse(prepared_dir: Path) -> None:
    """`mechuri bot` and `mechuri chat` start their generator here: the CPU path, the prefix cache on."""
    from bot.service.runtime import start_generator
    from bot.settings import Settings

    settings = Settings(model_base=str(prepared_dir), quantization="int4", telegram_bot_token="1:x")
    gen = await start_generator(settings, device="cpu")
    try:
        assert gen.info().quantization == "int4" and gen.prefix_bytes == 1024 * 2**20
        assert any(isinstance(m, WeightOnlyLinear) for m in gen.loaded.model.modules())
        first = await gen.generate(GenerationRequest(prompt("해장 추천"), seed=1, max_new_tokens=12))
        assert first.text
        follow = build_prompt([PromptTurn("해장 추천", first.text)], "다른 거").text
        await gen.generate(GenerationRequest(follow, seed=2, max_new_tokens=12))
        assert gen._batch.prefix.hits == 1
    finally:
        await gen.close()
