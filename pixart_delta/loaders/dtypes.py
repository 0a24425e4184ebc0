"""The `weight_dtype` options of the loader nodes: one name -> storage dtype table, and the subset each loader
offers (saved workflows hold these names, so each list keeps its options and their order)."""
from __future__ import annotations

import torch

from ..models.linear import cpu_computes_bf16

WEIGHT_DTYPES: dict[str, torch.dtype | None] = {
    "default": None,    # the loader (ComfyUI's model management) chooses
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


def weight_dtype_choices(*names: str) -> tuple[str, ...]:
    unknown = [n for n in names if n not in WEIGHT_DTYPES]
    if unknown:
        raise KeyError(f"not in WEIGHT_DTYPES: {unknown}")
    return names


PIXART_WEIGHT_DTYPES = weight_dtype_choices("default", "fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2")
CONTROLNET_WEIGHT_DTYPES = weight_dtype_choices("default", "fp32", "fp16", "bf16")
T5_WEIGHT_DTYPES = weight_dtype_choices("default", "fp32", "fp16", "bf16", "fp8_e4m3fn")


def chosen_dtype(name: str, choices: tuple[str, ...]) -> torch.dtype | None:
    """The storage dtype for one of `choices`; None for "default"."""
    if name not in choices:
        raise ValueError(f"weight_dtype {name!r}: expected one of {', '.join(choices)}")
    return WEIGHT_DTYPES[name]


def computes_bf16_on_cpu(dtype: torch.dtype | None, device) -> bool:
    """bf16 weights on a CPU with bf16 instructions compute in bf16 (loaders/dtypes_comfy.py); on other CPUs they
    are only stored in bf16 and ComfyUI computes them in fp32."""
    return dtype == torch.bfloat16 and torch.device(device).type == "cpu" and cpu_computes_bf16()
