"""Weight-only int8 / int4 Linear layers on torch's own CPU kernels: the CPU path for the 5.8B model.

    int8: per-output-channel symmetric scales, `torch._weight_int8pack_mm`
    int4: asymmetric groups along the input (default 128 wide), `torch.ops.aten._weight_int4pack_mm_for_cpu`

Activations stay bf16 (the int4 kernel is ~20x slower on fp32 input here). `WeightOnlyLinear` is an `nn.Linear` to
peft, so a LoRA adapter wraps it unmerged, exactly as on the bf16 base: `/reload` swaps adapters without touching
the quantised weights, and our decode loop (slots, seeds, bans, UTF-8 mask) is the one engine for CPU and GPU.

A prepared folder (`mechuri quantize`) holds the quantised weights as the kernels take them plus `QUANTIZED_MARKER`,
so loading is a plain read: torch's CPU int4 packing ([out, in/2] bytes, blocks of 64 outputs) is one layout for
every x86 kernel it has (AVX2 and AVX-512).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

KINDS = ("int8", "int4")
QUANTIZED_MARKER = "mechuri_quantized.json"
DEFAULT_GROUP_SIZE = 128
GROUP_SIZES = (32, 64, 128, 256)
# Every Linear of GPT-NeoX: the four LoRA targets and the output head (7 % of a 5.8B token's weight bytes).
SKIP = ()


class WeightOnlyLinear(nn.Linear):
    """y = x · dequant(W)ᵀ + b, with W kept as int8 (per row) or int4 (per group) plus bf16 scales.

    Not built through `nn.Linear.__init__` (that would allocate the full-precision weight): `weight` is the int
    tensor, so peft and our shape checks read `in_features` / `out_features` as from any Linear.
    """

    def __init__(self, in_features: int, out_features: int, *, kind: str, group_size: int = DEFAULT_GROUP_SIZE,
                 bias: bool = True, dtype: torch.dtype = torch.bfloat16) -> None:
        nn.Module.__init__(self)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        self.in_features, self.out_features, self.kind, self.group_size = in_features, out_features, kind, group_size
        if kind == "int8":
            self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
            self.register_buffer("scales", torch.empty(out_features, dtype=dtype))
        else:
            # The kernel's packed layout (two codes a byte); scales and zeros per (group, output).
            self.register_buffer("weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
            self.register_buffer("scales", torch.empty(in_features // group_size, out_features, 2, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, kind: str, group_size: int = DEFAULT_GROUP_SIZE,
                    dtype: torch.dtype = torch.bfloat16) -> WeightOnlyLinear:
        weight = linear.weight.detach().to(torch.float32)
        module = cls(linear.in_features, linear.out_features, kind=kind, group_size=group_size,
                     bias=linear.bias is not None, dtype=dtype)
        if kind == "int8":
            scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-8)
            module.weight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
            module.scales = scale.to(dtype)
        else:
            codes, scales = quantize_int4(weight, group_size)
            module.weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
            module.scales = scales.to(dtype)
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
        return module

    def dequantized(self) -> torch.Tensor:
        """The weight this layer multiplies by, [out, in] in fp32 (bf16-exact): what tests compare against."""
        if self.kind == "int8":
            return self.weight.to(torch.float32) * self.scales.to(torch.float32)[:, None]
        eye = torch.eye(self.in_features, dtype=self.scales.dtype)
        return self._matmul(eye).to(torch.float32).t().contiguous()

    def _matmul(self, flat: torch.Tensor) -> torch.Tensor:
        if self.kind == "int8":
            return torch._weight_int8pack_mm(flat, self.weight, self.scales)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, self.group_size, self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features).to(self.scales.dtype).contiguous()
        out = self._matmul(flat)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.kind == "int4" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}{group}"


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit codes per group of `group_size` inputs, in the kernel's convention:
    w ≈ (code - 8) · scale + zero, with zero = min + 8 · scale. Returns codes int32 [out, in], scales [in/g, out, 2]."""
    out_features, in_features = weight.shape
    groups = weight.view(out_features, in_features // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-8)
    codes = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    zero = low + 8 * scale
    return codes.view(out_features, in_features), torch.stack([scale.t(), zero.t()], dim=-1).contiguous()


def fits(linear: nn.Linear, kind: str, group_size: int) -> bool:
    """Whether the kernels take this layer's shape (int4: whole groups, an even input and outputs in blocks of 64)."""
    if kind == "int8":
        return True
    return linear.in_features % group_size == 0 and linear.out_features % 64 == 0


def quantize_model(model: nn.Module, kind: str, group_size: int = DEFAULT_GROUP_SIZE) -> int:
    """Replace every fitting `nn.Linear` in place, layer by layer (each full-precision weight is freed as it goes).
    Returns how many were replaced."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if kind == "int4" and group_size not in GROUP_SIZES:
        raise ValueError(f"int4 group size must be one of {', '.join(map(str, GROUP_SIZES))}")
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and name not in SKIP and fits(child, kind, group_size):
                setattr(parent, name, WeightOnlyLinear.from_linear(child, kind, group_size))
                replaced += 1
    return replaced


def empty_quantized(model: nn.Module, kind: str, group_size: int, quantized: set[str]) -> None:
    """Put empty `WeightOnlyLinear`s where a prepared folder has quantised layers (names in `quantized`)."""
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, nn.Linear) and full in quantized:
                setattr(parent, name, WeightOnlyLinear(child.in_features, child.out_features, kind=kind,
                                                       group_size=group_size, bias=child.bias is not None))


def quantized_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, WeightOnlyLinear)]


def read_marker(folder: Path) -> dict[str, Any] | None:
    marker = folder / QUANTIZED_MARKER
    return json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else None


def write_marker(folder: Path, kind: str, group_size: int, names: list[str]) -> None:
    data = {"kind": kind, "group_size": group_size, "layers": names}
    (folder / QUANTIZED_MARKER).write_text(json.dumps(data, indent=1), encoding="utf-8")


def save_quantized(model: nn.Module, tokenizer: Any, out: Path, kind: str, group_size: int) -> Path:
    """Write a prepared folder: config, tokenizer, the quantised weights in one safetensors file, and the marker."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "mechuri_quantized": kind})
    write_marker(out, kind, group_size, quantized_names(model))
    return out


def load_prepared(folder: Path, marker: dict[str, Any]) -> nn.Module:
    """Build the model from config with no full-precision weights, put the quantised layers in, read the file."""
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights(include_buffers=False):  # rotary tables are buffers computed here, not read
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    empty_quantized(model, marker["kind"], int(marker["group_size"]), set(marker["layers"]))
    # Copies: safetensors hands out views at unaligned offsets of the file, and the int8 kernel
    # crashes (SIGSEGV) on an unaligned weight for some batch sizes.
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        state = {key: f.get_tensor(key).clone() for key in f.keys()}
    missing, _ = model.load_state_dict(state, strict=False, assign=True)
    if missing:
        raise ValueError(f"the prepared folder lacks {len(missing)} weights (first: {missing[0]})")
    return model.eval()
