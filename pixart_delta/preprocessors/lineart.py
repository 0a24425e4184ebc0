"""Lineart maps as ControlNet 1.1's lineart annotator makes them (lllyasviel/ControlNet-v1-1-nightly
annotator/lineart + gradio_lineart.py; huggingface/controlnet_aux LineartDetector, the version ControlNet++ runs):

  HWC3 -> resize_image(detect resolution) -> RGB / 255 -> generator -> uint8(clip(line * 255)) ->
  INTER_LINEAR resize to the output size -> 255 - map (white lines on black), 3 channels.

The input resize runs in OpenCV on the CPU (annotator.py says why); the network runs batched on the model's
device, and the map is resized there (bilinear with half-pixel centres, rounded to 8-bit levels: OpenCV's
INTER_LINEAR up to its fixed-point rounding).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .annotator import AnnotatorInputError, detection_size, hwc3, resize_image, to_uint8

DETECT_RESOLUTION = 512   # the references' default
MIN_SIDE = 8              # reflection pads of 3 (full size) and 1 (after two stride-2 convolutions)


def prepare(pixels: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 [b,H,W,C] -> the network's input [b,3,h,w] float32 in 0..1 at the detection size."""
    resized = np.stack([resize_image(hwc3(p), resolution) for p in pixels])
    return torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0


def line_levels(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[b,3,h,w] in 0..1 -> line strength in 8-bit levels [b,1,h,w] (float, truncated as numpy's uint8 cast)."""
    param = next(model.parameters())
    h, w = x.shape[-2:]
    line = model(x.to(param.dtype))[..., :h, :w]   # sides not multiples of 4 come back padded: cropped
    return torch.floor((line.float() * 255.0).clamp(0, 255))


def to_output(levels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Levels [b,1,h,w] -> inverted IMAGE [b,H,W,3] in 0..1."""
    if tuple(levels.shape[-2:]) != (height, width):
        levels = F.interpolate(levels, size=(height, width), mode="bilinear", align_corners=False)
        levels = levels.round().clamp(0, 255)
    return ((255.0 - levels) / 255.0).movedim(1, -1).expand(-1, -1, -1, 3)


def detect(model: torch.nn.Module, images: torch.Tensor, resolution: int = DETECT_RESOLUTION,
           chunk: int | None = None, device=None, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> lineart IMAGE [B,H,W,3] (white lines on black, the input size).

    Runs `model` (LineartGenerator) on `device` (default: the model's) `chunk` images at a time (default: all)."""
    device = device or next(model.parameters()).device
    pixels = to_uint8(images)
    b, height, width = pixels.shape[:3]
    size = detection_size(height, width, resolution)
    if min(size) < MIN_SIDE:
        raise AnnotatorInputError(f"lineart needs images of at least {MIN_SIDE} px on each side; got "
                                  f"{height}x{width} (detection size {size[0]}x{size[1]}). Set 'resolution' or "
                                  f"upscale the image.")
    chunk = max(1, min(chunk or b, b))
    out = torch.empty((b, height, width, 3), dtype=torch.float32, device=images.device)
    for start in range(0, b, chunk):
        x = prepare(pixels[start:start + chunk], resolution).to(device)
        out[start:start + chunk] = to_output(line_levels(model, x), height, width).to(out.device)
        if progress is not None:
            progress(min(chunk, b - start))
    return out
