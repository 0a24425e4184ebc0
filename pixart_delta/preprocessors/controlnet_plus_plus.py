"""The image steps ControlNet++'s inference app wraps around its depth and segmentation models
(liming-ai/ControlNet_Plus_Plus, branch `inference`: cv_utils.py, depth_estimator.py, image_segmentor.py).

`resize_image` scales the LONG side to the resolution and rounds both sides to multiples of 64 (controlnet_aux's
own resize_image scales the short side); it is OpenCV's resize on 8-bit RGB, kept in OpenCV (INTER_AREA and
INTER_LANCZOS4 have no torch equivalent), one image at a time on the CPU: these steps are cheap next to the model.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .hed import to_rgb


def detect_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """cv_utils.resize_image's output size: long side -> `resolution`, each side rounded to a multiple of 64
    (np.round: half to even). 0 keeps the input size."""
    if resolution <= 0:
        return height, width
    k = float(resolution) / max(float(height), float(width))
    h = int(np.round(height * k / 64.0)) * 64
    w = int(np.round(width * k / 64.0)) * 64
    if h < 64 or w < 64:
        raise ValueError(f"a {height}x{width} image at detect resolution {resolution} rounds to {h}x{w}; each side "
                         f"needs at least 64 px (raise the resolution, or use a less elongated image)")
    return h, w


def resize_uint8(image: np.ndarray, size: tuple[int, int], grows: bool, interpolation: int | None = None) -> np.ndarray:
    """cv2.resize of an HxWxC uint8 image to `size` (height, width) with resize_image's choice of filter:
    INTER_LANCZOS4 when its scale factor k > 1 (`grows`), INTER_AREA otherwise, or the one given."""
    if interpolation is None:
        interpolation = cv2.INTER_LANCZOS4 if grows else cv2.INTER_AREA
    out = cv2.resize(image, (size[1], size[0]), interpolation=interpolation)
    return out[:, :, None] if out.ndim == 2 else out


def resize_batch(images: np.ndarray, size: tuple[int, int], grows: bool, interpolation: int | None = None) -> np.ndarray:
    """resize_uint8 over a [B,H,W,C] uint8 batch (OpenCV copies an image already at `size`)."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    return np.stack([resize_uint8(im, size, grows, interpolation) for im in images])


def to_detect_size(images: np.ndarray, resolution: int) -> np.ndarray:
    """resize_image(image, resolution) over a [B,H,W,3] uint8 batch."""
    h, w = images.shape[1:3]
    return resize_batch(images, detect_size(h, w, resolution), grows=resolution > max(h, w))


def to_output_size(maps: np.ndarray, size: tuple[int, int], interpolation: int | None = None) -> np.ndarray:
    """The final resize_image(map, image_resolution), here to the node's input size: for an input whose sides
    are multiples of 64 this is resize_image with image_resolution = its long side (k = long side ratio)."""
    h, w = maps.shape[1:3]
    return resize_batch(maps, size, grows=max(size) / float(max(h, w)) > 1, interpolation=interpolation)


def to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE [B,H,W,C] in 0..1 -> [B,H,W,3] uint8 (rounded: a loaded picture gets its file's levels back).
    Gray is replicated and alpha composited on white, as controlnet_aux's HWC3 does."""
    rgb = to_rgb(images.cpu()).movedim(1, -1)
    return (rgb * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()

