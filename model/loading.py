"""Loading a base model (hub id or local folder), optionally quantized, with an optional PEFT LoRA adapter.

4-bit is NF4 with double quantisation and bf16 compute, as in QLoRA. `int8` / `int4` are the CPU path: weight-only
quantisation on torch's own kernels (model/quantized.py), from a bf16 checkpoint at load time or from a folder that
`mechuri quantize` prepared. Every failure a user can cause raises a
`ModelLoadError` or `AdapterError` whose message names the cause and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from model.prompt import END_OF_TEXT
from model.types import AdapterError, AdapterInfo, ModelLoadError

log = logging.getLogger(__name__)

QUANTIZATIONS = ("4bit", "8bit", "none", "int8", "int4")
WEIGHT_ONLY = ("int8", "int4")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
GGUF_MARKER = "mechuri_gguf.json"  # model/gguf_convert.py MARKER; the llama.cpp path (QUANTIZATION gguf) reads it
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel, or a peft PeftModel when an adapter is attached
    tokenizer: Any
    base: str
    quantization: str
    device: str
    dtype: str
    eos_token_id: int
    pad_token_id: int
    max_context: int
    adapter: AdapterInfo


def looks_like_path(base: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a folder."""
    return base.startswith((".", "/", "~")) or base.count("/") > 1 or (os.sep != "/" and os.sep in base)


def check_base_folder(base: str) -> Path | None:
    """The local folder for `base`, or None when `base` is a hub id. Raises when a folder is missing or empty."""
    path = Path(base).expanduser()
    if path.is_dir():
        if (path / GGUF_MARKER).exists():
            raise ModelLoadError(f"{base} was converted by `mechuri convert-gguf` for llama.cpp: set "
                                 "MECHURI_QUANTIZATION=gguf (or --quantization gguf), or give the original folder")
        if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
            raise ModelLoadError(
                f"{base} is a LoRA adapter folder, not a base model: pass it as --adapter and give the base model "
                "with --model"
            )
        if not (path / "config.json").exists() or not any((path / w).exists() for w in MODEL_WEIGHTS):
            raise ModelLoadError(
                f"{base} holds no model: expected config.json and model weights (a save_pretrained folder). "
                "Check the path, or build one with `mechuri tiny build DIR`"
            )
        return path
    if path.exists():
        raise ModelLoadError(f"{base} is a file, not a model folder: give the folder that holds config.json")
    if looks_like_path(base):
        raise ModelLoadError(f"model folder {base} does not exist: check the path, or give a hub id")
    return None


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(base: str) -> Any:
    local = check_base_folder(base)
    return tokenizer_from(str(local or base), base)


def tokenizer_from(where: str, base: str) -> Any:
    """The tokenizer in `where` (a folder or hub id), set up for left padding. `base` names it in errors."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except OSError as exc:
        raise _hub_error(base, exc) from exc
    if tokenizer.pad_token_id is None:
        # Left padding needs a pad id; its positions are masked, so the value only matters to the tokenizer.
        tokenizer.pad_token = tokenizer.eos_token or END_OF_TEXT
    tokenizer.padding_side = "left"
    return tokenizer


def eos_id_of(tokenizer: Any) -> int:
    """EOS from the tokenizer's `<|endoftext|>`: some Polyglot configs carry a wrong eos_token_id."""
    eid = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    if eid is None or eid == tokenizer.unk_token_id:
        eid = tokenizer.eos_token_id
    if eid is None:
        raise ModelLoadError("the tokenizer has no <|endoftext|> or EOS token: use a KoAlpaca/Polyglot tokenizer")
    return int(eid)


def _hub_error(base: str, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load {base!r} from the model hub ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
        "If the hub can't be reached, download it first (`hf download "
        f"{base} --local-dir DIR`) and give the local folder instead"
    )


def quantization_config(quantization: str, device: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"unknown quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            # bitsandbytes on CPU computes in bf16; on a GPU without native bf16 (a T4) fp16 is the fast choice.
            bnb_4bit_compute_dtype=torch.bfloat16 if not device.startswith("cuda") or native_bf16(device)
            else torch.float16,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None  # none, or the weight-only CPU path (quantised after loading)


def native_bf16(device: str) -> bool:
    """bf16 in hardware: CUDA compute capability 8.0 (Ampere) or newer. `torch.cuda.is_bf16_supported()` also says
    yes on a T4 (7.5), where bf16 is emulated and several times slower than fp16."""
    import torch

    return device.startswith("cuda") and torch.cuda.get_device_capability(device)[0] >= 8


def default_dtype(quantization: str, device: str) -> Any:
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if native_bf16(device) else torch.float16
    # bitsandbytes and the int4 kernel compute in bf16; a plain CPU model is fastest and exact in fp32.
    return torch.bfloat16 if quantization in ("4bit", *WEIGHT_ONLY) else torch.float32


def quiet_transformers() -> None:
    """Progress bars and deprecation chatter from loading a 2 MB model drown out what matters in a terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    # bitsandbytes' 8-bit path on CPU warns, and logs, on every matmul.
    warnings.filterwarnings("ignore", module="bitsandbytes")
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


def load_base(base: str, *, quantization: str = "none", device: str | None = None, dtype: Any = None) -> Any:
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    local = check_base_folder(base)
    device = pick_device(device)
    prepared = _prepared_kind(local, quantization)
    if quantization in WEIGHT_ONLY:
        return _load_weight_only(base, local, quantization, device, prepared)
    qconfig = quantization_config(quantization, device)
    kwargs: dict[str, Any] = {"dtype": dtype or default_dtype(quantization, device)}
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(local or base), **kwargs)
    except OSError as exc:
        raise _hub_error(base, exc) from exc
    except ImportError as exc:
        raise ModelLoadError(f"{quantization} needs bitsandbytes: pip install bitsandbytes ({exc})") from exc
    if qconfig is None:
        model.to(device)
    if quantization == "4bit" and device == "cpu":
        keep_4bit_layout(model)
    model.eval()
    return model


def _prepared_kind(local: Path | None, quantization: str) -> dict[str, Any] | None:
    from model.quantized import read_marker

    marker = read_marker(local) if local is not None else None
    if marker is not None and marker.get("kind") != quantization:
        raise ModelLoadError(f"{local} was prepared by `mechuri quantize` as {marker.get('kind')}: set "
                             f"MECHURI_QUANTIZATION={marker.get('kind')} (or --quantization), or give the original "
                             "model folder")
    return marker


def _load_weight_only(base: str, local: Path | None, kind: str, device: str, marker: dict[str, Any] | None) -> Any:
    """The CPU path: a prepared folder is read as is; a bf16 checkpoint is quantised layer by layer after loading."""
    import torch

    from model.quantized import load_prepared, quantize_model

    if device != "cpu":
        raise ModelLoadError(f"{kind} runs on torch's CPU kernels: on a GPU use MECHURI_QUANTIZATION=none or 4bit")
    if marker is not None:
        try:
            return load_prepared(local, marker)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{local} is a broken prepared folder ({exc}): run `mechuri quantize` again") from exc
    model = load_base(base, quantization="none", device=device, dtype=torch.bfloat16)
    quantize_model(model, kind)
    return model


def keep_4bit_layout(model: Any) -> int:
    """Keep every 4-bit layer in bitsandbytes' portable weight layout. Returns the number of layers changed.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a `Linear4bit` weight into a CPU-only layout the first time
    the layer runs in eval mode without grad, and a later training forward through that layout fails ("a view of a
    leaf Variable that requires grad is being used in an in-place operation"): an evaluation step during 4-bit
    training is enough. Serving on CPU is for tests and demos, so one code path on every CPU is worth more than the
    packed kernel's speed: the same model gives the same numbers on every machine CI may run on.
    """
    try:
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
            state = getattr(module.weight, "quant_state", None)
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state)
            changed += 1
    return changed


def adapter_version(path: Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", *ADAPTER_WEIGHTS):
        file = path / name
        if file.exists():
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def check_adapter_folder(path: Path | str, model: Any | None = None) -> dict[str, Any]:
    """Validate an adapter folder, and, given the base model, that its LoRA shapes fit it. Returns its config."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise AdapterError(f"adapter folder {path} does not exist: check the path (it should hold adapter_config.json)")
    config_file = path / "adapter_config.json"
    if not config_file.exists():
        raise AdapterError(f"{path} holds no adapter: adapter_config.json is missing. Give a folder made by "
                           "`mechuri train` or peft's save_pretrained")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{config_file} is not valid JSON ({exc}): the adapter folder is broken, retrain or "
                           "copy it again") from exc
    weights = next((path / w for w in ADAPTER_WEIGHTS if (path / w).exists()), None)
    if weights is None:
        raise AdapterError(f"{path} has no adapter weights (adapter_model.safetensors): the folder is incomplete, "
                           "copy it again")
    if model is not None:
        _check_adapter_shapes(path, weights, config, model)
    return config


def _check_adapter_shapes(path: Path, weights: Path, config: dict[str, Any], model: Any) -> None:
    import torch

    try:
        if weights.suffix == ".safetensors":
            with safe_open(str(weights), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        else:
            shapes = {k: tuple(v.shape) for k, v in torch.load(weights, map_location="cpu").items()}
    except Exception as exc:
        raise AdapterError(f"{weights} could not be read ({type(exc).__name__}): the adapter is broken, retrain or "
                           "copy it again") from exc
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    modules = dict(base_model.named_modules())
    made_for = config.get("base_model_name_or_path") or "an unknown base"
    for key, shape in shapes.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
        module = modules.get(module_name)
        if module is None:
            raise AdapterError(f"adapter {path.name} was made for another base ({made_for}): this model has no "
                               f"module {module_name}. Load it with the base it was trained on")
        in_f, out_f = getattr(module, "in_features", None), getattr(module, "out_features", None)
        fits = shape[1] == in_f if ".lora_A." in key else shape[0] == out_f
        if in_f is not None and not fits:
            raise AdapterError(f"adapter {path.name} was made for another base ({made_for}): its LoRA shape "
                               f"{shape} does not fit {module_name} ({in_f}→{out_f}). Load it with the base it was "
                               "trained on")


def attach_adapter(model: Any, path: Path | str, adapter_name: str) -> tuple[Any, AdapterInfo]:
    """Load an adapter beside whatever is attached. Returns the (possibly newly wrapped) model and its info."""
    from peft import PeftModel

    path = Path(path).expanduser().resolve()
    started = time.perf_counter()
    check_adapter_folder(path, model)
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=adapter_name)
        else:
            model = PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name)
    except Exception as exc:
        raise AdapterError(f"adapter {path.name} failed to load ({type(exc).__name__}: {str(exc)[:200]}): "
                           "the folder may be broken or made for another base") from exc
    model.eval()
    info = AdapterInfo(name=path.name, path=str(path), version=adapter_version(path),
                       load_seconds=time.perf_counter() - started, loaded_at=time.time())
    return model, info


def load_model(
    base: str,
    *,
    adapter: str | Path | None = None,
    quantization: str = "none",
    device: str | None = None,
    dtype: Any = None,
) -> LoadedModel:
    """Load tokenizer, base model and (optionally) a LoRA adapter. `base` is a hub id or a local folder."""
    base = str(base)
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"unknown quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if adapter is not None:
        check_adapter_folder(adapter)  # fail fast, before the slow base load
    device = pick_device(device)
    tokenizer = load_tokenizer(base)
    model = load_base(base, quantization=quantization, device=device, dtype=dtype)
    info = AdapterInfo()
    if adapter is not None:
        model, info = attach_adapter(model, adapter, adapter_name="v1")
    config = model.config
    max_context = int(getattr(config, "max_position_embeddings", 2048) or 2048)
    eos = eos_id_of(tokenizer)
    log.info("loaded %s (%s, %s) adapter=%s", base, quantization, device, info.name)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        base=base,
        quantization=quantization,
        device=device,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        eos_token_id=eos,
        pad_token_id=int(tokenizer.pad_token_id),
        max_context=max_context,
        adapter=info,
    )

