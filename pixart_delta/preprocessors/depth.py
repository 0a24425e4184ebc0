"""ControlNet++'s depth condition (liming-ai/ControlNet_Plus_Plus, branch `inference`, depth_estimator.py, which
runs transformers 4.38.1's `pipeline("depth-estimation")`), batched:

resize_image(image, detect resolution) -> the checkpoint's DPTImageProcessor -> DPTForDepthEstimation ->
predicted_depth resized bicubic (align_corners=False) to the detect-size image -> `depth * 255 / max(depth)` per
image (no minimum subtracted) -> numpy's float-to-uint8 cast -> HWC3 -> resize_image to the output size.
transformers 5's pipeline min-max normalises instead; this follows the 4.38.1 formula.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .controlnet_plus_plus import to_detect_size, to_output_size, to_uint8_rgb
from .hf_image_processor import ImageProcessing

DEFAULT_RESOLUTION = 384   # app_depth.py's "Preprocess resolution" default


def numpy_uint8_cast(x: torch.Tensor) -> torch.Tensor:
    """float32 -> uint8 as numpy's astype("uint8") does on x86-64 (numpy 1.26 and 2.x): truncation toward zero,
    then the low 8 bits, so a bicubic undershoot of -0.4 becomes 0 and one of -2.3 becomes 254."""
    return torch.remainder(torch.trunc(x).to(torch.int64), 256).to(torch.uint8)


def depth_to_uint8(predicted_depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """predicted_depth [B,h,w] -> [B,H,W] uint8: the 4.38.1 pipeline's postprocess, per image."""
    depth = F.interpolate(predicted_depth.float().unsqueeze(1), size=size, mode="bicubic", align_corners=False)[:, 0]
    peak = depth.flatten(1).amax(1).view(-1, 1, 1)
    # an all-zero prediction gives 0/0: NaN, which numpy's cast turns into 0
    return numpy_uint8_cast(torch.nan_to_num(depth * 255 / peak, nan=0.0))


def estimate_depth(model: torch.nn.Module, processing: ImageProcessing, images: torch.Tensor,
                   resolution: int = DEFAULT_RESOLUTION, chunk: int | None = None, device=None,
                   progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> depth IMAGE [B,H,W,3] (8-bit levels), `chunk` images at a time on `device`."""
    param = next(model.parameters())
    device = device or param.device
    b, height, width = images.shape[:3]
    chunk = max(1, min(chunk or b, b))
    out = torch.empty((b, height, width, 3), dtype=torch.float32)
    for start in range(0, b, chunk):
        rgb = to_detect_size(to_uint8_rgb(images[start:start + chunk]), resolution)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(0, 3, 1, 2)
        with torch.inference_mode():
            predicted = model(pixel_values=processing(x).to(param.dtype)).predicted_depth
            maps = depth_to_uint8(predicted, tuple(rgb.shape[1:3])).cpu().numpy()[..., None]
        maps = to_output_size(maps, (height, width))
        out[start:start + chunk] = torch.from_numpy(maps).float().div_(255.0).expand(-1, -1, -1, 3)
        if progress is not None:
            progress(min(chunk, b - start))
    return out
