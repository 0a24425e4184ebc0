"""The image steps ControlNet's annotators share (lllyasviel/ControlNet annotator/util.py, unchanged in
ControlNet-v1-1-nightly and huggingface/controlnet_aux util.py), restated for ComfyUI IMAGE batches:

- `HWC3`: uint8 HxWxC -> HxWx3; gray is replicated, RGBA is composited on white in float32 and truncated.
- `resize_image(img, resolution)`: the SHORT side to `resolution`, both sides rounded to multiples of 64,
  OpenCV INTER_LANCZOS4 when enlarging (k > 1), INTER_AREA otherwise.
- ControlNet 1.1's apps resize the detected map to the output size with INTER_LINEAR
  (ControlNet-v1-1-nightly gradio_canny.py, gradio_lineart.py).

OpenCV is used for the resizes: they are its kernels, and torch has no Lanczos-4 or OpenCV-style area filter.
"""
from __future__ import annotations

import numpy as np
import torch


class AnnotatorInputError(ValueError):
    pass


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE [B,H,W,C] in 0..1 (or a MASK-like [B,H,W]) -> uint8 numpy [B,H,W,C]. Rounded, so the k/255
    values a loaded 8-bit picture holds come back as exactly k."""
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    if images.ndim != 4:
        raise AnnotatorInputError(f"expected an IMAGE tensor [batch, height, width, channels], got shape "
                                  f"{tuple(images.shape)}")
    if images.shape[-1] not in (1, 2, 3, 4):
        raise AnnotatorInputError(f"expected an image with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, "
                                  f"got {images.shape[-1]} channels (shape {tuple(images.shape)})")
    x = images.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return x.cpu().numpy()


def hwc3(x: np.ndarray) -> np.ndarray:
    """ControlNet's HWC3 on one uint8 image (gray+alpha is treated like RGBA: composited on white)."""
    if x.ndim == 2:
        x = x[:, :, None]
    c = x.shape[2]
    if c == 3:
        return x
    if c == 1:
        return np.concatenate([x, x, x], axis=2)
    if c == 2:
        x = np.concatenate([x[:, :, :1]] * 3 + [x[:, :, 1:]], axis=2)
    color = x[:, :, 0:3].astype(np.float32)
    alpha = x[:, :, 3:4].astype(np.float32) / 255.0
    return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def detection_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """resize_image's target (short side to `resolution`, multiples of 64; at least 64 where the original would
    give 0); `resolution` 0 keeps the input size."""
    if resolution <= 0:
        return height, width
    k = float(resolution) / min(height, width)
    return (max(64, int(np.round(height * k / 64.0)) * 64), max(64, int(np.round(width * k / 64.0)) * 64))


def resize_image(img: np.ndarray, resolution: int) -> np.ndarray:
    """ControlNet's resize_image on one uint8 HxWx3 image; `resolution` 0 returns it unchanged."""
    import cv2
    h, w = img.shape[:2]
    size = detection_size(h, w, resolution)
    if size == (h, w):
        return img   # cv2.resize to the same size copies the pixels
    k = float(resolution) / min(h, w)
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)
