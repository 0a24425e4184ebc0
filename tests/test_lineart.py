"""Lineart maps against an independent restatement of ControlNet 1.1's lineart annotator (the generator written
here with torch.nn.functional straight from the state dict, lllyasviel/ControlNet-v1-1-nightly
annotator/lineart; pre/post-processing with OpenCV as annotator/util.py and gradio_lineart.py do), on random
weights in the real 24-key full-size layout. No ComfyUI needed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

cv2 = pytest.importorskip("cv2")

from pixart_delta.loaders.files import CheckpointError  # noqa: E402
from pixart_delta.loaders.identify import identify  # noqa: E402
from pixart_delta.loaders.lineart import load_lineart, read_lineart_state_dict  # noqa: E402
from pixart_delta.preprocessors.annotator import AnnotatorInputError  # noqa: E402
from pixart_delta.preprocessors.lineart import detect  # noqa: E402
from pixart_delta.tiny.io import save  # noqa: E402
from pixart_delta.tiny.lineart import random_lineart_state_dict, write_lineart  # noqa: E402
from test_canny import natural_image, ref_hwc3, ref_resize_image  # noqa: E402


# ---- the reference ------------------------------------------------------------------------------------------

def ref_generator(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """Generator(3, 1, 3).forward on [1,3,H,W] in 0..1: reflection pads, convs, affine-free instance norms."""
    w = {k: v.float() for k, v in sd.items()}

    def conv(h, name, pad=0, stride=1, reflect=0):
        if reflect:
            h = F.pad(h, (reflect,) * 4, mode="reflect")
        return F.conv2d(h, w[name + ".weight"], w[name + ".bias"], stride=stride, padding=pad)

    def norm(h):
        return F.instance_norm(h, eps=1e-5)

    h = F.relu(norm(conv(x, "model0.1", reflect=3)))
    h = F.relu(norm(conv(h, "model1.0", pad=1, stride=2)))
    h = F.relu(norm(conv(h, "model1.3", pad=1, stride=2)))
    for i in range(3):
        r = F.relu(norm(conv(h, f"model2.{i}.conv_block.1", reflect=1)))
        h = h + norm(conv(r, f"model2.{i}.conv_block.5", reflect=1))
    for name in ("model3.0", "model3.3"):
        h = F.conv_transpose2d(h, w[name + ".weight"], w[name + ".bias"], stride=2, padding=1, output_padding=1)
        h = F.relu(norm(h))
    return torch.sigmoid(conv(h, "model4.1", reflect=3))


def ref_lineart(sd: dict, img: np.ndarray, detect_resolution: int) -> np.ndarray:
    """ControlNet 1.1 gradio_lineart.py: the hint as uint8 HxW (white lines on black), at the image's size;
    detect_resolution 0: no resize (the network at the image's size)."""
    H, W = img.shape[:2]
    small = ref_resize_image(ref_hwc3(img), detect_resolution) if detect_resolution else ref_hwc3(img)
    x = torch.from_numpy(small).float().permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        line = ref_generator(sd, x)[0, 0].numpy()
    line = (line * 255.0).clip(0, 255).astype(np.uint8)
    detected = ref_hwc3(line)
    detected = cv2.resize(detected, (W, H), interpolation=cv2.INTER_LINEAR)
    return 255 - detected[..., 0]


# ---- fixtures -----------------------------------------------------------------------------------------------

def as_comfy(*imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs).astype(np.float32) / 255.0)


def levels(out: torch.Tensor) -> np.ndarray:
    return np.rint(out[..., 0].numpy() * 255.0).astype(np.int32)


@pytest.fixture(scope="module")
def lineart_file(tmp_path_factory):
    return write_lineart(tmp_path_factory.mktemp("lineart") / "sk_model.pth")   # full size, fp32, like the real file


@pytest.fixture(scope="module")
def lineart(lineart_file):
    return load_lineart(lineart_file), read_lineart_state_dict(lineart_file)


def run(model, images, resolution, **kw):
    with torch.no_grad():
        return detect(model, images, resolution, **kw)


# ---- tests --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,resolution", [((64, 128), 64),     # no resize
                                             ((120, 176), 128),   # Lanczos up to 128x192, map down to the input
                                             ((200, 150), 96),    # area down to 128x128, map up to the input
                                             ((96, 80), 0)])      # the input size
def test_map_matches_reference_annotator(lineart, size, resolution):
    model, sd = lineart
    img = natural_image(*size, seed=size[0])
    ours = levels(run(model, as_comfy(img), resolution))[0]
    ref = ref_lineart(sd, img, resolution).astype(np.int32)
    assert ours.shape == ref.shape == size
    assert len(np.unique(ref)) > 60                                # the maps are not saturated
    assert np.mean(np.abs(ours - ref) <= 1) >= 0.999
    assert np.abs(ours - ref).max() <= 1


def test_the_file_is_the_published_layout(lineart_file):
    sd = torch.load(lineart_file, weights_only=True)
    assert len(sd) == 24 and all(v.dtype == torch.float32 for v in sd.values())
    assert sum(v.numel() for v in sd.values()) == 4_290_945          # 17,163,780 bytes of fp32, as sk_model.pth
    assert identify(sd).family == "lineart"


def test_output_is_white_on_black_rgb_same_size(lineart):
    model, _ = lineart
    out = run(model, as_comfy(natural_image(48, 80, 3)), 64)
    assert out.shape == (1, 48, 80, 3) and out.dtype == torch.float32
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_batch_equals_single_runs(lineart):
    model, _ = lineart
    imgs = [natural_image(64, 64, s) for s in range(3)]
    batched = run(model, as_comfy(*imgs), 64)
    for i, img in enumerate(imgs):
        assert torch.allclose(batched[i], run(model, as_comfy(img), 64)[0], atol=1.01 / 255)
    assert torch.allclose(run(model, as_comfy(*imgs), 64, chunk=2), batched, atol=1.01 / 255)


def test_gray_and_rgba_inputs_follow_hwc3(lineart):
    model, _ = lineart
    rgb = natural_image(64, 64, 4)
    gray = as_comfy(rgb)[..., :1]
    assert torch.equal(run(model, gray, 64), run(model, gray.expand(-1, -1, -1, 3), 64))
    clear = torch.cat([as_comfy(rgb), torch.zeros(1, 64, 64, 1)], -1)   # fully transparent = white
    assert torch.equal(run(model, clear, 64), run(model, torch.ones(1, 64, 64, 3), 64))


def test_bad_images_give_clear_errors(lineart):
    model, _ = lineart
    with pytest.raises(AnnotatorInputError, match="5 channels"):
        detect(model, torch.rand(1, 32, 32, 5), 0)
    with pytest.raises(AnnotatorInputError, match="at least 8 px"):
        detect(model, torch.rand(1, 4, 32, 3), 0)


def test_wrong_files_are_refused_with_clear_errors(tmp_path):
    from pixart_delta.tiny.hed import random_hed_state_dict
    from fixture_files import HED_NARROW
    p = save(tmp_path / "sk_model.pth", random_hed_state_dict(HED_NARROW))
    with pytest.raises(CheckpointError, match=r"sk_model\.pth: not a lineart model \(this looks like the HED"):
        read_lineart_state_dict(p)
    sd = random_lineart_state_dict()
    sd["model2.1.conv_block.5.weight"] = sd["model2.1.conv_block.5.weight"][:, :8]
    with pytest.raises(CheckpointError, match="wrong shape.*model2.1.conv_block.5.weight"):
        read_lineart_state_dict(save(tmp_path / "bad.pth", sd))
    del sd["model4.1.bias"]
    with pytest.raises(CheckpointError, match="incomplete lineart model.*model4.1.bias"):
        read_lineart_state_dict(save(tmp_path / "cut.pth", sd))
    (tmp_path / "page.pth").write_text("<!doctype html><html><title>Sign in</title></html>")
    with pytest.raises(CheckpointError, match="HTML page"):
        read_lineart_state_dict(tmp_path / "page.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"model0.1.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused"):
        read_lineart_state_dict(tmp_path / "evil.pth")
