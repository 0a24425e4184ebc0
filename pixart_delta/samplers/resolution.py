"""PixArt's trained resolution buckets: the asked size -> the nearest trained aspect-ratio bucket to sample at, and
the decoded image resized and centre-cropped back to the asked size, as the diffusers PixArt pipelines do with
`use_resolution_binning` (huggingface/diffusers: src/diffusers/pipelines/pixart_alpha/pipeline_pixart_alpha.py,
pipeline_pixart_sigma.py; PixArtImageProcessor.classify_height_width_bin and resize_and_crop_tensor in
src/diffusers/image_processor.py). It sits in samplers/ beside the schedules and the YOSO prior: what the model
is sampled at. Pure torch (no ComfyUI).

One deliberate difference: diffusers sizes the resized image as int(size * ratio) in floating point, which for
about 2% of asked sizes comes out one pixel below the target (the exact product is the target, the float a hair
below), and its centre crop then starts at -1 and returns a 1-pixel-tall or -wide image (huggingface/diffusers
issue #8911; e.g. 512x944 from the 1024 bucket 768x1344). Here such a side is raised to the target; every other
size, and so every pixel, is diffusers'.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# diffusers is not a runtime dependency of the pack, so its tables and functions are restated here (tests compare).

# {aspect ratio height/width as diffusers writes it: (bucket height, bucket width)}, in diffusers' order (ties go
# to the first key). 256, 512, 1024: pipeline_pixart_alpha.py ASPECT_RATIO_{256,512,1024}_BIN; 2048:
# pipeline_pixart_sigma.py ASPECT_RATIO_2048_BIN (huggingface/diffusers, src/diffusers/pipelines/pixart_alpha/).
ASPECT_RATIO_256_BIN: dict[str, tuple[int, int]] = {
    "0.25": (128, 512), "0.28": (128, 464), "0.32": (144, 448), "0.33": (144, 432), "0.35": (144, 416),
    "0.4": (160, 400), "0.42": (160, 384), "0.48": (176, 368), "0.5": (176, 352), "0.52": (176, 336),
    "0.57": (192, 336), "0.6": (192, 320), "0.68": (208, 304), "0.72": (208, 288), "0.78": (224, 288),
    "0.82": (224, 272), "0.88": (240, 272), "0.94": (240, 256), "1.0": (256, 256), "1.07": (256, 240),
    "1.13": (272, 240), "1.21": (272, 224), "1.29": (288, 224), "1.38": (288, 208), "1.46": (304, 208),
    "1.67": (320, 192), "1.75": (336, 192), "2.0": (352, 176), "2.09": (368, 176), "2.4": (384, 160),
    "2.5": (400, 160), "3.0": (432, 144), "4.0": (512, 128),
}

ASPECT_RATIO_512_BIN: dict[str, tuple[int, int]] = {
    "0.25": (256, 1024), "0.28": (256, 928), "0.32": (288, 896), "0.33": (288, 864), "0.35": (288, 832),
    "0.4": (320, 800), "0.42": (320, 768), "0.48": (352, 736), "0.5": (352, 704), "0.52": (352, 672),
    "0.57": (384, 672), "0.6": (384, 640), "0.68": (416, 608), "0.72": (416, 576), "0.78": (448, 576),
    "0.82": (448, 544), "0.88": (480, 544), "0.94": (480, 512), "1.0": (512, 512), "1.07": (512, 480),
    "1.13": (544, 480), "1.21": (544, 448), "1.29": (576, 448), "1.38": (576, 416), "1.46": (608, 416),
    "1.67": (640, 384), "1.75": (672, 384), "2.0": (704, 352), "2.09": (736, 352), "2.4": (768, 320),
    "2.5": (800, 320), "3.0": (864, 288), "4.0": (1024, 256),
}

ASPECT_RATIO_1024_BIN: dict[str, tuple[int, int]] = {
    "0.25": (512, 2048), "0.28": (512, 1856), "0.32": (576, 1792), "0.33": (576, 1728), "0.35": (576, 1664),
    "0.4": (640, 1600), "0.42": (640, 1536), "0.48": (704, 1472), "0.5": (704, 1408), "0.52": (704, 1344),
    "0.57": (768, 1344), "0.6": (768, 1280), "0.68": (832, 1216), "0.72": (832, 1152), "0.78": (896, 1152),
    "0.82": (896, 1088), "0.88": (960, 1088), "0.94": (960, 1024), "1.0": (1024, 1024), "1.07": (1024, 960),
    "1.13": (1088, 960), "1.21": (1088, 896), "1.29": (1152, 896), "1.38": (1152, 832), "1.46": (1216, 832),
    "1.67": (1280, 768), "1.75": (1344, 768), "2.0": (1408, 704), "2.09": (1472, 704), "2.4": (1536, 640),
    "2.5": (1600, 640), "3.0": (1728, 576), "4.0": (2048, 512),
}

ASPECT_RATIO_2048_BIN: dict[str, tuple[int, int]] = {
    "0.25": (1024, 4096), "0.26": (1024, 3968), "0.27": (1024, 3840), "0.28": (1024, 3712), "0.32": (1152, 3584),
    "0.33": (1152, 3456), "0.35": (1152, 3328), "0.4": (1280, 3200), "0.42": (1280, 3072), "0.48": (1408, 2944),
    "0.5": (1408, 2816), "0.52": (1408, 2688), "0.57": (1536, 2688), "0.6": (1536, 2560), "0.68": (1664, 2432),
    "0.72": (1664, 2304), "0.78": (1792, 2304), "0.82": (1792, 2176), "0.88": (1920, 2176), "0.94": (1920, 2048),
    "1.0": (2048, 2048), "1.07": (2048, 1920), "1.13": (2176, 1920), "1.21": (2176, 1792), "1.29": (2304, 1792),
    "1.38": (2304, 1664), "1.46": (2432, 1664), "1.67": (2560, 1536), "1.75": (2688, 1536), "2.0": (2816, 1408),
    "2.09": (2944, 1408), "2.4": (3072, 1280), "2.5": (3200, 1280), "2.89": (3328, 1152), "3.0": (3456, 1152),
    "3.11": (3584, 1152), "3.62": (3712, 1024), "3.75": (3840, 1024), "3.88": (3968, 1024), "4.0": (4096, 1024),
}

# The pipelines pick the table by the transformer's sample size (native px / 8): 32, 64, 128, 256.
BINS_BY_NATIVE_PX: dict[int, dict[str, tuple[int, int]]] = {
    256: ASPECT_RATIO_256_BIN, 512: ASPECT_RATIO_512_BIN, 1024: ASPECT_RATIO_1024_BIN, 2048: ASPECT_RATIO_2048_BIN,
}


class ResolutionError(ValueError):
    pass


def bins_for_native_size(native_px: int) -> dict[str, tuple[int, int]]:
    """The bucket table of a model trained at `native_px` (256, 512, 1024 or 2048)."""
    if native_px not in BINS_BY_NATIVE_PX:
        raise ResolutionError(f"no trained-resolution buckets for a {native_px} px model; bucket tables exist for "
                              f"{', '.join(str(px) for px in BINS_BY_NATIVE_PX)} px")
    return BINS_BY_NATIVE_PX[native_px]


def _check_size(what: str, height, width) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ResolutionError(f"{what} {name} must be a whole number of pixels >= 1, got {value!r}")


def nearest_bucket(height: int, width: int, bins: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(height, width) of the bucket whose aspect ratio (height / width) is nearest to the asked one; only the
    ratio counts, not the size. As PixArtImageProcessor.classify_height_width_bin, float for float."""
    _check_size("the asked", height, width)
    ar = float(height / width)
    closest = min(bins.keys(), key=lambda ratio: abs(float(ratio) - ar))
    return bins[closest]


def covering_size(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int]:
    """(height, width) of a height x width image scaled by one factor so that it covers the target, rounded as
    diffusers rounds it (int of the float product), except that a side diffusers puts one pixel below the target
    is the target (see the module docstring)."""
    ratio = max(target_height / height, target_width / width)
    return max(int(height * ratio), target_height), max(int(width * ratio), target_width)


def resize_and_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, height, width] as PixArtImageProcessor.resize_and_crop_tensor: scaled by one factor
    to cover height x width (bilinear, align_corners=False, no antialias: torch's defaults, as diffusers calls
    it), then centre-cropped (offsets rounded down). Unchanged when the size already matches."""
    if samples.ndim != 4 or samples.shape[2] < 1 or samples.shape[3] < 1:
        raise ResolutionError(f"expected images shaped [batch, channels, height, width], got {tuple(samples.shape)}")
    _check_size("the target", height, width)
    orig_height, orig_width = samples.shape[2], samples.shape[3]
    if (orig_height, orig_width) == (height, width):
        return samples
    resized_height, resized_width = covering_size(orig_height, orig_width, height, width)
    samples = F.interpolate(samples, size=(resized_height, resized_width), mode="bilinear", align_corners=False)
    top, left = (resized_height - height) // 2, (resized_width - width) // 2
    return samples[:, :, top:top + height, left:left + width]


def resize_back_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] -> [B, height, width, C] by resize_and_crop (done channels-first)."""
    if image.ndim != 4 or image.shape[1] < 1 or image.shape[2] < 1:
        raise ResolutionError(f"expected an IMAGE shaped [batch, height, width, channels], got {tuple(image.shape)}")
    return resize_and_crop(image.movedim(-1, 1), width, height).movedim(1, -1).contiguous()
