"""Trained-resolution buckets without ComfyUI (pixart_delta/samplers/resolution.py) against diffusers' own tables,
PixArtImageProcessor.classify_height_width_bin and resize_and_crop_tensor; where diffusers' float sizing falls a
pixel short (huggingface/diffusers issue #8911), against torch's interpolate at the exact covering size."""
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from diffusers.image_processor import PixArtImageProcessor
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN,
                                                                    ASPECT_RATIO_1024_BIN)
from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

from pixart_delta.samplers import resolution as res

# The pipelines choose the table by transformer.config.sample_size (latent px): pipeline_pixart_sigma.py.
DIFFUSERS_BY_SAMPLE_SIZE = {32: ASPECT_RATIO_256_BIN, 64: ASPECT_RATIO_512_BIN, 128: ASPECT_RATIO_1024_BIN,
                            256: ASPECT_RATIO_2048_BIN}
NATIVE_PX = [256, 512, 1024, 2048]

# (height, width) asked: odd ratios, 1:1, ratios beyond the tables (1:4 .. 4:1), sizes far below and above the
# models', one-pixel sides, and ratios midway between two keys (0.30 between 0.28 and 0.32; 0.45; 1.035).
ASKED = [
    (300, 1000), (1000, 300), (777, 333), (333, 777), (1, 1), (512, 512), (64, 64), (8192, 8192), (1024, 1024),
    (2048, 2048), (1, 10000), (10000, 1), (100, 1000), (1000, 100), (1, 2), (2, 1), (768, 1344), (1344, 768),
    (3, 10), (10, 3), (9, 20), (207, 200), (944, 512), (512, 944), (960, 1280), (1280, 960), (720, 1536),
    (1536, 720), (1080, 1920), (1920, 1080), (2160, 3840), (5, 7), (7, 5), (4095, 1024), (1024, 4097), (16, 16384),
]


def diffusers_table(native_px):
    return DIFFUSERS_BY_SAMPLE_SIZE[native_px // 8]


@pytest.mark.parametrize("native_px", NATIVE_PX)
def test_tables_are_diffusers_tables(native_px):
    ours, theirs = res.bins_for_native_size(native_px), diffusers_table(native_px)
    assert list(ours) == list(theirs)  # same keys in the same order: ties go to the first
    assert {k: v for k, v in ours.items()} == {k: (int(h), int(w)) for k, (h, w) in theirs.items()}


def test_unknown_native_size_is_refused():
    with pytest.raises(res.ResolutionError, match=r"no trained-resolution buckets for a 768 px model.*256, 512, "
                                                  r"1024, 2048 px"):
        res.bins_for_native_size(768)


@pytest.mark.parametrize("native_px", NATIVE_PX)
@pytest.mark.parametrize("height,width", ASKED)
def test_nearest_bucket_is_classify_height_width_bin(native_px, height, width):
    expected = PixArtImageProcessor.classify_height_width_bin(height, width, ratios=diffusers_table(native_px))
    assert res.nearest_bucket(height, width, res.bins_for_native_size(native_px)) == expected


@pytest.mark.parametrize("native_px", NATIVE_PX)
def test_nearest_bucket_on_every_ratio_of_small_sides(native_px):
    """Every height/width ratio with sides 1..96: all the float near-ties between neighbouring keys are in here."""
    bins, table = res.bins_for_native_size(native_px), diffusers_table(native_px)
    wrong = [(h, w) for h in range(1, 97) for w in range(1, 97)
             if res.nearest_bucket(h, w, bins) != PixArtImageProcessor.classify_height_width_bin(h, w, ratios=table)]
    assert wrong == []


def test_midway_ratio_goes_where_diffusers_sends_it():
    # 300/1000 is 0.02 from both 0.28 and 0.32 on paper; in floats 0.28 is nearer, in diffusers and here
    assert res.nearest_bucket(300, 1000, res.ASPECT_RATIO_1024_BIN) == (512, 1856)


@pytest.mark.parametrize("height,width", [(0, 512), (512, 0), (-8, 512), (512.0, 512), (True, 512), ("512", 512)])
def test_nearest_bucket_refuses_bad_sizes(height, width):
    with pytest.raises(res.ResolutionError, match=r"the asked (height|width) must be a whole number of pixels >= 1, "
                                                  r"got"):
        res.nearest_bucket(height, width, res.ASPECT_RATIO_512_BIN)


def diffusers_falls_short(bucket_h, bucket_w, height, width):
    """diffusers' own size arithmetic (resize_and_crop_tensor) gives less than the target."""
    ratio = max(height / bucket_h, width / bucket_w)
    return int(bucket_w * ratio) < width or int(bucket_h * ratio) < height


def resize_cases():
    """(bucket, target) pairs: each asked size with its bucket in each table, where diffusers sizes correctly."""
    cases = []
    for native_px in NATIVE_PX:
        for height, width in [(300, 1000), (777, 333), (333, 777), (64, 64), (1500, 1500), (1024, 1024),
                              (100, 1000), (1000, 100), (1, 1), (50, 7), (1080, 1920), (2 * native_px, native_px)]:
            bucket = PixArtImageProcessor.classify_height_width_bin(height, width, ratios=diffusers_table(native_px))
            if not diffusers_falls_short(*bucket, height, width):
                cases.append((native_px, bucket, (height, width)))
    return cases


@pytest.mark.parametrize("native_px,bucket,target", resize_cases())
def test_resize_and_crop_is_diffusers(native_px, bucket, target):
    g = torch.Generator().manual_seed(native_px + target[0] * 7 + target[1])
    images = torch.rand(1, 3, *bucket, generator=g) * 2 - 1  # the decoder output range diffusers resizes
    expected = PixArtImageProcessor.resize_and_crop_tensor(images, target[1], target[0])
    assert tuple(expected.shape[-2:]) == target
    got = res.resize_and_crop(images, target[1], target[0])
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-6


def test_resize_is_not_antialiased():
    """A strong downscale, where antialiasing would change every pixel: diffusers does not antialias."""
    images = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    got = res.resize_and_crop(images, 64, 64)
    assert (got - PixArtImageProcessor.resize_and_crop_tensor(images, 64, 64)).abs().max().item() < 1e-6
    antialiased = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    assert (got - antialiased).abs().max().item() > 0.1


def test_same_size_is_passed_through():
    images = torch.rand(1, 3, 768, 1344)
    assert res.resize_and_crop(images, 1344, 768) is images


# diffusers issue #8911's example (1280x960 from 832x1152), 512x944 on the 1024 table, and small sides
SHORTFALLS = [((832, 1152), (960, 1280)), ((1344, 768), (944, 512)), ((176, 336), (15, 28)), ((352, 176), (240, 120))]


@pytest.mark.parametrize("bucket,target", SHORTFALLS)
def test_where_diffusers_falls_a_pixel_short_the_target_size_comes_out(bucket, target):
    images = torch.rand(1, 3, *bucket, generator=torch.Generator().manual_seed(5))
    assert diffusers_falls_short(*bucket, *target)
    assert tuple(PixArtImageProcessor.resize_and_crop_tensor(images, target[1], target[0]).shape[-2:]) != target
    # the size int(bucket * ratio) means, in exact arithmetic, then diffusers' interpolate call and crop
    ratio = max(Fraction(target[0], bucket[0]), Fraction(target[1], bucket[1]))
    size = (int(bucket[0] * ratio), int(bucket[1] * ratio))
    top, left = (size[0] - target[0]) // 2, (size[1] - target[1]) // 2
    expected = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    expected = expected[:, :, top:top + target[0], left:left + target[1]]
    got = res.resize_and_crop(images, target[1], target[0])
    assert tuple(got.shape[-2:]) == target
    assert (got - expected).abs().max().item() < 1e-6


def test_covering_size_is_diffusers_arithmetic_except_its_shortfall():
    """Every asked size (multiples of 8 up to 2048) with its 1024 bucket: the covering size is diffusers'
    int(size * ratio) wherever that covers the target; where a side falls short, that side is the target and
    nothing else moves."""
    wrong, shortfalls = [], 0
    for height in range(8, 2049, 8):
        for width in range(8, 2049, 8):
            bh, bw = PixArtImageProcessor.classify_height_width_bin(height, width, ratios=ASPECT_RATIO_1024_BIN)
            ratio = max(height / bh, width / bw)
            theirs = (int(bh * ratio), int(bw * ratio))
            ours = res.covering_size(bh, bw, height, width)
            if theirs[0] >= height and theirs[1] >= width:
                ok = ours == theirs
            else:
                shortfalls += 1
                ok = all(o == (want if t < want else t) and o - t in (0, 1)
                         for o, t, want in zip(ours, theirs, (height, width)))
            if not ok:
                wrong.append(((height, width), (bh, bw), ours, theirs))
    assert wrong == []
    assert shortfalls > 1000  # a common case, not a corner


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_resize_back_image_is_channels_last(channels):
    """ComfyUI IMAGE [B, H, W, C] in 0..1: the same pixels as diffusers on [B, C, H, W]."""
    image = torch.rand(2, 576, 1792, channels, generator=torch.Generator().manual_seed(channels))
    expected = PixArtImageProcessor.resize_and_crop_tensor(image.movedim(-1, 1), 1000, 300).movedim(1, -1)
    got = res.resize_back_image(image, 1000, 300)
    assert got.shape == (2, 300, 1000, channels) and got.is_contiguous()
    assert (got - expected).abs().max().item() < 1e-6


def test_resize_refuses_bad_input():
    with pytest.raises(res.ResolutionError, match=r"expected an IMAGE shaped \[batch, height, width, channels\], "
                                                  r"got \(64, 64, 3\)"):
        res.resize_back_image(torch.rand(64, 64, 3), 32, 32)
    with pytest.raises(res.ResolutionError, match=r"expected images shaped \[batch, channels, height, width\], "
                                                  r"got \(3, 64, 64\)"):
        res.resize_and_crop(torch.rand(3, 64, 64), 32, 32)
    with pytest.raises(res.ResolutionError, match=r"the target width must be a whole number of pixels >= 1, got 0"):
        res.resize_back_image(torch.rand(1, 64, 64, 3), 0, 32)
