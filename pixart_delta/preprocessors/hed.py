"""HED edge maps in batched torch (no OpenCV, torchvision or scikit-image at run time).

The ControlNet 1.1 algorithm (docs/facts/hed-tinyvae-sdxs.md §1): the network sees RGB 0..255; its five
side outputs are resized bilinearly (half-pixel centres, = OpenCV INTER_LINEAR) to the output size, averaged,
passed through a sigmoid; optional "safe" step floor(3x)/2; x255 and truncation to 8-bit levels. Optional
"scribble": NMS with four 3x3 line kernels after a Gaussian blur (sigma 3), keep > 127, blur again, > 4.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

MIN_SIDE = 16  # four 2x2 max-pools: block 5 needs at least one pixel


class HEDInputError(ValueError):
    pass


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [B,H,W,C] in 0..1 -> [B,3,H,W]. Grayscale is replicated; an alpha channel is composited
    on white (as ControlNet's HWC3 does)."""
    if images.ndim == 3:   # a MASK-like [B,H,W] batch: gray
        images = images.unsqueeze(-1)
    if images.ndim != 4:
        raise HEDInputError(f"expected an IMAGE tensor [batch, height, width, channels], got shape {tuple(images.shape)}")
    c = images.shape[-1]
    x = images.movedim(-1, 1).float()
    if c in (2, 4):
        alpha = x[:, -1:].clamp(0, 1)
        x = x[:, :-1] * alpha + (1.0 - alpha)
        c -= 1
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif c != 3:
        raise HEDInputError(f"expected an image with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, "
                            f"got {c} channels (shape {tuple(images.shape)})")
    return x


def detection_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """0 keeps the input size; otherwise the short side becomes `resolution` and both sides are rounded to
    multiples of 64, as ControlNet 1.1's detect_resolution does."""
    if resolution <= 0:
        return height, width
    k = resolution / min(height, width)
    return max(64, int(round(height * k / 64.0)) * 64), max(64, int(round(width * k / 64.0)) * 64)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] < x.shape[-2] or size[1] < x.shape[-1]:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def fuse(maps: list[torch.Tensor], size: tuple[int, int], safe: bool) -> torch.Tensor:
    """Five logit maps -> edge map [B,1,H,W] in 8-bit levels (k/255)."""
    up = [F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False) for m in maps]
    edge = torch.sigmoid(torch.stack(up, 0).mean(0))
    if safe:
        edge = torch.floor(edge * 3.0) / 2.0
    return torch.floor((edge * 255.0).clamp(0, 255)) / 255.0


def _gaussian_blur(x: torch.Tensor, sigma: float, ksize: int) -> torch.Tensor:
    """Separable Gaussian with OpenCV's default border (reflect-101 = torch 'reflect')."""
    r = ksize // 2
    t = torch.arange(ksize, dtype=torch.float64) - r
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = (k / k.sum()).to(x.dtype).to(x.device)
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))


def _ksize(sigma: float, eight_bit: bool) -> int:
    # OpenCV's automatic kernel size for ksize=(0,0): 3 sigma each side for 8-bit images, 4 sigma otherwise.
    return int(round(sigma * (3 if eight_bit else 4) * 2 + 1)) | 1


def scribble(edge: torch.Tensor) -> torch.Tensor:
    """Fake scribble of an edge map [B,1,H,W] in 0..1 -> 0/1 lines."""
    x = _gaussian_blur(edge * 255.0, 3.0, _ksize(3.0, eight_bit=False))
    p = F.pad(x, (1, 1, 1, 1), value=-math.inf)
    h, w = x.shape[-2:]

    def at(dy, dx):
        return p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    keep = torch.zeros_like(x, dtype=torch.bool)
    for (ay, ax), (by, bx) in (((0, -1), (0, 1)), ((-1, 0), (1, 0)), ((-1, -1), (1, 1)), ((-1, 1), (1, -1))):
        keep |= (x >= at(ay, ax)) & (x >= at(by, bx))   # local maximum along this line
    lines = ((x > 127) & keep).to(x.dtype) * 255.0
    blurred = _gaussian_blur(lines, 3.0, _ksize(3.0, eight_bit=True))
    return (blurred >= 4.5).to(edge.dtype)   # OpenCV rounds the 8-bit blur, then keeps > 4


def detect(model: torch.nn.Module, images: torch.Tensor, resolution: int = 0, safe: bool = False,
           scribble_lines: bool = False, chunk: int | None = None, device=None,
           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> edge IMAGE [B,H,W,3] (white edges on black, same size as the input).

    Runs `model` (HED) on `device` (default: the model's) `chunk` images at a time (default: all)."""
    param = next(model.parameters())
    device = device or param.device
    b, height, width = images.shape[0], images.shape[1], images.shape[2]
    size = detection_size(height, width, resolution)
    if min(size) < MIN_SIDE:
        raise HEDInputError(f"HED needs images of at least {MIN_SIDE} px on each side; got {height}x{width} "
                            f"(detection size {size[0]}x{size[1]}). Set 'resolution' or upscale the image.")
    chunk = max(1, min(chunk or b, b))
    out = torch.empty((b, height, width, 3), dtype=torch.float32, device=images.device)
    for start in range(0, b, chunk):
        rgb = to_rgb(images[start:start + chunk].to(device))
        x = resize(rgb, size) * 255.0
        edge = fuse(model(x.to(param.dtype)), (height, width), safe)
        if scribble_lines:
            edge = scribble(edge)
        out[start:start + chunk] = edge.movedim(1, -1).expand(-1, -1, -1, 3).to(out.device)
        if progress is not None:
            progress(min(chunk, b - start))
    return out
