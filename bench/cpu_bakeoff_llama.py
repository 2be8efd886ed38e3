"""The llama.cpp side of bench/cpu_bakeoff.py: write a Q4_0 GGUF and a LoRA GGUF of the random 5.8B checkpoint with
gguf's GGUFWriter, then measure xllamacpp's in-process server. Needs `xllamacpp` and `gguf` (not in the lock).

    python bench/cpu_bakeoff_llama.py BASE WORKDIR ADAPTER    # writes WORKDIR/model-q4_0.gguf and lora-r16.gguf
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THREADS = 2
NAMES = {"attention.query_key_value": "attn_qkv", "attention.dense": "attn_output", "input_layernorm": "attn_norm",
         "post_attention_layernorm": "ffn_norm", "mlp.dense_h_to_4h": "ffn_up", "mlp.dense_4h_to_h": "ffn_down"}


def gguf_name(hf: str) -> str | None:
    if hf.startswith("gpt_neox.layers."):
        layer, rest = hf.removeprefix("gpt_neox.layers.").split(".", 1)
        module, kind = rest.rsplit(".", 1)
        return f"blk.{layer}.{NAMES[module]}.{kind}" if module in NAMES else None
    return {"gpt_neox.embed_in.weight": "token_embd.weight", "gpt_neox.final_layer_norm.weight": "output_norm.weight",
            "gpt_neox.final_layer_norm.bias": "output_norm.bias", "embed_out.weight": "output.weight"}.get(hf)


def add_vocab(writer, folder: Path, rows: int) -> None:
    """The tiny Polyglot-faithful tokenizer's BPE, padded with unused tokens to the embedding's rows (ids are sent,
    never text: llama.cpp does not know Polyglot's pre-tokenizer)."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    tokens, types = [], []
    for i in range(rows):
        token = by_id.get(i)
        tokens.append(token if token is not None else f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED if token is None else
                     gguf.TokenType.CONTROL if token in added else gguf.TokenType.NORMAL)
    merges = json.loads((folder / "tokenizer.json").read_text())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_eos_token_id(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    writer.add_bos_token_id(0)


def write_model(base: Path, out: Path) -> None:
    import gguf
    import torch
    from safetensors import safe_open

    config = json.loads((base / "config.json").read_text())
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    rotary = config.get("rotary_pct") or config.get("rope_parameters", {}).get("partial_rotary_factor", 0.25)
    writer = gguf.GGUFWriter(str(out), "gptneox")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(int(rotary * hidden // heads))
    writer.add_head_count(heads)
    writer.add_parallel_residual(config.get("use_parallel_residual", True))
    writer.add_layer_norm_eps(config.get("layer_norm_eps", 1e-5))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    add_vocab(writer, base, config["vocab_size"])
    with safe_open(str(base / "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            name = gguf_name(key)
            if name is None:
                continue
            data = f.get_tensor(key).to(torch.float32).numpy()
            if data.ndim == 2:
                writer.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q4_0),
                                  raw_dtype=gguf.GGMLQuantizationType.Q4_0)
            else:
                writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_lora(adapter: Path, out: Path) -> None:
    import gguf
    from safetensors import safe_open

    config = json.loads((adapter / "adapter_config.json").read_text())
    writer = gguf.GGUFWriter(str(out), "gptneox")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(config["lora_alpha"]))
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():
            hf, part = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
            name = gguf_name(hf + ".weight")
            writer.add_tensor(f"{name}.lora_{part[0].lower()}", f.get_tensor(key).float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp(base: Path, workdir: Path, adapter: Path) -> dict:
    """The measurements of bench/cpu_bakeoff.py's `ours`, on xllamacpp's server (continuous batching, 4 slots)."""
    try:
        import xllamacpp
    except ImportError:
        return {"skipped": "skipped: xllamacpp not installed (pip install --target DIR xllamacpp gguf; --llama-path DIR)"}
    from bench.cpu_bakeoff import CHAT_PROMPT, NEW_TOKENS, PROMPT_TOKENS, status_gib

    started = time.perf_counter()
    params = xllamacpp.CommonParams()
    params.model.path = str(workdir / "model-q4_0.gguf")
    params.n_ctx = 4 * 512
    params.n_parallel = 4
    params.cont_batching = True
    params.cpuparams.n_threads = THREADS
    params.cpuparams_batch.n_threads = THREADS
    params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(workdir / "lora-r16.gguf"), 1.0)]
    server = xllamacpp.Server(params)
    load_s = time.perf_counter() - started

    def complete(length: int, new: int, seed: int, lora: float = 1.0, **extra) -> dict:
        body = {"prompt": [100 + (i * 37 + seed) % 2000 for i in range(length)], "n_predict": new, "seed": seed,
                "temperature": 0.7, "top_p": 0.9, "ignore_eos": True, "cache_prompt": False,
                "lora": [{"id": 0, "scale": lora}]}
        answer = server.handle_completions({**body, **extra})
        if "timings" not in answer:
            raise RuntimeError(f"llama.cpp answered {str(answer)[:300]}")
        return answer

    # The completions endpoint gives no logits here: greedy text with the LoRA at scale 1 and at 0 must differ.
    probe = [complete(8, 8, 0, scale, temperature=0.0)["choices"][0]["text"] for scale in (1.0, 0.0)]
    lora_delta = float(probe[0] != probe[1])
    prompt = complete(PROMPT_TOKENS, 1, 0)["timings"]
    one = complete(CHAT_PROMPT, NEW_TOKENS, 1)["timings"]
    rss_single = status_gib("VmRSS")
    results: list[dict] = [{} for _ in range(4)]

    def user(i: int) -> None:
        results[i] = complete(CHAT_PROMPT, NEW_TOKENS, i)["timings"]

    threads = [threading.Thread(target=user, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decode_s = max(r["predicted_ms"] for r in results) / 1000
    return {"load_s": load_s, "lora_delta": lora_delta, "prompt_tps": prompt["prompt_per_second"],
            "single_tps": one["predicted_per_second"], "users4_tps": sum(r["predicted_n"] for r in results) / decode_s,
            "rss_single_gib": rss_single, "peak_gib": status_gib("VmHWM"),
            "note": f"Q4_0 GGUF, LoRA GGUF, {THREADS} threads; {xllamacpp.get_system_info().strip()}"}


def main() -> int:
    base, workdir, adapter = (Path(a) for a in sys.argv[1:4])
    model, lora = workdir / "model-q4_0.gguf", workdir / "lora-r16.gguf"
    started = time.perf_counter()
    if not model.exists():
        write_model(base, model.with_suffix(".part"))
        model.with_suffix(".part").rename(model)
    if not lora.exists():
        write_lora(adapter, lora)
    print(json.dumps({"prepare_s": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
