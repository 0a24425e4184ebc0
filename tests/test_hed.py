"""HED edges against an independent re-implementation of the ControlNet 1.1 algorithm (numpy/OpenCV post-
processing, network written here with torch.nn.functional straight from the state dict), on random weights in
the real 37-key layout. No ComfyUI needed."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

cv2 = pytest.importorskip("cv2")

from pixart_delta.tiny.hed import random_hed_state_dict, write_hed  # noqa: E402
from fixture_files import HED_NARROW  # noqa: E402
from pixart_delta.tiny.io import save  # noqa: E402
from pixart_delta.loaders.files import CheckpointError  # noqa: E402
from pixart_delta.loaders.hed import load_hed, read_hed_state_dict  # noqa: E402
from pixart_delta.preprocessors.hed import HEDInputError, detect, detection_size  # noqa: E402


# ---- the reference ------------------------------------------------------------------------------------------

def ref_side_outputs(sd: dict, img_hwc_uint8: np.ndarray) -> list[np.ndarray]:
    """ControlNetHED_Apache2.forward on one HxWx3 RGB uint8 image, as float32 numpy maps."""
    w = {k: v.float() for k, v in sd.items()}
    h = torch.from_numpy(img_hwc_uint8.astype(np.float32)).permute(2, 0, 1)[None] - w["norm"]
    outs = []
    for i, n in enumerate((2, 2, 3, 3, 3), start=1):
        if i > 1:
            h = F.max_pool2d(h, kernel_size=2, stride=2)
        for j in range(n):
            h = F.relu(F.conv2d(h, w[f"block{i}.convs.{j}.weight"], w[f"block{i}.convs.{j}.bias"], padding=1))
        outs.append(F.conv2d(h, w[f"block{i}.projection.weight"], w[f"block{i}.projection.bias"])[0, 0].numpy())
    return outs


def ref_hed(sd: dict, img: np.ndarray, safe: bool) -> np.ndarray:
    """lllyasviel/ControlNet-v1-1-nightly annotator/hed: the map as uint8 HxW."""
    H, W = img.shape[:2]
    edges = [cv2.resize(e.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR) for e in ref_side_outputs(sd, img)]
    edge = 1 / (1 + np.exp(-np.mean(np.stack(edges, axis=2), axis=2).astype(np.float64)))
    if safe:
        y = edge.astype(np.float32) * 3.0
        edge = y.astype(np.int32).astype(np.float32) / 2.0
    return (edge * 255.0).clip(0, 255).astype(np.uint8)


def ref_scribble(detected_map: np.ndarray) -> np.ndarray:
    """controlnet_aux HEDdetector(scribble=True): nms(map, 127, 3.0), blur, > 4."""
    x = cv2.GaussianBlur(detected_map.astype(np.float32), (0, 0), 3.0)
    f1 = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8)
    f2 = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.uint8)
    f3 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    f4 = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8)
    y = np.zeros_like(x)
    for f in (f1, f2, f3, f4):
        np.putmask(y, cv2.dilate(x, kernel=f) == x, x)
    z = np.zeros_like(y, dtype=np.uint8)
    z[y > 127] = 255
    z = cv2.GaussianBlur(z, (0, 0), 3.0)
    z[z > 4] = 255
    z[z < 255] = 0
    return z


# ---- fixtures -----------------------------------------------------------------------------------------------

def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """Shapes on a gradient with noise: real edges plus texture, uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 90.0)], axis=2)
    img[h // 5: h // 2, w // 4: 3 * w // 4] = (230, 40, 60)
    img[(yy - 0.7 * h) ** 2 + (xx - 0.3 * w) ** 2 < (0.2 * min(h, w)) ** 2] = (20, 200, 240)
    img += rng.normal(0, 12, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def as_comfy(*imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs).astype(np.float32) / 255.0)


def levels(edge_image: torch.Tensor) -> np.ndarray:
    return np.rint(edge_image[..., 0].numpy() * 255.0).astype(np.int32)


@pytest.fixture(scope="module")
def hed_file(tmp_path_factory):
    return write_hed(tmp_path_factory.mktemp("hed") / "ControlNetHED.pth")   # full widths, fp16, like the real file


@pytest.fixture(scope="module")
def hed(hed_file):
    return load_hed(hed_file), read_hed_state_dict(hed_file)


# ---- tests --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("safe", [False, True])
@pytest.mark.parametrize("size", [(64, 96), (75, 53)])
def test_map_matches_reference_algorithm(hed, safe, size):
    model, sd = hed
    img = make_image(*size, seed=size[0])
    ours = levels(detect(model, as_comfy(img), safe=safe))[0]
    ref = ref_hed(sd, img, safe).astype(np.int32)
    assert ours.shape == ref.shape
    assert len(np.unique(ref)) > (2 if safe else 40)          # the maps are not saturated
    assert np.mean(ours == ref) >= 0.999
    assert np.abs(ours - ref).max() <= 1


def test_safe_map_has_three_levels(hed):
    model, _ = hed
    out = detect(model, as_comfy(make_image(64, 64, 1), make_image(64, 64, 2)), safe=True)
    assert set(np.unique(levels(out)).tolist()) <= {0, 127, 255}
    assert len(np.unique(levels(out))) == 3


def test_output_is_white_on_black_rgb_same_size(hed):
    model, _ = hed
    out = detect(model, as_comfy(make_image(48, 80, 3)))
    assert out.shape == (1, 48, 80, 3) and out.dtype == torch.float32
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_batch_equals_single_runs(hed):
    model, _ = hed
    imgs = [make_image(64, 80, s) for s in range(4)]
    batched = detect(model, as_comfy(*imgs), safe=False)
    for i, img in enumerate(imgs):
        single = detect(model, as_comfy(img))
        assert torch.equal(batched[i], single[0])
    chunked = detect(model, as_comfy(*imgs), chunk=3)
    assert torch.equal(chunked, batched)


def test_scribble_matches_opencv_reference(hed):
    model, sd = hed
    img = make_image(96, 96, 7)
    ours = levels(detect(model, as_comfy(img), scribble_lines=True))[0]
    ref = ref_scribble(ref_hed(sd, img, safe=False)).astype(np.int32)
    assert set(np.unique(ours).tolist()) <= {0, 255}
    assert 0.02 < np.mean(ref == 255) < 0.98                  # lines, not an empty or full map
    assert np.mean(ours == ref) >= 0.99


def test_gray_and_rgba_inputs_are_handled(hed):
    model, _ = hed
    rgb = as_comfy(make_image(64, 64, 4))
    gray = rgb.mean(-1, keepdim=True)
    assert torch.equal(detect(model, gray), detect(model, gray.expand(-1, -1, -1, 3)))
    opaque = torch.cat([rgb, torch.ones_like(rgb[..., :1])], -1)
    assert torch.equal(detect(model, opaque), detect(model, rgb))
    clear = torch.cat([rgb, torch.zeros_like(rgb[..., :1])], -1)   # fully transparent = white
    assert torch.equal(detect(model, clear), detect(model, torch.ones_like(rgb)))


def test_bad_images_give_clear_errors(hed):
    model, _ = hed
    with pytest.raises(HEDInputError, match="5 channels"):
        detect(model, torch.rand(1, 32, 32, 5))
    with pytest.raises(HEDInputError, match="at least 16 px"):
        detect(model, torch.rand(1, 8, 32, 3))


def test_resolution_sets_the_detection_size_and_keeps_the_output_size(hed):
    assert detection_size(1000, 750, 512) == (704, 512)      # 682.7 -> 704, 512 -> 512 (ControlNet 1.1 rounding)
    assert detection_size(300, 200, 0) == (300, 200)
    assert detection_size(40, 40, 64) == (64, 64)
    model, _ = hed
    out = detect(model, as_comfy(make_image(50, 70, 5)), resolution=64)
    assert out.shape == (1, 50, 70, 3)


def test_fp16_fp32_and_safetensors_files_load_alike(tmp_path):
    sd16 = random_hed_state_dict(HED_NARROW, seed=3)
    paths = [save(tmp_path / "a.pth", sd16), save(tmp_path / "b.pth", {k: v.float() for k, v in sd16.items()}),
             save(tmp_path / "c.safetensors", sd16)]
    loaded = [read_hed_state_dict(p) for p in paths]
    for sd in loaded:
        assert len(sd) == 37 and all(v.dtype == torch.float32 for v in sd.values())
        assert all(torch.equal(sd[k], loaded[0][k]) for k in sd)


def test_wrong_files_are_refused_with_clear_errors(tmp_path):
    from pixart_delta.tiny.tiny_vae import random_taesd_decoder
    p = save(tmp_path / "taesd_decoder.pth", random_taesd_decoder())
    with pytest.raises(CheckpointError, match="tiny VAE"):
        read_hed_state_dict(p)
    sd = random_hed_state_dict(HED_NARROW)
    sd["block3.convs.1.weight"] = sd["block3.convs.1.weight"][:, :4]
    with pytest.raises(CheckpointError, match="wrong shape"):
        read_hed_state_dict(save(tmp_path / "bad.pth", sd))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    evil = tmp_path / "evil.pth"
    torch.save({"norm": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        read_hed_state_dict(evil)
