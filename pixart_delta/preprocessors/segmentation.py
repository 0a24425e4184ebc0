"""ControlNet++'s segmentation condition (liming-ai/ControlNet_Plus_Plus, branch `inference`, image_segmentor.py),
batched:

resize_image(image, detect resolution) -> SegformerImageProcessor -> UperNetForSemanticSegmentation -> logits
resized bilinear (align_corners=False) to the detect-size image (post_process_semantic_segmentation) -> argmax ->
the ADE20K palette (classes without a colour stay black) -> resize_image with nearest-neighbour to the output size.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .ade20k_palette import ADE20K_PALETTE
from .controlnet_plus_plus import to_detect_size, to_output_size, to_uint8_rgb
from .hf_image_processor import ImageProcessing

DEFAULT_RESOLUTION = 512   # app_segmentation.py's "Preprocess resolution" default


def colour_labels(labels: torch.Tensor) -> torch.Tensor:
    """[B,H,W] class ids -> [B,H,W,3] uint8 palette colours."""
    n = len(ADE20K_PALETTE)
    palette = torch.tensor(ADE20K_PALETTE + ((0, 0, 0),), dtype=torch.uint8, device=labels.device)
    return palette[torch.where(labels < n, labels, torch.full_like(labels, n))]


def segment(model: torch.nn.Module, processing: ImageProcessing, images: torch.Tensor,
            resolution: int = DEFAULT_RESOLUTION, chunk: int | None = None, device=None,
            progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> colour-coded ADE20K segmentation IMAGE [B,H,W,3], `chunk` images at a time."""
    param = next(model.parameters())
    device = device or param.device
    b, height, width = images.shape[:3]
    chunk = max(1, min(chunk or b, b))
    out = torch.empty((b, height, width, 3), dtype=torch.float32)
    for start in range(0, b, chunk):
        rgb = to_detect_size(to_uint8_rgb(images[start:start + chunk]), resolution)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(0, 3, 1, 2)
        with torch.inference_mode():
            logits = model(pixel_values=processing(x).to(param.dtype)).logits
            logits = F.interpolate(logits.float(), size=tuple(rgb.shape[1:3]), mode="bilinear", align_corners=False)
            colours = colour_labels(logits.argmax(1)).cpu().numpy()
        colours = to_output_size(colours, (height, width), interpolation=cv2.INTER_NEAREST)
        out[start:start + chunk] = torch.from_numpy(colours).float().div_(255.0)
        if progress is not None:
            progress(min(chunk, b - start))
    return out
