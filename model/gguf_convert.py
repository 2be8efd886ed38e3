"""A GPT-NeoX checkpoint (KoAlpaca / Polyglot-ko) and its PEFT LoRA adapters as GGUF files for llama.cpp.

`convert_base` writes a folder that the llama.cpp CPU path loads (MECHURI_QUANTIZATION=gguf): the GGUF weights, the
Hugging Face tokenizer (prompts are sent as token ids: llama.cpp does not know Polyglot's pre-tokenizer) and
`mechuri_gguf.json`, which says what the folder holds. `convert_lora` turns a PEFT adapter folder into a GGUF LoRA
for that base; the generator calls it on load and on `/reload`, so adapters stay PEFT folders everywhere.

Two layouts differ between the checkpoints and llama.cpp. HF's fused `query_key_value` interleaves per head
([head][q|k|v][dim]); llama.cpp's `attn_qkv` wants all queries, then all keys, then all values. The base's QKV weight
and bias, and the adapter's `lora_B` of that module (its output rows), are reordered alike; `lora_A` (inputs) is not.
Tensors are read and written one at a time, so converting the 5.8B model needs about one tensor's memory, not 12 GB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from model.loading import GGUF_MARKER as MARKER
from model.types import AdapterError, ModelLoadError

KINDS = ("f32", "f16", "q8_0", "q4_0")
ARCH = "gptneox"
NAMES = {"attention.query_key_value": "attn_qkv", "attention.dense": "attn_output", "input_layernorm": "attn_norm",
         "post_attention_layernorm": "ffn_norm", "mlp.dense_h_to_4h": "ffn_up", "mlp.dense_4h_to_h": "ffn_down"}
TOP = {"gpt_neox.embed_in.weight": "token_embd.weight", "gpt_neox.final_layer_norm.weight": "output_norm.weight",
       "gpt_neox.final_layer_norm.bias": "output_norm.bias", "embed_out.weight": "output.weight"}
# Buffers some checkpoints carry that are recomputed, never learned.
SKIP = ("attention.rotary_emb.inv_freq", "attention.bias", "attention.masked_bias")


def gguf_name(hf: str) -> str | None:
    """llama.cpp's name for an HF GPT-NeoX tensor; None for buffers that are not weights."""
    if hf.startswith("gpt_neox.layers."):
        layer, rest = hf.removeprefix("gpt_neox.layers.").split(".", 1)
        if rest in SKIP:
            return None
        module, kind = rest.rsplit(".", 1)
        if module in NAMES:
            return f"blk.{layer}.{NAMES[module]}.{kind}"
    elif hf in TOP:
        return TOP[hf]
    raise ModelLoadError(f"unexpected tensor {hf!r}: is this a GPT-NeoX (Polyglot/KoAlpaca) checkpoint?")


def qkv_to_llama(data: np.ndarray, heads: int) -> np.ndarray:
    """[heads·3·dim, …] per-head interleaved (HF) → [3·heads·dim, …] (llama.cpp): rows regrouped, values untouched."""
    rest = data.shape[1:]
    return data.reshape(heads, 3, -1, *rest).swapaxes(0, 1).reshape(data.shape)


def read_config(source: Path) -> dict[str, Any]:
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{source} holds no readable config.json ({exc}): give a save_pretrained folder") from exc
    if config.get("model_type") != "gpt_neox":
        raise ModelLoadError(f"{source} is a {config.get('model_type')!r} model: only GPT-NeoX (Polyglot-ko, "
                             "KoAlpaca-Polyglot) converts")
    return config


def checkpoint_tensors(source: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor of a save_pretrained folder as float32, one at a time (safetensors or .bin, sharded or not)."""
    import torch

    files = sorted(source.glob("*.safetensors")) or sorted(source.glob("pytorch_model*.bin"))
    if not files:
        raise ModelLoadError(f"{source} has no model weights (model.safetensors or pytorch_model.bin)")
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key).to(torch.float32).numpy()
        else:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            for key in list(state):
                yield key, state.pop(key).to(torch.float32).numpy()


def _tensor_type(name: str, shape: tuple[int, ...], kind: str):
    """The GGML type a tensor is stored as: norms and biases stay f32 (llama.cpp needs them so), and the output
    projection of a q4_0 file is q8_0, as llama.cpp's own quantizer keeps it above the body."""
    import gguf

    types = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}
    if len(shape) < 2:
        return types["f32"]
    chosen = types["q8_0" if kind == "q4_0" and name == "output.weight" else kind]
    block = gguf.GGML_QUANT_SIZES[chosen][0]
    return chosen if shape[-1] % block == 0 else types["f16"]


def _stored(shape: tuple[int, ...], qtype) -> tuple[tuple[int, ...], Any, int]:
    """What `add_tensor_info` takes for the array `_encoded` will give (the table is written before the data): its
    shape (in bytes per row for quantized types), numpy dtype and size."""
    import gguf

    plain = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}.get(qtype)
    if plain is not None:
        return shape, plain, int(np.prod(shape)) * np.dtype(plain).itemsize
    byte_shape = tuple(gguf.quants.quant_shape_to_byte_shape(shape, qtype))
    return byte_shape, np.uint8, int(np.prod(byte_shape))


def _encoded(data: np.ndarray, qtype) -> np.ndarray:
    import gguf

    if qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, qtype)


def _shapes(source: Path) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The GGUF names and shapes `_prepared` will yield, in its order; safetensors give them without reading data."""
    files = sorted(source.glob("*.safetensors"))
    if not files:
        yield from ((name, data.shape) for name, data in _prepared(source, 1))
        return
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                name = gguf_name(key)
                if name is not None:
                    yield name, tuple(f.get_slice(key).get_shape())


def _prepared(source: Path, heads: int) -> Iterator[tuple[str, np.ndarray]]:
    for key, data in checkpoint_tensors(source):
        name = gguf_name(key)
        if name is None:
            continue
        if name.endswith("attn_qkv.weight") or name.endswith("attn_qkv.bias"):
            data = qkv_to_llama(data, heads)
        yield name, data


def add_vocab(writer, tokenizer, rows: int, eos: int) -> None:
    """The tokenizer's BPE, padded with unused entries to the embedding's rows. llama.cpp only detokenizes with it
    (for its logs): Mechuri sends token ids and decodes the answer with the HF tokenizer."""
    import gguf

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = set(tokenizer.get_added_vocab())
    tokens, types = [], []
    for i in range(rows):
        token = by_id.get(i)
        tokens.append(token if token is not None else f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED if token is None else
                     gguf.TokenType.CONTROL if token in added else gguf.TokenType.NORMAL)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    writer.add_eos_token_id(eos)
    writer.add_bos_token_id(eos)
    writer.add_add_bos_token(False)


def _add_hparams(writer, config: dict[str, Any], kind: str) -> None:
    import gguf

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    rope = config.get("rope_parameters") or {}
    rotary = config.get("rotary_pct") or rope.get("partial_rotary_factor") or 0.25
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(int(rotary * (hidden // heads)))
    writer.add_rope_freq_base(float(config.get("rotary_emb_base") or rope.get("rope_theta") or 10000.0))
    writer.add_head_count(heads)
    writer.add_parallel_residual(bool(config.get("use_parallel_residual", True)))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-5)))
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[kind])


def convert_base(source: Path | str, out: Path | str, kind: str = "q4_0") -> Path:
    """Write `out`/model-KIND.gguf, the tokenizer and the marker. Two passes over the checkpoint (the tensor table
    comes before the data in a GGUF file), each holding one tensor at a time."""
    import gguf

    from model.loading import eos_id_of, load_tokenizer

    source, out = Path(source).expanduser(), Path(out).expanduser()
    if kind not in KINDS:
        raise ModelLoadError(f"unknown GGUF kind {kind!r}: choose one of {', '.join(KINDS)}")
    if (out / MARKER).exists():
        raise ModelLoadError(f"{out} already holds a converted model: choose a new folder")
    config = read_config(source)
    tokenizer = load_tokenizer(str(source))
    eos, heads = eos_id_of(tokenizer), int(config["num_attention_heads"])
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"model-{kind}.gguf"
    part = target.with_suffix(".part")
    writer = gguf.GGUFWriter(str(part), ARCH)
    _add_hparams(writer, config, kind)
    rows = 0
    for name, shape in _shapes(source):
        qtype = _tensor_type(name, shape, kind)
        writer.add_tensor_info(name, *_stored(shape, qtype), raw_dtype=qtype)
        rows = shape[0] if name == "token_embd.weight" else rows
    add_vocab(writer, tokenizer, rows or int(config["vocab_size"]), eos)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, data in _prepared(source, heads):
        writer.write_tensor_data(_encoded(data, _tensor_type(name, data.shape, kind)))
    writer.close()
    part.rename(target)
    tokenizer.save_pretrained(out)
    marker = {"format": 1, "kind": kind, "gguf": target.name, "source": str(source), "heads": heads,
              "hidden": int(config["hidden_size"]),
              "intermediate": int(config["intermediate_size"]), "layers": int(config["num_hidden_layers"]),
              "max_context": int(config["max_position_embeddings"]), "eos_token_id": eos, "vocab_rows": rows,
              "converted_at": time.time()}
    (out / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return out


def read_marker(folder: Path | str) -> dict[str, Any] | None:
    """The converted folder's description, or None when `folder` is not one."""
    file = Path(folder).expanduser() / MARKER
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{file} is broken ({exc}): run `mechuri convert-gguf` again") from exc


def convert_lora(adapter: Path | str, out: Path | str, marker: dict[str, Any]) -> Path:
    """A PEFT LoRA adapter folder → one GGUF LoRA for the converted base that `marker` describes."""
    import gguf
    from safetensors import safe_open

    from model.loading import check_adapter_folder

    adapter, out = Path(adapter).expanduser(), Path(out)
    config = check_adapter_folder(adapter)
    for flag in ("use_dora", "use_rslora"):
        if config.get(flag):
            raise AdapterError(f"adapter {adapter.name} uses {flag.removeprefix('use_')}: llama.cpp applies plain "
                               "LoRA only; serve it with MECHURI_QUANTIZATION=int4 or none")
    if config.get("modules_to_save"):
        raise AdapterError(f"adapter {adapter.name} trains whole modules ({config['modules_to_save']}): llama.cpp "
                           "applies LoRA matrices only")
    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        raise AdapterError(f"{adapter} has no adapter_model.safetensors: save the adapter with safetensors")
    ranks = {int(r) for r in (config.get("rank_pattern") or {}).values()} | {int(config["r"])}
    alphas = {float(a) for a in (config.get("alpha_pattern") or {}).values()} | {float(config["lora_alpha"])}
    if len(ranks) > 1 or len(alphas) > 1:
        raise AdapterError(f"adapter {adapter.name} has per-module ranks or alphas: llama.cpp takes one alpha")
    writer = gguf.GGUFWriter(str(out), ARCH)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alphas.pop())
    heads = marker["heads"]
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            module, part = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
            try:
                name = gguf_name(module + ".weight")
            except ModelLoadError as exc:
                raise AdapterError(f"adapter {adapter.name} changes {module}: llama.cpp's GPT-NeoX takes LoRA on "
                                   "query_key_value, dense, dense_h_to_4h and dense_4h_to_h only") from exc
            data = f.get_tensor(key).float().numpy()
            which = part[0].lower()
            size = data.shape[1] if which == "a" else data.shape[0]
            wanted = _lora_sizes(name, marker)[0 if which == "a" else 1]
            if size != wanted:
                raise AdapterError(f"adapter {adapter.name} was made for another base: {key} has {size} "
                                   f"{'inputs' if which == 'a' else 'outputs'}, this model's {module} {wanted}")
            if which == "b" and name.endswith("attn_qkv.weight"):
                data = qkv_to_llama(data, heads)
            writer.add_tensor(f"{name}.lora_{which}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def cached_lora(adapter: Path, folder: Path, marker: dict[str, Any]) -> Path:
    """`adapter` as a GGUF LoRA for the converted base in `folder`, converted once per content version: in
    `folder`/lora when it is writable, else in the temporary directory."""
    import os
    import tempfile

    from model.loading import adapter_version

    name = f"{adapter.name}-{adapter_version(adapter)}.gguf"
    for cache in (folder / "lora", Path(tempfile.gettempdir()) / "mechuri-lora"):
        target = cache / name
        if target.exists():
            return target
        try:
            cache.mkdir(parents=True, exist_ok=True)
            part = target.with_suffix(f".{os.getpid()}.part")
            convert_lora(adapter, part, marker)
            part.rename(target)
            return target
        except OSError:
            continue
    raise AdapterError(f"adapter {adapter.name}: no writable place for its GGUF conversion")


def _lora_sizes(name: str, marker: dict[str, Any]) -> tuple[int, int]:
    """(inputs, outputs) of the base module a LoRA tensor adapts: llama.cpp would refuse a misfit only at load."""
    hidden, inner = marker["hidden"], marker["intermediate"]
    return {"attn_qkv": (hidden, 3 * hidden), "attn_output": (hidden, hidden), "ffn_up": (hidden, inner),
            "ffn_down": (inner, hidden)}[name.split(".")[2]]
