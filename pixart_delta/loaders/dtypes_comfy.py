"""The compute dtype that goes with a storage dtype under ComfyUI: where our loaders differ from ComfyUI's own
choice (comfy/model_management.py unet_manual_cast), and the comfy.ops layers for the bf16 compute of ComfyUI's T5.

ComfyUI computes bf16 weights on a CPU in fp32, upcasting every layer at every call (should_use_bf16 says no for
every CPU: "bf16 works on CPU but is extremely slow"). That holds for CPUs without bf16 instructions; on one with
AVX512-BF16 or AMX-BF16 bf16 matrix products run at about twice the fp32 rate, so our loaders compute bf16 weights
in bf16 there (linears, attention), keeping fp32 where precision needs it (see computes_bf16_on_cpu).
"""
from __future__ import annotations

import torch

import comfy.ops

from ..models.linear import functional_linear
from .dtypes import computes_bf16_on_cpu

__all__ = ["computes_bf16_on_cpu", "unet_manual_cast", "BF16ComputeOps"]


def unet_manual_cast(dtype: torch.dtype, load_device, supported_dtypes=None) -> torch.dtype | None:
    """comfy.model_management.unet_manual_cast, except that bf16 weights on a bf16-capable CPU compute as they are."""
    import comfy.model_management as mm
    if computes_bf16_on_cpu(dtype, load_device):
        return None
    if supported_dtypes is None:
        return mm.unet_manual_cast(dtype, load_device)
    return mm.unet_manual_cast(dtype, load_device, supported_dtypes)


class BF16ComputeOps(comfy.ops.manual_cast):
    """comfy.ops.manual_cast whose Linear layers with bf16 weights compute in bf16 and hand back the input's dtype:
    ComfyUI's T5 keeps its residual stream, RMS norms, attention scores and softmax in fp32 (its embeddings come
    out fp32, comfy/sd1_clip.py), so only the matrix products change precision. Patches (LoRA) apply as in
    manual_cast; other dtypes and devices take manual_cast's path."""

    class Linear(comfy.ops.manual_cast.Linear):
        def forward_comfy_cast_weights(self, input):
            if self.weight.dtype != torch.bfloat16 or input.device.type != "cpu":
                return super().forward_comfy_cast_weights(input)
            weight, bias = comfy.ops.cast_bias_weight(self, input, dtype=torch.bfloat16)
            return functional_linear(input.to(torch.bfloat16), weight, bias).to(input.dtype)
