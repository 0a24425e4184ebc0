"""CustomNet's input preparation (TencentARC/CustomNet main/app.py prepare_data / run_generation,
main/main_inpaint.py, ldm/util.py load_and_preprocess, ldm/modules/encoders/modules.py FrozenCLIPImageEmbedder).

Images here: ComfyUI IMAGE tensors [H, W, C] in 0..1; the reference reads 8-bit pictures, so the picture steps
(white outside the mask, crop, thumbnail, pad) run on 8-bit values with PIL / OpenCV as the reference does.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

CANVAS = 256          # the model's image size (config image_size 32 latents)
OBJECT_FIT = 200      # ldm/util.py load_and_preprocess: thumbnail to 200x200, then pad to 256 on white
CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
POLAR_RANGE = (-30.0, 30.0)     # the app's sliders
AZIMUTH_RANGE = (-60.0, 60.0)


class CustomNetInputError(ValueError):
    """Bad input for CustomNet Conditioning (empty mask, empty box, ...)."""


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[H, W, C] 0..1 -> uint8 RGB (an alpha channel is dropped: pass it as the mask)."""
    a = image[..., :3].detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def foreground_from_mask(mask: torch.Tensor, mask_is_object: bool, size: tuple[int, int]) -> np.ndarray:
    """Boolean foreground [H, W] at the image's size: the reference keeps alpha > 127 of its matting result."""
    m = mask.detach().float().cpu()
    if m.dim() == 3:
        m = m[0]
    if tuple(m.shape) != tuple(size):
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    if not mask_is_object:
        m = 1.0 - m
    return (m.clamp(0, 1).mul(255).round() > 127).numpy()


def object_image(image: torch.Tensor, foreground: np.ndarray | None, resample: str = "bicubic") -> torch.Tensor:
    """The 256x256 object picture (uint8 values as 0..1 floats, [256, 256, 3]).

    With a foreground mask: pixels outside it white, crop to the mask's bounding box, fit into 200x200 (PIL
    thumbnail, LANCZOS: only shrinks), centre on a white 256x256 canvas (ldm/util.py load_and_preprocess,
    add_margin). Without: the picture resized to 256x256 as it is (app.py prepare_data, PIL's default bicubic;
    main_inpaint.py: cv2.resize, bilinear), so it should already show the object on white."""
    from PIL import Image
    a = to_uint8(image)
    if foreground is None:
        if a.shape[:2] != (CANVAS, CANVAS):
            if resample == "bicubic":
                a = np.array(Image.fromarray(a).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC))
            else:
                import cv2
                a = cv2.resize(a, (CANVAS, CANVAS), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0
    if not foreground.any():
        raise CustomNetInputError("the object mask is empty: no pixel is marked as the object (check the mask "
                                  "convention input: Load Image's MASK is 1 on the transparent background)")
    a = a.copy()
    a[~foreground] = 255
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    crop = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    pic = Image.fromarray(np.ascontiguousarray(crop))
    pic.thumbnail((OBJECT_FIT, OBJECT_FIT), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    canvas.paste(pic, ((CANVAS - pic.size[0]) // 2, (CANVAS - pic.size[1]) // 2))
    return torch.from_numpy(np.asarray(canvas).copy()).float() / 255.0


def ordered_box(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """(x_0, y_0, x_1, y_1) with x_0 < x_1 and y_0 < y_1 inside the 256 canvas (app.py takes min/max)."""
    xa, xb = sorted((max(0, min(CANVAS, int(x0))), max(0, min(CANVAS, int(x1)))))
    ya, yb = sorted((max(0, min(CANVAS, int(y0))), max(0, min(CANVAS, int(y1)))))
    if xb - xa < 1 or yb - ya < 1:
        raise CustomNetInputError(f"the box ({x0}, {y0}) - ({x1}, {y1}) is empty on the {CANVAS}x{CANVAS} canvas; "
                                  f"give x0 != x1 and y0 != y1")
    return xa, ya, xb, yb


def camera_vector(polar: float, azimuth: float) -> torch.Tensor:
    """[radians(polar), sin(azimuth), cos(azimuth), 0] (app.py: T)."""
    az = math.radians(azimuth)
    return torch.tensor([math.radians(polar), math.sin(az), math.cos(az), 0.0], dtype=torch.float32)


def location_canvas(obj: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """obj [B, 3, 256, 256] in -1..1 -> white (1) canvas with the object resized bilinearly into the box."""
    x0, y0, x1, y1 = box
    canvas = torch.ones_like(obj)
    canvas[:, :, y0:y1, x0:x1] = F.interpolate(obj, (y1 - y0, x1 - x0), mode="bilinear")
    return canvas


def background_canvas(background: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """The inpaint model's background [3, 256, 256] in -1..1: resized to 256 (cv2 bilinear, main_inpaint.py),
    the box area white."""
    import cv2
    a = to_uint8(background)
    if a.shape[:2] != (CANVAS, CANVAS):
        a = cv2.resize(a, (CANVAS, CANVAS), interpolation=cv2.INTER_LINEAR)
    bg = torch.from_numpy(np.ascontiguousarray(a)).float().permute(2, 0, 1) / 255.0 * 2 - 1
    x0, y0, x1, y1 = box
    bg[:, y0:y1, x0:x1] = 1.0
    return bg


def clip_pixels(obj: torch.Tensor, size: int = CLIP_SIZE, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """FrozenCLIPImageEmbedder.preprocess: obj [B, 3, H, W] in -1..1 -> bicubic (align_corners=True, no
    antialias: kornia.geometry.resize) to 224, to 0..1, CLIP mean/std. (ComfyUI's clip_preprocess antialiases,
    crops and rounds to 8 bits, which the model was not trained with.)"""
    x = F.interpolate(obj, (size, size), mode="bicubic", align_corners=True)
    x = (x + 1.0) / 2.0
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
