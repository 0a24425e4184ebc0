"""DPT depth and ADE20K segmentation against a restatement of ControlNet++'s inference code (liming-ai/
ControlNet_Plus_Plus, branch `inference`: cv_utils.resize_image, depth_estimator.py, image_segmentor.py) with the
transformers 4.38.1 steps it runs (pipelines/depth_estimation.py postprocess; DPTImageProcessor /
SegformerImageProcessor preprocess as numpy + PIL; post_process_semantic_segmentation), written here with
numpy, PIL and OpenCV one image at a time around the same transformers model, called as the reference calls it.
Random weights in the real transformers layouts at reduced width. No ComfyUI needed."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

cv2 = pytest.importorskip("cv2")
from PIL import Image  # noqa: E402

from pixart_delta.loaders.depth import load_dpt  # noqa: E402
from pixart_delta.loaders.files import CheckpointError  # noqa: E402
from pixart_delta.loaders.segmentation import load_upernet  # noqa: E402
from pixart_delta.preprocessors.ade20k_palette import ADE20K_PALETTE  # noqa: E402
from pixart_delta.preprocessors.depth import estimate_depth, numpy_uint8_cast  # noqa: E402
from pixart_delta.preprocessors.hf_image_processor import pil_resize  # noqa: E402
from pixart_delta.preprocessors.segmentation import segment  # noqa: E402
from pixart_delta.tiny.depth import DPT_PREPROCESSOR, write_dpt_folder  # noqa: E402
from pixart_delta.tiny.segmentation import SEGFORMER_PREPROCESSOR, write_upernet_folder  # noqa: E402


# ---- the reference, one image at a time ---------------------------------------------------------------------

def ref_hwc3(x: np.ndarray) -> np.ndarray:
    """controlnet_aux.util.HWC3."""
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] == 3:
        return x
    if x.shape[2] == 1:
        return np.concatenate([x, x, x], axis=2)
    color = x[:, :, 0:3].astype(np.float32)
    alpha = x[:, :, 3:4].astype(np.float32) / 255.0
    return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def ref_resize_image(img: np.ndarray, resolution: int, interpolation=None) -> np.ndarray:
    """ControlNet_Plus_Plus cv_utils.resize_image: the long side to `resolution`, multiples of 64."""
    H, W = float(img.shape[0]), float(img.shape[1])
    k = float(resolution) / max(H, W)
    H, W = int(np.round(H * k / 64.0)) * 64, int(np.round(W * k / 64.0)) * 64
    if interpolation is None:
        interpolation = cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA
    return cv2.resize(img, (W, H), interpolation=interpolation)


def ref_processor(image: Image.Image, cfg: dict, dpt: bool) -> torch.Tensor:
    """DPTImageProcessor / SegformerImageProcessor.preprocess (transformers 4.38.1) on one PIL image."""
    arr = np.array(image)
    size = cfg["size"]
    out_h, out_w = size["height"], size["width"]
    if dpt:   # get_resize_output_image_size
        in_h, in_w = arr.shape[:2]
        sh, sw = out_h / in_h, out_w / in_w
        if cfg["keep_aspect_ratio"]:
            if abs(1 - sw) < abs(1 - sh):
                sh = sw
            else:
                sw = sh
        m = cfg["ensure_multiple_of"]
        out_h, out_w = round(sh * in_h / m) * m, round(sw * in_w / m) * m
    if (out_h, out_w) != arr.shape[:2]:
        arr = np.array(Image.fromarray(arr).resize((out_w, out_h), resample=cfg["resample"]))
    arr = (arr * cfg["rescale_factor"]).astype(np.float32)
    mean = np.array(cfg["image_mean"], dtype=np.float32)
    std = np.array(cfg["image_std"], dtype=np.float32)
    arr = (arr - mean) / std
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]


def ref_depth(model, cfg: dict, image: np.ndarray, detect_resolution: int, image_resolution: int) -> np.ndarray:
    """DepthEstimator.__call__ with pipeline("depth-estimation") of transformers 4.38.1."""
    image = ref_resize_image(ref_hwc3(image), detect_resolution)
    pil = Image.fromarray(image).convert("RGB")
    with torch.no_grad():
        predicted_depth = model(pixel_values=ref_processor(pil, cfg, dpt=True)).predicted_depth
    prediction = F.interpolate(predicted_depth.unsqueeze(1), size=pil.size[::-1], mode="bicubic", align_corners=False)
    output = prediction.squeeze().cpu().numpy()
    formatted = (output * 255 / np.max(output)).astype("uint8")
    depth = np.array(Image.fromarray(formatted))
    return ref_resize_image(ref_hwc3(depth), image_resolution)


def ref_segment(model, cfg: dict, image: np.ndarray, detect_resolution: int, image_resolution: int) -> np.ndarray:
    """ImageSegmentor.__call__ (SegformerImageProcessor + UperNet + post_process_semantic_segmentation)."""
    image = ref_resize_image(ref_hwc3(image), detect_resolution)
    pil = Image.fromarray(image)
    with torch.inference_mode():
        logits = model(ref_processor(pil, cfg, dpt=False)).logits
        resized = F.interpolate(logits[0].unsqueeze(0), size=pil.size[::-1], mode="bilinear", align_corners=False)
        seg = resized[0].argmax(dim=0).numpy()
    color_seg = np.zeros((seg.shape[0], seg.shape[1], 3), dtype=np.uint8)
    for label, color in enumerate(ADE20K_PALETTE):
        color_seg[seg == label, :] = color
    return ref_resize_image(color_seg, image_resolution, interpolation=cv2.INTER_NEAREST)


# ---- fixtures -----------------------------------------------------------------------------------------------

def make_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 90.0)], axis=2)
    img[h // 5: h // 2, w // 4: 3 * w // 4] = (230, 40, 60)
    img[(yy - 0.7 * h) ** 2 + (xx - 0.3 * w) ** 2 < (0.2 * min(h, w)) ** 2] = (20, 200, 240)
    img += rng.normal(0, 12, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def as_comfy(*imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).float() / 255.0


def levels(out: torch.Tensor) -> np.ndarray:
    return (out * 255.0).round().to(torch.uint8).numpy()


def report(name: str, ours: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    diff = np.abs(ours.astype(np.int32) - ref.astype(np.int32))
    equal = 100.0 * float((diff == 0).mean())
    print(f"{name}: max abs diff {diff.max()}, {equal:.4f} % of values equal ({diff.size} values)")
    return int(diff.max()), equal


@pytest.fixture(scope="module")
def dpt_folders(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("dpt")
    return {"large": write_dpt_folder(root / "dpt-large"),
            "hybrid": write_dpt_folder(root / "dpt-hybrid-midas", hybrid=True, seed=1)}


@pytest.fixture(scope="module")
def upernet_folder(tmp_path_factory, one_torch_thread):
    return write_upernet_folder(tmp_path_factory.mktemp("upernet") / "upernet-convnext-small")


# ---- parity -------------------------------------------------------------------------------------------------

# (input height, width, detect resolution): landscape, portrait, upscaled detect, downscaled with rounding
DEPTH_CASES = [(256, 384, 384), (384, 256, 384), (192, 128, 384), (320, 448, 256)]


@pytest.mark.parametrize("kind", ["large", "hybrid"])
def test_depth_equals_controlnet_plus_plus(dpt_folders, kind):
    model, processing = load_dpt(dpt_folders[kind])
    for i, (h, w, res) in enumerate(DEPTH_CASES):
        imgs = [make_image(h, w, seed=10 * i + j) for j in range(2)]
        ours = levels(estimate_depth(model, processing, as_comfy(*imgs), res))
        ref = np.stack([ref_depth(model, DPT_PREPROCESSOR, im, res, max(h, w)) for im in imgs])
        assert ours.shape == ref.shape == (2, h, w, 3)
        # one image per forward: the same floats as the reference's, so the same levels
        single = levels(estimate_depth(model, processing, as_comfy(*imgs), res, chunk=1))
        assert report(f"depth {kind} {h}x{w} @ {res}, one image per forward", single, ref) == (0, 100.0)
        # batched: the batch's matrix kernels round differently in the last bits, and `depth * 255 / max` cast
        # to uint8 truncates, so a pixel on a level boundary can move by one
        worst, equal = report(f"depth {kind} {h}x{w} @ {res}, batched", ours, ref)
        assert worst <= 1 and equal >= 99.9
        assert len(np.unique(ref)) > 20   # a real map, not a flat one


def test_depth_with_aspect_kept_and_bilinear(tmp_path, one_torch_thread):
    cfg = dict(DPT_PREPROCESSOR, keep_aspect_ratio=True, ensure_multiple_of=32, resample=2)
    folder = write_dpt_folder(tmp_path / "dpt", preprocessor=cfg)
    model, processing = load_dpt(folder)
    img = make_image(200, 200, seed=3)    # transformers' ViT DPT reshapes its tokens to a square grid
    ours = levels(estimate_depth(model, processing, as_comfy(img), 320))
    ref = cv2.resize(ref_depth(model, cfg, img, 320, 320), (200, 200), interpolation=cv2.INTER_AREA)[None]
    worst, equal = report("depth keep_aspect_ratio/32/bilinear", ours, ref)
    assert worst <= 1 and equal >= 99.9
    for h, w in [(256, 384), (384, 256), (320, 448), (448, 320), (128, 640)]:   # DPT's output size, restated
        sh, sw = 384 / h, 384 / w
        sh, sw = (sw, sw) if abs(1 - sw) < abs(1 - sh) else (sh, sh)
        assert processing.output_size(h, w) == (round(sh * h / 32) * 32, round(sw * w / 32) * 32)


def test_depth_without_preprocessor_config_uses_the_4_38_defaults(tmp_path, one_torch_thread):
    model, processing = load_dpt(write_dpt_folder(tmp_path / "dpt", preprocessor=None))
    assert (processing.size, processing.resample, processing.keep_aspect_ratio) == ((384, 384), 3, False)
    assert processing.mean == processing.std == (0.5, 0.5, 0.5)


def test_segmentation_equals_controlnet_plus_plus(upernet_folder):
    model, processing = load_upernet(upernet_folder)
    for i, (h, w, res) in enumerate([(256, 384, 512), (384, 256, 256), (192, 320, 320)]):
        imgs = [make_image(h, w, seed=7 + 10 * i + j) for j in range(2)]
        ours = levels(segment(model, processing, as_comfy(*imgs), res))
        ref = np.stack([ref_segment(model, SEGFORMER_PREPROCESSOR, im, res, max(h, w)) for im in imgs])
        assert ours.shape == ref.shape == (2, h, w, 3)
        worst, equal = report(f"segmentation {h}x{w} @ {res}", ours, ref)
        assert equal >= 99.9   # an argmax between two near-equal scores could flip in batched kernels
        assert len(np.unique(ref.reshape(-1, 3), axis=0)) > 3   # several classes


def test_gray_and_rgba_inputs_as_hwc3(dpt_folders):
    model, processing = load_dpt(dpt_folders["large"])
    img = make_image(128, 192, seed=5)
    gray = img[..., :1]
    rgba = np.concatenate([img, np.full_like(img[..., :1], 255)], -1)
    for x in (gray, rgba):
        ours = levels(estimate_depth(model, processing, as_comfy(x), 384))
        ref = ref_depth(model, DPT_PREPROCESSOR, x, 384, 192)[None]
        assert report(f"depth {x.shape[-1]}-channel input", ours, ref)[1] >= 99.9


# ---- the pieces against their references --------------------------------------------------------------------

@pytest.mark.parametrize("shape,size,resample", [
    ((256, 384), (384, 384), 3), ((384, 256), (384, 384), 3), ((448, 640), (512, 512), 2),
    ((512, 512), (384, 384), 3), ((640, 448), (512, 448), 2), ((100, 37), (384, 384), 3)])
def test_pil_resize_is_pils(shape, size, resample):
    """Equal to the installed Pillow where its pass order is 10.3's (Pillow 13 goes vertical first when the width
    grows and the height shrinks; ControlNet++ pins Pillow 10.3, horizontal first)."""
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(img).resize(size[::-1], resample=resample))
    ours = pil_resize(torch.from_numpy(img).permute(2, 0, 1)[None], size, resample)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(ours, ref)


def test_uint8_cast_is_numpys():
    x = np.array([-300.2, -18.3, -1.5, -0.99, -0.2, 0.0, 0.7, 127.5, 254.9999, 255.0, 255.9, 300.0], np.float32)
    assert np.array_equal(numpy_uint8_cast(torch.from_numpy(x)).numpy(), x.astype(np.uint8))


def test_palette_is_controlnet_aux_0_0_6s():
    assert len(ADE20K_PALETTE) == 150
    assert ADE20K_PALETTE[:3] == ((120, 120, 120), (180, 120, 120), (6, 230, 230))
    assert ADE20K_PALETTE[-2:] == ((102, 255, 0), (92, 0, 255))
    assert ADE20K_PALETTE[6] == ADE20K_PALETTE[48] == (140, 140, 140)
    assert len(set(ADE20K_PALETTE)) == 149


def test_hybrid_backbone_is_transformers_bit(dpt_folders):
    from transformers.models.bit.modeling_bit import BitBackbone
    model, _ = load_dpt(dpt_folders["hybrid"])
    assert isinstance(model.dpt.embeddings.backbone, BitBackbone)


def test_pytorch_model_bin_loads_with_weights_only(tmp_path, dpt_folders):
    from safetensors.torch import load_file
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (folder / name).write_bytes((dpt_folders["large"] / name).read_bytes())
    sd = load_file(str(dpt_folders["large"] / "model.safetensors"))
    torch.save(sd, folder / "pytorch_model.bin")
    model, _ = load_dpt(folder)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


# ---- bad folders and files ----------------------------------------------------------------------------------

class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _copy(src, dst):
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_bad_folders_are_named(tmp_path, dpt_folders, upernet_folder):
    with pytest.raises(CheckpointError, match="not a folder"):
        load_dpt(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"empty: no config.json; .*found an empty folder"):
        load_dpt(empty)
    with pytest.raises(CheckpointError, match=r"model_type 'upernet'.*expected 'dpt'"):
        load_dpt(upernet_folder)
    with pytest.raises(CheckpointError, match=r"model_type 'dpt'.*expected 'upernet'"):
        load_upernet(dpt_folders["large"])

    swapped = _copy(dpt_folders["large"], tmp_path / "swapped")
    (swapped / "model.safetensors").write_bytes((upernet_folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"swapped/model.safetensors: not the weights of this .*missing \d+ of"):
        load_dpt(swapped)

    narrower = _copy(dpt_folders["large"], tmp_path / "narrower")
    cfg = json.loads((narrower / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (narrower / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"wrong shape.*intermediate.dense.weight \(64, 32\) \(expected \(48, 32\)\)"):
        load_dpt(narrower)

    html = _copy(dpt_folders["large"], tmp_path / "html")
    (html / "model.safetensors").write_text("<!DOCTYPE html><html><title>Sign in</title></html>")
    with pytest.raises(CheckpointError, match="HTML page"):
        load_dpt(html)

    cut = _copy(dpt_folders["large"], tmp_path / "cut")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_dpt(cut)

    evil = _copy(dpt_folders["large"], tmp_path / "evil")
    (evil / "model.safetensors").unlink()
    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(CheckpointError, match=r"refused.*builtins.print.*not executed"):
        load_dpt(evil)

    bad_json = _copy(dpt_folders["large"], tmp_path / "badjson")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"badjson/config.json: not valid JSON"):
        load_dpt(bad_json)


@pytest.mark.parametrize("change,message", [
    ({"resample": 1}, "resample 1 is not supported"),
    ({"size": {"shortest_edge": 384}}, "'size' is"),
    ({"image_mean": [0.5, 0.5]}, "'image_mean'"),
    ({"do_pad": True}, "do_pad is true"),
])
def test_bad_preprocessor_config_is_named(tmp_path, change, message):
    folder = write_dpt_folder(tmp_path / "dpt", preprocessor=dict(DPT_PREPROCESSOR, **change))
    with pytest.raises(CheckpointError, match=rf"preprocessor_config.json: .*{message}"):
        load_dpt(folder)


def test_upernet_with_other_class_count_is_refused(tmp_path, upernet_folder):
    folder = _copy(upernet_folder, tmp_path / "classes")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_labels"] = 19
    cfg.pop("id2label", None), cfg.pop("label2id", None)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="wrong shape|150 ADE20K"):
        load_upernet(folder)
