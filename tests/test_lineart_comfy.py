"""Canny and lineart nodes inside ComfyUI: a LoadImage -> node -> SaveImage graph (output sizes, levels), the
lineart model cached per file and managed by ComfyUI, the preprocessor pack's file location, wrong files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixart_delta.tools.comfy_runtime import ExecutionFailed
from pixart_delta.tiny import write_for_workflow
from pixart_delta.tiny.io import save

pytestmark = pytest.mark.comfyui


def graph(lineart_model="sk_model.pth", resolution=64) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "lineart_test_input.png"}},
        "2": {"class_type": "PixArtLineart", "inputs": {"image": ["1", 0], "model_name": lineart_model,
                                                        "resolution": resolution}},
        "3": {"class_type": "PixArtCanny", "inputs": {"image": ["1", 0], "low_threshold": 100,
                                                      "high_threshold": 200, "resolution": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "lineart_test"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "canny_test"}},
    }


@pytest.fixture(scope="module")
def picture(comfy, comfy_dirs):
    rng = np.random.default_rng(0)
    img = np.full((72, 104, 3), 40, np.uint8)
    img[20:60, 30:90] = (220, 60, 40)
    img = (img + rng.integers(0, 30, img.shape)).astype(np.uint8)
    Image.fromarray(img).save(comfy_dirs["input"] / "lineart_test_input.png")
    write_for_workflow({"a": {"inputs": {"m": "sk_model.pth"}}, "b": {"inputs": {"m": "sk_model2.pth"}}},
                       comfy_dirs["models"])
    return img


def saved(outputs: dict, node: str, out_dir) -> np.ndarray:
    (f,) = outputs[node]["images"]
    with Image.open(out_dir / f["subfolder"] / f["filename"]) as im:
        return np.asarray(im.convert("RGB"))


def lineart_module(comfy):
    import sys
    # the module ComfyUI imported the pack as (its name is the pack's path), not this test's own import
    name = comfy.node_classes["PixArtLineart"].__module__.replace(".nodes.lineart", ".loaders.lineart_comfy")
    return sys.modules[name]


def test_canny_and_lineart_through_the_executor(comfy, comfy_dirs, picture):
    import cv2
    out = comfy.run(graph())
    line = saved(out, "4", comfy_dirs["output"])
    edges = saved(out, "5", comfy_dirs["output"])
    assert line.shape == edges.shape == (72, 104, 3)          # the input size, detected at 64x128
    assert (line[..., 0] == line[..., 1]).all() and (line[..., 0] == line[..., 2]).all()
    assert len(np.unique(line)) > 20
    assert np.array_equal(edges[..., 0], cv2.Canny(picture, 100, 200))


def test_lineart_models_are_cached_and_managed_by_comfy(comfy, picture):
    import comfy.model_management as mm
    loader = lineart_module(comfy)
    comfy.run(graph("sk_model.pth"))
    comfy.run(graph("sk_model2.pth"))                          # the coarse model: a second cached patcher
    fine, coarse = loader.PATCHERS.values()
    assert fine is not coarse
    assert any(m.model is coarse for m in mm.current_loaded_models)
    mm.unload_all_models()
    comfy.run(graph("sk_model.pth"))
    assert set(map(id, loader.PATCHERS.values())) == {id(fine), id(coarse)}   # not read from disk again
    assert any(m.model is fine for m in mm.current_loaded_models)


def test_found_where_the_preprocessor_pack_keeps_them(comfy, tmp_path, monkeypatch):
    import folder_paths
    from pixart_delta.loaders.lineart_comfy import AUX_DIR, list_lineart_files, resolve_lineart_file
    from pixart_delta.tiny.lineart import write_lineart
    target = write_lineart(tmp_path.joinpath(*AUX_DIR, "sk_model2.pth"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "custom_nodes", ([str(tmp_path)], set()))
    real = folder_paths.get_full_path
    monkeypatch.setattr(folder_paths, "get_full_path", lambda f, n: None if f == "lineart" else real(f, n))
    assert "sk_model2.pth" in list_lineart_files()
    assert resolve_lineart_file("sk_model2.pth") == target
    with pytest.raises(ValueError, match=r"sk_model\.pth: lineart model not found; put sk_model\.pth / sk_model2"):
        resolve_lineart_file("sk_model.pth")


def test_wrong_file_in_the_lineart_folder_is_a_clear_error(comfy, comfy_dirs, picture):
    from pixart_delta.tiny.tiny_vae import random_taesd_decoder
    save(comfy_dirs["models"] / "lineart" / "taesd_decoder.pth", random_taesd_decoder())
    g = graph("taesd_decoder.pth")
    with pytest.raises(ExecutionFailed, match=r"taesd_decoder\.pth: not a lineart model.*tiny VAE"):
        comfy.run({k: g[k] for k in ("1", "2", "4")})
    comfy.run({k: graph()[k] for k in ("1", "2", "4")})         # the next prompt runs


def test_gray_and_rgba_images_through_the_nodes(comfy, picture):
    from pixart_delta.nodes.canny import PixArtCanny
    from pixart_delta.nodes.lineart import PixArtLineart
    rgb = torch.rand(2, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    for image in (rgb[..., :1], torch.cat([rgb, torch.ones_like(rgb[..., :1])], -1)):
        assert PixArtLineart.execute(image, "sk_model.pth", 64).result[0].shape == (2, 40, 56, 3)
        assert PixArtCanny.execute(image, 100, 200, 0).result[0].shape == (2, 40, 56, 3)
    with pytest.raises(ValueError, match="5 channels"):
        PixArtLineart.execute(torch.rand(1, 40, 56, 5), "sk_model.pth", 64)
