"""The HED edge network of ControlNet 1.1 / PixArt-δ (`ControlNetHED.pth`, Apache-2, RGB input 0..255).

VGG16 convolution trunk in five blocks; each block's output goes through a 1x1 `projection` to one logit
map (strides 1, 2, 4, 8, 16). No fuse layer: the five maps are averaged by the caller (preprocessors/hed.py).
State-dict keys (37): `norm`, `block{1..5}.convs.{j}.weight/bias`, `block{1..5}.projection.weight/bias`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (64, 128, 256, 512, 512)
DEPTHS = (2, 2, 3, 3, 3)


class HEDBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, depth: int, ops=nn):
        super().__init__()
        self.convs = nn.Sequential(*[ops.Conv2d(c_in if j == 0 else c_out, c_out, 3, padding=1) for j in range(depth)])
        self.projection = ops.Conv2d(c_out, 1, 1)

    def forward(self, x: torch.Tensor, downsample: bool):
        if downsample:
            x = F.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = F.relu(conv(x), inplace=True)
        return x, self.projection(x)


class HED(nn.Module):
    """forward(x [B,3,H,W] RGB in 0..255) -> five logit maps [B,1,H/2^i,W/2^i]."""

    def __init__(self, widths=WIDTHS, ops=nn):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        c_in = 3
        for i, (w, d) in enumerate(zip(widths, DEPTHS), start=1):
            setattr(self, f"block{i}", HEDBlock(c_in, w, d, ops))
            c_in = w

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x - self.norm.to(x.dtype)
        maps = []
        for i in range(1, 6):
            h, p = getattr(self, f"block{i}")(h, downsample=i > 1)
            maps.append(p)
        return maps


def expected_keys(widths=WIDTHS) -> dict[str, tuple]:
    """Key -> shape of a HED state dict with these block widths (the real file: WIDTHS)."""
    shapes = {"norm": (1, 3, 1, 1)}
    c_in = 3
    for i, (w, d) in enumerate(zip(widths, DEPTHS), start=1):
        for j in range(d):
            shapes[f"block{i}.convs.{j}.weight"] = (w, c_in if j == 0 else w, 3, 3)
            shapes[f"block{i}.convs.{j}.bias"] = (w,)
        shapes[f"block{i}.projection.weight"] = (1, w, 1, 1)
        shapes[f"block{i}.projection.bias"] = (1,)
        c_in = w
    return shapes


def widths_of(sd: dict) -> tuple[int, ...] | None:
    """Block widths read from a state dict's conv shapes, or None when the blocks are not all there."""
    try:
        return tuple(int(sd[f"block{i}.convs.0.weight"].shape[0]) for i in range(1, 6))
    except (KeyError, AttributeError, IndexError):
        return None
