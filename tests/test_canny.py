"""PixArt Canny against cv2.Canny computed here on the same 8-bit pictures, with ControlNet's HWC3 and
resize_image restated from lllyasviel/ControlNet annotator/util.py (and ControlNet 1.1's INTER_LINEAR resize of
the map back to the image size, ControlNet-v1-1-nightly gradio_canny.py). No ComfyUI needed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from pixart_delta.preprocessors.annotator import AnnotatorInputError, detection_size  # noqa: E402
from pixart_delta.preprocessors.canny import canny  # noqa: E402


# ---- the reference (lllyasviel/ControlNet annotator/util.py + annotator/canny) ------------------------------

def ref_hwc3(x):
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] == 3:
        return x
    if x.shape[2] == 1:
        return np.concatenate([x, x, x], axis=2)
    color = x[:, :, 0:3].astype(np.float32)
    alpha = x[:, :, 3:4].astype(np.float32) / 255.0
    return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def ref_resize_image(img, resolution):
    H, W = float(img.shape[0]), float(img.shape[1])
    k = float(resolution) / min(H, W)
    H, W = int(np.round(H * k / 64.0)) * 64, int(np.round(W * k / 64.0)) * 64
    return cv2.resize(img, (W, H), interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)


def ref_canny(img, low=100, high=200, resolution=None):
    h, w = img.shape[:2]
    img = ref_hwc3(img)
    if resolution:
        img = ref_resize_image(img, resolution)
    detected = cv2.Canny(img, low, high)
    if detected.shape != (h, w):
        detected = cv2.resize(detected, (w, h), interpolation=cv2.INTER_LINEAR)
    return detected


# ---- pictures -----------------------------------------------------------------------------------------------

def natural_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour fields (low-frequency noise), a few hard-edged shapes, fine texture: uint8 RGB."""
    rng = np.random.default_rng(seed)
    field = rng.normal(0, 1, (max(2, h // 24), max(2, w // 24), 3)).astype(np.float32)
    img = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC) * 45 + 128
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.1, 0.3) * min(h, w)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def as_comfy(*imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs).astype(np.float32) / 255.0)


def levels(out: torch.Tensor) -> np.ndarray:
    return np.rint(out.numpy() * 255.0).astype(np.uint8)


# ---- tests --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 64), (97, 131), (240, 320), (512, 384)])
def test_identical_to_cv2_canny_at_the_input_size(size):
    imgs = [natural_image(*size, seed=s) for s in range(3)]
    out = levels(canny(as_comfy(*imgs), 100, 200, resolution=0))
    assert out.shape == (3, *size, 3)
    for i, img in enumerate(imgs):
        ref = cv2.Canny(img, 100, 200)
        assert 0.005 < np.mean(ref == 255) < 0.5          # real edges, not an empty or full map
        for c in range(3):
            assert np.array_equal(out[i, ..., c], ref)


@pytest.mark.parametrize("low,high", [(50, 100), (100, 200), (150, 300)])
def test_thresholds_are_cv2s(low, high):
    img = natural_image(128, 160, seed=low)
    assert np.array_equal(levels(canny(as_comfy(img), low, high, 0))[0, ..., 0], cv2.Canny(img, low, high))


@pytest.mark.parametrize("size,resolution", [((512, 512), 512), ((512, 768), 512), ((300, 420), 512),
                                             ((700, 500), 256)])
def test_resize_steps_are_controlnets(size, resolution):
    img = natural_image(*size, seed=sum(size))
    ours = levels(canny(as_comfy(img), 100, 200, resolution))[0]
    ref = ref_canny(img, 100, 200, resolution)
    assert ours.shape[:2] == size
    assert np.array_equal(ours[..., 0], ref)


def test_a_512_picture_is_not_resized():
    img = natural_image(512, 640, seed=9)
    assert np.array_equal(levels(canny(as_comfy(img), resolution=512))[0, ..., 0], cv2.Canny(img, 100, 200))


def test_gray_and_rgba_follow_hwc3():
    rgb = natural_image(96, 128, seed=4)
    alpha = np.random.default_rng(0).integers(0, 256, (96, 128, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2)
    assert np.array_equal(levels(canny(as_comfy(rgba), resolution=0))[0, ..., 0], cv2.Canny(ref_hwc3(rgba), 100, 200))
    gray = rgb[..., :1]
    assert np.array_equal(levels(canny(as_comfy(gray), resolution=0))[0, ..., 0], cv2.Canny(ref_hwc3(gray), 100, 200))


def test_float_images_use_their_nearest_8_bit_levels():
    img = natural_image(80, 80, seed=2)
    x = as_comfy(img) + (torch.rand(1, 80, 80, 3) - 0.5) * (0.9 / 255.0)   # within half a level of k/255
    assert np.array_equal(levels(canny(x, resolution=0))[0, ..., 0], cv2.Canny(img, 100, 200))


def test_bad_input():
    with pytest.raises(AnnotatorInputError, match="5 channels"):
        canny(torch.rand(1, 32, 32, 5))
    with pytest.raises(AnnotatorInputError, match="low threshold"):
        canny(torch.rand(1, 32, 32, 3), 200, 100)


def test_detection_size_is_resize_images():
    assert detection_size(1000, 750, 512) == (704, 512)
    assert detection_size(512, 768, 512) == (512, 768)
    assert detection_size(300, 200, 0) == (300, 200)
