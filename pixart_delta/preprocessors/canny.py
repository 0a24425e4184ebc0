"""Canny edges exactly as ControlNet computes them: `cv2.Canny(img, low, high)` on the uint8 RGB image after
HWC3 and resize_image (lllyasviel/ControlNet gradio_canny2image.py, annotator/canny; defaults 100/200).

The map comes back at the input size: unchanged when the detection size is the input size (resolution 0, or an
input whose short side already is `resolution` in multiples of 64), else resized with INTER_LINEAR as
ControlNet 1.1's gradio_canny.py resizes it to the image size. White edges on black, 3 channels.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .annotator import AnnotatorInputError, hwc3, resize_image, to_uint8

LOW, HIGH = 100, 200   # ControlNet 1.0 / 1.1 demo defaults


def canny_map(img: np.ndarray, low: int = LOW, high: int = HIGH, resolution: int = 0) -> np.ndarray:
    """One uint8 HxWxC image -> uint8 HxW edge map (0/255 at the detection size, then resized to HxW)."""
    import cv2
    h, w = img.shape[:2]
    detected = cv2.Canny(resize_image(hwc3(img), resolution), low, high)
    if detected.shape != (h, w):
        detected = cv2.resize(detected, (w, h), interpolation=cv2.INTER_LINEAR)
    return detected


def canny(images: torch.Tensor, low: int = LOW, high: int = HIGH, resolution: int = 0,
          progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> edge IMAGE [B,H,W,3] float32 in 0..1 (OpenCV, on the CPU, one image at a time)."""
    if low > high:
        raise AnnotatorInputError(f"Canny: the low threshold ({low}) is above the high threshold ({high})")
    pixels = to_uint8(images)
    b, h, w = pixels.shape[:3]
    if min(h, w) < 1:
        raise AnnotatorInputError(f"Canny: empty image ({h}x{w})")
    out = torch.empty((b, h, w, 3), dtype=torch.float32)
    for i in range(b):
        edges = torch.from_numpy(canny_map(pixels[i], low, high, resolution))
        out[i] = (edges.float() / 255.0).unsqueeze(-1).expand(h, w, 3)
        if progress is not None:
            progress(1)
    return out
