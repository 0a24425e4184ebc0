"""The DPT depth and ADE20K segmentation nodes inside ComfyUI on tiny random transformers folders: a picture through
LoadImage -> node -> SaveImage (512 px, as in the server test), the model cached per folder and managed by ComfyUI,
the Hugging Face cache location, wrong folders named in the error."""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from pixart_delta.tiny import write_for_workflow
from pixart_delta.tools.comfy_runtime import ExecutionFailed

pytestmark = pytest.mark.comfyui

NODES = {
    "PixArtDepthDPT": ("depth/dpt-large", "depth"),
    "PixArtSegmentationADE20K": ("segmentation/upernet-convnext-small", "segmentation"),
}


def graph(node: str, model: str, image: str, resolution: int) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": node, "inputs": {"image": ["1", 0], "model_name": model, "resolution": resolution}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": node}},
    }


def picture(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255.0 / w, yy * 255.0 / h, np.full((h, w), 80.0)], -1)
    img[h // 4: h // 2, w // 5: 3 * w // 5] = (230, 40, 60)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def ready(comfy, comfy_dirs, one_torch_thread):
    for node, (rel, _) in NODES.items():
        write_for_workflow(graph(node, rel.split("/", 1)[1], "x.png", 64), comfy_dirs["models"])
    Image.fromarray(picture(512, 512)).save(comfy_dirs["input"] / "cnpp_512.png")
    Image.fromarray(picture(120, 176)).save(comfy_dirs["input"] / "cnpp_small.png")
    return comfy_dirs


def saved(outputs, out_dir):
    return [out_dir / f["subfolder"] / f["filename"] for f in outputs["3"]["images"]]


@pytest.mark.parametrize("node", list(NODES))
def test_512_picture_through_the_node(comfy, ready, node):
    rel, _ = NODES[node]
    out = comfy.run(graph(node, rel.split("/", 1)[1], "cnpp_512.png", 384 if "Depth" in node else 512))
    (path,) = saved(out, ready["output"])
    with Image.open(path) as im:
        assert im.size == (512, 512)
        a = np.asarray(im.convert("RGB"))
    if "Depth" in node:
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()
        assert len(np.unique(a)) > 10
    else:
        from pixart_delta.preprocessors.ade20k_palette import ADE20K_PALETTE
        colours = {tuple(c) for c in np.unique(a.reshape(-1, 3), axis=0).tolist()}
        assert len(colours) > 1 and colours <= set(ADE20K_PALETTE)


@pytest.mark.parametrize("node", list(NODES))
def test_output_at_the_input_size(comfy, ready, node):
    rel, _ = NODES[node]
    out = comfy.run(graph(node, rel.split("/", 1)[1], "cnpp_small.png", 128))
    (path,) = saved(out, ready["output"])
    with Image.open(path) as im:
        assert im.size == (176, 120)


def _loader(comfy, node: str, name: str):
    return sys.modules[comfy.node_classes[node].__module__.replace(f".nodes.{name}", f".loaders.{name}_comfy")]


@pytest.mark.parametrize("node", list(NODES))
def test_model_is_cached_and_managed_by_comfy(comfy, ready, node):
    import comfy.model_management as mm
    rel, folder = NODES[node]
    loader = _loader(comfy, node, folder)
    g = graph(node, rel.split("/", 1)[1], "cnpp_small.png", 64)
    comfy.run(g)
    patcher = loader.PATCHERS.values()[-1]
    assert any(m.model is patcher for m in mm.current_loaded_models)
    mm.unload_all_models()
    g["2"]["inputs"]["resolution"] = 128            # not a cached result: the node runs again
    comfy.run(g)
    assert patcher in loader.PATCHERS.values()      # not read from disk again
    assert any(m.model is patcher for m in mm.current_loaded_models)
    weights = ready["models"] / rel / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1))   # changed on disk: read again
    g["2"]["inputs"]["resolution"] = 192
    comfy.run(g)
    assert loader.PATCHERS.values()[-1] is not patcher


def test_found_in_the_hugging_face_cache(comfy, ready, tmp_path, monkeypatch):
    from pixart_delta.loaders.depth_comfy import list_depth_models, resolve_depth_model
    from pixart_delta.tiny.depth import write_dpt_folder
    snapshot = tmp_path / "models--Intel--dpt-hybrid-midas" / "snapshots" / "abc123"
    write_dpt_folder(snapshot, hybrid=True)
    (tmp_path / "models--Intel--dpt-hybrid-midas" / "refs").mkdir()
    (tmp_path / "models--Intel--dpt-hybrid-midas" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert "Intel/dpt-hybrid-midas" in list_depth_models()
    assert "Intel/dpt-large" not in list_depth_models()
    assert resolve_depth_model("Intel/dpt-hybrid-midas") == snapshot


@pytest.mark.parametrize("node", list(NODES))
def test_wrong_folders_are_named(comfy, ready, node):
    rel, folder = NODES[node]
    root = ready["models"] / folder
    other = "segmentation/upernet-convnext-small" if "Depth" in node else "depth/dpt-large"
    wrong = root / "wrong-model"
    if not wrong.exists():
        shutil.copytree(ready["models"] / other, wrong)
    with pytest.raises(ExecutionFailed, match=r"wrong-model.*model_type '(upernet|dpt)'.*expected '(dpt|upernet)'"):
        comfy.run(graph(node, "wrong-model", "cnpp_small.png", 64))
    no_weights = root / "no-weights"
    no_weights.mkdir(exist_ok=True)
    shutil.copy(ready["models"] / rel / "config.json", no_weights / "config.json")
    with pytest.raises(ExecutionFailed, match=r"no-weights: no weights; expected model.safetensors"):
        comfy.run(graph(node, "no-weights", "cnpp_small.png", 64))
    with pytest.raises(ExecutionFailed, match=r"missing-folder: no such model folder"):
        comfy.run(graph(node, "missing-folder", "cnpp_small.png", 64))
    comfy.run(graph(node, rel.split("/", 1)[1], "cnpp_small.png", 256))   # the next prompt runs
