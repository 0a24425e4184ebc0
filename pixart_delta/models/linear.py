"""Linear layers of our networks, run on CPU fp32 through oneDNN where that is possible.

F.linear runs fp32 on CPU through MKL's sgemm; PyTorch's own oneDNN kernel (mkldnn::_linear_pointwise, the one
torch.compile emits for CPU linears) runs PixArt's projections 5-30% faster (bench/pixart_forward.py).
That kernel has no autograd formula, so a call that needs gradients, a layer whose weights comfy.ops casts or
patches on the fly, and anything but plain fp32 CPU tensors take the layer's own forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ONEDNN = True  # tests switch it off to check the layer-forward path against the same references
_onednn_works: bool | None = None


def _onednn_available() -> bool:
    """Probed once: the private op exists in this torch build and agrees with F.linear."""
    global _onednn_works
    if _onednn_works is None:
        _onednn_works = False
        try:
            if torch.backends.mkldnn.is_available():
                g = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(*s, generator=g) for s in ((3, 5, 16), (24, 16), (24,)))
                y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
                _onednn_works = y.shape == (3, 5, 24) and torch.allclose(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        except (AttributeError, RuntimeError):
            pass
    return _onednn_works


def _plain_cpu_fp32(t: torch.Tensor | None) -> bool:
    return t is None or (type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu"
                         and t.dtype == torch.float32)


def linear(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x) for a torch.nn / comfy.ops Linear."""
    w, b = layer.weight, layer.bias
    if (ONEDNN and _plain_cpu_fp32(x) and _plain_cpu_fp32(w) and _plain_cpu_fp32(b) and w.is_contiguous()
            and not getattr(layer, "comfy_cast_weights", False) and not getattr(layer, "weight_function", None)
            and not getattr(layer, "bias_function", None)
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                                  or (b is not None and b.requires_grad)))
            and _onednn_available()):
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    return layer(x)
