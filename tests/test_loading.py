from __future__ import annotations

import json
import shutil

import pytest

from model import AdapterError, GenerationRequest, ModelLoadError, build_prompt, load_model
from model.loading import check_adapter_folder


@pytest.mark.parametrize("quantization", ["none", "8bit", "4bit"])
@pytest.mark.parametrize("with_adapter", [False, True])
def test_loads_in_every_quantization_with_and_without_adapter(tiny_model_dir, tiny_adapter_dir, quantization,
                                                              with_adapter) -> None:
    loaded = load_model(str(tiny_model_dir), adapter=tiny_adapter_dir if with_adapter else None,
                        quantization=quantization)
    assert loaded.device == "cpu" and loaded.quantization == quantization
    # The config carries the Polyglot quirk eos_token_id=0; the real EOS is the tokenizer's <|endoftext|>.
    assert loaded.model.config.eos_token_id == 0
    assert loaded.eos_token_id == loaded.tokenizer.convert_tokens_to_ids("<|endoftext|>") == 2
    assert loaded.pad_token_id != loaded.eos_token_id
    if with_adapter:
        assert loaded.adapter.name == "spicy" and len(loaded.adapter.version) == 12
        assert type(loaded.model).__name__.startswith("PeftModel")
    else:
        assert loaded.adapter.name is None and loaded.adapter.version == "base"
    if quantization != "none":
        linear = dict(loaded.model.named_modules())
        kinds = {type(m).__name__ for m in linear.values()}
        assert kinds & {"Linear4bit", "Linear8bitLt"}, kinds
    ids = loaded.tokenizer(build_prompt([], "해장 추천").text, return_tensors="pt")
    out = loaded.model.generate(**ids, max_new_tokens=5, do_sample=False, eos_token_id=2, pad_token_id=1)
    assert out.shape[1] > ids.input_ids.shape[1]


def test_adapter_changes_the_output(tiny_model_dir, tiny_adapter_dir) -> None:
    import torch

    plain = load_model(str(tiny_model_dir))
    adapted = load_model(str(tiny_model_dir), adapter=tiny_adapter_dir)
    ids = plain.tokenizer("### 질문: 해장 추천\n\n### 답변:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(plain.model(ids).logits, adapted.model(ids).logits)


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist: check the path"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_a_model(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"holds no model: expected config\.json"):
        load_model(str(tmp_path / "empty"))


def test_adapter_given_as_base(tiny_adapter_dir) -> None:
    with pytest.raises(ModelLoadError, match="is a LoRA adapter folder, not a base model: pass it as --adapter"):
        load_model(str(tiny_adapter_dir))


def test_missing_and_empty_adapter_folders(tiny_model_dir, tmp_path) -> None:
    with pytest.raises(AdapterError, match="does not exist"):
        load_model(str(tiny_model_dir), adapter=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match=r"adapter_config\.json is missing"):
        load_model(str(tiny_model_dir), adapter=tmp_path / "empty")


def test_broken_adapter_folder(tiny_model_dir, tiny_adapter_dir, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_adapter_dir, broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        check_adapter_folder(broken)
    shutil.copy(tiny_adapter_dir / "adapter_config.json", broken / "adapter_config.json")
    (broken / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(AdapterError, match="broken"):
        load_model(str(tiny_model_dir), adapter=broken)


def test_adapter_made_for_another_base(tiny_adapter_dir, tmp_path) -> None:
    from model.demo.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "wide", hidden=64, layers=1, heads=2)
    with pytest.raises(AdapterError, match="made for another base"):
        load_model(str(other), adapter=tiny_adapter_dir)


def test_unreachable_hub_says_download_first(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"download it first .* give the local folder"):
        load_model("beomi/KoAlpaca-Polyglot-5.8B")


def test_unknown_quantization(tiny_model_dir) -> None:
    with pytest.raises(ModelLoadError, match="unknown quantization"):
        load_model(str(tiny_model_dir), quantization="3bit")


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="top_p"):
        GenerationRequest("x", seed=1, top_p=0)
    assert json.dumps(GenerationRequest("x", seed=1).sampling_params())


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "float16"), ((8, 0), "bfloat16"), ((9, 0), "bfloat16")])
def test_bf16_only_on_gpus_that_have_it(monkeypatch, capability, expected) -> None:
    """A T4 (7.5) says yes to torch.cuda.is_bf16_supported(), and emulates bf16 several times slower than fp16."""
    import torch

    from model.loading import default_dtype, native_bf16, quantization_config

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert native_bf16("cuda") == (expected == "bfloat16")
    assert str(default_dtype("none", "cuda")) == f"torch.{expected}"
    assert str(quantization_config("4bit", "cuda").bnb_4bit_compute_dtype) == f"torch.{expected}"
    assert default_dtype("4bit", "cpu") == torch.bfloat16 and default_dtype("none", "cpu") == torch.float32
