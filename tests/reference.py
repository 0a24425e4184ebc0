"""Reference helpers several test files share: error measures, a stand-in denoiser, the published noise schedule,
a pickle that would run code, CustomNet's object preprocessing. Nothing here comes from the pack."""
from __future__ import annotations

import os

import torch


def rel_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm()).item()


def rel_max(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


def stand_in(x: torch.Tensor, t) -> torch.Tensor:
    """A fixed smooth function of the network input x and the timestep t, used as eps (or v) in place of a model."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(x) * (0.5 + t / 2000) + 0.1 * torch.sin(3 * x + t / 100)


def alpha_bar(t: int) -> float:
    """alpha_bar(t) of PixArt's schedule: linear betas 1e-4..0.02 over 1000 steps (diffusers' DDPM "linear")."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return float(torch.cumprod(1 - betas, 0)[t])


class CodeRunningPickle:
    """Pickles to a call of os.system that creates `marker`: a loader that executes it leaves the file behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def customnet_object(image_u8, alpha_u8):
    """TencentARC/CustomNet ldm/util.py load_and_preprocess + add_margin with carvekit's matting replaced by the
    given alpha: alpha > 127 is the object, white elsewhere, crop to cv2.boundingRect, PIL thumbnail (200, 200)
    LANCZOS, pasted at ((256 - w) // 2, (256 - h) // 2) on white 256x256. uint8 [256, 256, 3]."""
    import cv2
    import numpy as np
    from PIL import Image
    image = image_u8.copy()
    fg = alpha_u8 > 127
    image[~fg] = [255, 255, 255]
    x, y, w, h = cv2.boundingRect(fg.astype(np.uint8))
    pic = Image.fromarray(image[y:y + h, x:x + w, :])
    pic.thumbnail([200, 200], Image.Resampling.LANCZOS)
    out = Image.new(pic.mode, (256, 256), (255, 255, 255))
    out.paste(pic, ((256 - pic.size[0]) // 2, (256 - pic.size[1]) // 2))
    return np.array(out)
