"""What transformers 4.38.1's DPTImageProcessor and SegformerImageProcessor do to an 8-bit RGB image (the version
ControlNet++'s inference code pins), in batched torch on the model's device, with the settings read from a model
folder's preprocessor_config.json.

transformers' own steps (transformers 4.38.1: models/dpt/image_processing_dpt.py, models/segformer/
image_processing_segformer.py, image_transforms.py): PIL `Image.resize` of the uint8 image, then `image * scale`
(float64, stored as float32), then `(image - mean) / std` in float32. PIL resizes an 8-bit image in two passes,
horizontal then vertical, each with its antialiasing filter (support scaled by the reduction factor, bicubic
a = -0.5, 22-bit fixed-point weights) and each rounded back to 8 bits; restated exactly below.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

PIL_BILINEAR, PIL_BICUBIC = 2, 3
_MODES = {PIL_BILINEAR: "bilinear", PIL_BICUBIC: "bicubic"}

IMAGENET_STANDARD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_DEFAULT = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class ProcessorConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ImageProcessing:
    size: tuple[int, int] | None        # (height, width) target, None = no resize
    resample: int                       # PIL filter code
    keep_aspect_ratio: bool = False     # DPT only
    ensure_multiple_of: int = 1         # DPT only
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """DPT's get_resize_output_image_size (Segformer: the configured size)."""
        if self.size is None:
            return height, width
        out_h, out_w = self.size
        scale_h, scale_w = out_h / height, out_w / width
        if self.keep_aspect_ratio:
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h
        m = self.ensure_multiple_of

        def multiple(val):
            return round(val / m) * m   # Python's round, as transformers

        return multiple(scale_h * height), multiple(scale_w * width)

    def __call__(self, rgb_uint8: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] uint8 (any device) -> pixel_values [B,3,h,w] float32 on the same device."""
        x = rgb_uint8
        if self.size is not None:
            x = pil_resize(x, self.output_size(*x.shape[-2:]), self.resample)
        if self.rescale_factor is not None:
            x = (x.double() * self.rescale_factor).float()   # numpy: uint8 * float -> float64, then float32
        else:
            x = x.float()
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


def pil_resize(x: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
    """PIL's Image.resize of 8-bit levels [B,C,H,W] (any dtype holding 0..255 integers) -> int64 levels, exactly:
    Pillow 10.3's two passes (libImaging/Resample.c), horizontal first, each with PIL's coefficients as 22-bit
    fixed-point integers, rounding half up and clamping to 0..255 after each pass. Torch's antialiased
    interpolation uses the same filter in floating point, which lands on the other side of half a level for a few
    percent of pixels; Pillow 13 does the vertical pass first when the width grows and the height shrinks."""
    x = x.to(torch.int64)
    out_h, out_w = size
    if out_w != x.shape[-1]:
        x = _pil_pass(x, out_w, resample)
    if out_h != x.shape[-2]:
        x = _pil_pass(x.transpose(-1, -2), out_h, resample).transpose(-1, -2)
    return x


_PRECISION_BITS = 32 - 8 - 2   # Resample.c


def _pil_filter(resample: int):
    if resample == PIL_BILINEAR:
        return 1.0, lambda t: max(0.0, 1.0 - abs(t))
    a = -0.5

    def bicubic(t):
        t = abs(t)
        if t < 1.0:
            return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
        if t < 2.0:
            return (((t - 5.0) * t + 8.0) * t - 4.0) * a
        return 0.0
    return 2.0, bicubic


@functools.lru_cache(maxsize=32)
def _pil_coefficients(in_size: int, out_size: int, resample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample.c precompute_coeffs + normalize_coeffs_8bpc: per output pixel the source indices and the
    integer weights (padded taps have weight 0)."""
    support, kernel = _pil_filter(resample)
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    taps = int(math.ceil(support)) * 2 + 1
    index = torch.zeros((out_size, taps), dtype=torch.int64)
    weight = torch.zeros((out_size, taps), dtype=torch.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - xmin
        w = [kernel((x + xmin - center + 0.5) / filterscale) for x in range(count)]
        total = sum(w)
        for x in range(count):
            k = w[x] / total if total != 0.0 else 0.0
            weight[xx, x] = int(k * (1 << _PRECISION_BITS) + (-0.5 if k < 0 else 0.5))
            index[xx, x] = x + xmin
    return index, weight


def _pil_pass(x: torch.Tensor, out_size: int, resample: int) -> torch.Tensor:
    """One pass along the last axis, in int64 (exact on every device)."""
    index, weight = _pil_coefficients(x.shape[-1], out_size, resample)
    index, weight = index.to(x.device), weight.to(x.device)
    acc = (x[..., index] * weight).sum(-1) + (1 << (_PRECISION_BITS - 1))
    return torch.clamp(acc >> _PRECISION_BITS, 0, 255)


def _size(value, source) -> tuple[int, int]:
    """transformers' get_size_dict for these processors: an int is a square, [h, w], or {height, width}."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    raise ProcessorConfigError(f"{source}: 'size' is {value!r}; expected an int, [height, width] or "
                               f"{{\"height\": h, \"width\": w}} (the processors ControlNet++ uses need both sides)")


def _triple(value, source, name) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    raise ProcessorConfigError(f"{source}: {name!r} is {value!r}; expected 3 numbers (one per RGB channel)")


def processing_from_config(config: dict | None, source, *, size: tuple[int, int], resample: int,
                           mean_std: tuple[tuple, tuple], dpt: bool) -> ImageProcessing:
    """A preprocessor_config.json (None: the processor's defaults given here) as the 4.38.1 processor reads it."""
    c = dict(config or {})
    if dpt and c.get("do_pad", False):
        raise ProcessorConfigError(f"{source}: do_pad is true (DPT padding to size_divisor); the checkpoints "
                                   f"ControlNet++ uses do not pad and it is not supported here")
    resample_code = int(c.get("resample", resample))
    do_resize = bool(c.get("do_resize", True))
    if do_resize and resample_code not in _MODES:
        raise ProcessorConfigError(f"{source}: resample {resample_code} is not supported; expected 2 (bilinear) or "
                                   f"3 (bicubic), the PIL filters these processors use")
    mean, std = mean_std
    do_normalize = bool(c.get("do_normalize", True))
    multiple = int(c.get("ensure_multiple_of", 1)) if dpt else 1
    if multiple < 1:
        raise ProcessorConfigError(f"{source}: ensure_multiple_of is {multiple}; expected a positive integer")
    factor = c.get("rescale_factor", 1 / 255)
    if not isinstance(factor, (int, float)) or not math.isfinite(factor):
        raise ProcessorConfigError(f"{source}: rescale_factor is {factor!r}; expected a number such as 1/255")
    return ImageProcessing(
        size=_size(c.get("size", list(size)), source) if do_resize else None,
        resample=resample_code,
        keep_aspect_ratio=bool(c.get("keep_aspect_ratio", False)) if dpt else False,
        ensure_multiple_of=multiple,
        rescale_factor=float(factor) if c.get("do_rescale", True) else None,
        mean=_triple(c.get("image_mean", mean), source, "image_mean") if do_normalize else None,
        std=_triple(c.get("image_std", std), source, "image_std") if do_normalize else None,
    )


def dpt_processing(config: dict | None, source="preprocessor_config.json") -> ImageProcessing:
    """DPTImageProcessor (4.38.1 defaults: 384x384, bicubic, aspect not kept, multiple of 1, 1/255, mean = std
    = 0.5)."""
    return processing_from_config(config, source, size=(384, 384), resample=PIL_BICUBIC,
                                  mean_std=IMAGENET_STANDARD, dpt=True)


def segformer_processing(config: dict | None, source="preprocessor_config.json") -> ImageProcessing:
    """SegformerImageProcessor (4.38.1 defaults: 512x512, bilinear, 1/255, ImageNet mean/std)."""
    return processing_from_config(config, source, size=(512, 512), resample=PIL_BILINEAR,
                                  mean_std=IMAGENET_DEFAULT, dpt=False)
