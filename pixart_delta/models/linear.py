"""Linear layers of our networks, run on CPU in fp32 or bf16 through oneDNN where that is possible.

F.linear runs fp32 on CPU through MKL's sgemm; PyTorch's own oneDNN kernel (mkldnn::_linear_pointwise, the one
torch.compile emits for CPU linears) runs PixArt's projections 5-30% faster in fp32 (bench/pixart_forward.py), takes
bf16 too (about 2x its fp32 speed on a CPU with avx512_bf16, bench/pixart_forward.py --dtype bf16) and fuses the
tanh GELU of the MLPs (oneDNN eltwise_gelu_tanh, computed before the output is rounded).
That kernel has no autograd formula, so a call that needs gradients, a layer whose weights comfy.ops casts or
patches on the fly, and anything but plain CPU tensors of one kernel dtype take the layer's own forward.

Mixed precision: a plain layer whose weight is bf16 receiving an fp32 input (the fp32 residual stream of a bf16
network, PixArt(residual_dtype=...)) computes in bf16: the input is rounded to the weight's dtype, the output
stays bf16 and the caller's residual sum promotes it back to fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ONEDNN = True  # tests switch it off to check the layer-forward path against the same references
_onednn_dtypes: frozenset | None = None


def _probe(dtype: torch.dtype) -> bool:
    """The private op exists in this torch build, takes `dtype` and agrees with F.linear (+ tanh GELU)."""
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g).to(dtype) for s in ((3, 5, 16), (24, 16), (24,)))
    y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    yg = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "tanh")
    want = F.linear(x.float(), w.float(), b.float())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    return (y.shape == (3, 5, 24) and y.dtype == dtype and torch.allclose(y.float(), want, rtol=tol, atol=tol)
            and torch.allclose(yg.float(), F.gelu(want, approximate="tanh"), rtol=tol, atol=tol))


def cpu_computes_bf16() -> bool:
    """The CPU has bf16 dot-product instructions (x86 AVX512-BF16 or AMX-BF16), so bf16 matrix products run at about
    twice the fp32 rate; without them oneDNN emulates bf16 and it is slower than fp32 (as ComfyUI assumes for every
    CPU, comfy/model_management.py should_use_bf16)."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def onednn_dtypes() -> frozenset:
    """The dtypes our CPU linears send to oneDNN, probed once: fp32, and bf16 where cpu_computes_bf16()."""
    global _onednn_dtypes
    if _onednn_dtypes is None:
        found = set()
        if torch.backends.mkldnn.is_available():
            for dtype in (torch.float32, torch.bfloat16):
                if dtype == torch.bfloat16 and not cpu_computes_bf16():
                    continue
                try:
                    if _probe(dtype):
                        found.add(dtype)
                except (AttributeError, RuntimeError):
                    pass
        _onednn_dtypes = frozenset(found)
    return _onednn_dtypes


def _plain_cpu(t: torch.Tensor | None, dtype: torch.dtype) -> bool:
    return t is None or (type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu"
                         and t.dtype == dtype)


def _patched(layer) -> bool:
    """comfy.ops casts this layer's weights or applies patches to them at each call."""
    return bool(getattr(layer, "comfy_cast_weights", False) or getattr(layer, "weight_function", None)
                or getattr(layer, "bias_function", None))


def weight_dtype_input(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x in the dtype of a plain layer's weight (the bf16 layers of a network with an fp32 residual stream, a bf16
    ControlNet branch on an fp32 MODEL or the reverse); layers that comfy.ops casts take x as it is."""
    w = layer.weight
    if x.dtype != w.dtype and not _patched(layer):
        return x.to(w.dtype)
    return x


def linear(layer: torch.nn.Module, x: torch.Tensor, gelu_tanh: bool = False) -> torch.Tensor:
    """layer(x) for a torch.nn / comfy.ops Linear; gelu_tanh: F.gelu(layer(x), approximate="tanh")."""
    w, b = layer.weight, layer.bias
    x = weight_dtype_input(layer, x)
    dtype = x.dtype
    if (ONEDNN and _plain_cpu(x, dtype) and _plain_cpu(w, dtype) and _plain_cpu(b, dtype) and w.is_contiguous()
            and not _patched(layer)
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                                  or (b is not None and b.requires_grad)))
            and dtype in onednn_dtypes()):
        if gelu_tanh:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "tanh")
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    y = layer(x)
    return F.gelu(y, approximate="tanh") if gelu_tanh else y


def functional_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, w, b) through oneDNN where linear() would use it (for comfy.ops layers that cast themselves)."""
    if (ONEDNN and x.dtype == w.dtype and _plain_cpu(x, x.dtype) and _plain_cpu(w, x.dtype) and _plain_cpu(b, x.dtype)
            and w.is_contiguous() and not torch.is_grad_enabled() and x.dtype in onednn_dtypes()):
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    return F.linear(x, w, b)
