"""HED node inside ComfyUI: the bundled workflows on tiny random models (output sizes, levels), the model
cached between runs and managed by ComfyUI, the preprocessor pack's file location, bad input."""
from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from pixart_delta.tools.comfy_runtime import PACK_ROOT, ExecutionFailed
from pixart_delta.tiny.io import save
from pixart_delta.tiny import write_for_workflow
from pixart_delta.tiny.tiny_vae import random_taesd_decoder

pytestmark = pytest.mark.comfyui


def api(name: str) -> dict:
    return json.loads((PACK_ROOT / "workflows" / "api" / f"{name}.json").read_text())


def saved(outputs: dict, node: str, out_dir) -> list:
    return [out_dir / f["subfolder"] / f["filename"] for f in outputs[node]["images"]]


def comfy_hed_loader(comfy):
    """The module ComfyUI imported the pack as (its name is the pack's path), not this test's own import."""
    return sys.modules[comfy.node_classes["PixArtHEDEdgeDetector"].__module__.replace(".nodes.hed", ".loaders.hed_comfy")]


@pytest.fixture(scope="module")
def hed_ready(comfy, comfy_dirs):
    graph = api("hed_edges")
    write_for_workflow(graph, comfy_dirs["models"])
    rng = np.random.default_rng(0)
    img = np.zeros((120, 176, 3), np.uint8)
    img[30:90, 40:130] = (220, 60, 40)
    img = (img + rng.integers(0, 30, img.shape)).astype(np.uint8)
    Image.fromarray(img).save(comfy_dirs["input"] / "hed_test_input.png")
    graph["1"]["inputs"]["image"] = "hed_test_input.png"
    for node in ("3", "4"):
        graph[node]["inputs"]["resolution"] = 128     # detection at 128x192 (an upscale), kept small for speed
    return graph


def test_hed_edges_workflow(comfy, comfy_dirs, hed_ready):
    out = comfy.run(hed_ready)
    levels = {}
    for node in ("5", "6", "7"):
        (path,) = saved(out, node, comfy_dirs["output"])
        with Image.open(path) as im:
            assert im.size == (176, 120)                       # same size as the input, at any detection size
            a = np.asarray(im.convert("RGB"))
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()
        levels[node] = set(np.unique(a).tolist())
    assert len(levels["5"]) > 10
    assert levels["6"] <= {0, 127, 255}
    assert levels["7"] <= {0, 255}


def test_model_is_cached_and_managed_by_comfy(comfy, hed_ready):
    import comfy.model_management as mm
    hed_loader = comfy_hed_loader(comfy)
    hed_ready = {k: hed_ready[k] for k in ("1", "2", "5")}
    comfy.run(hed_ready)
    (patcher,) = hed_loader.PATCHERS.values()
    assert any(m.model is patcher for m in mm.current_loaded_models)
    mm.unload_all_models()
    assert not any(m.model is patcher for m in mm.current_loaded_models)
    comfy.run(hed_ready)
    assert hed_loader.PATCHERS.values() == [patcher]          # not read from disk again
    assert any(m.model is patcher for m in mm.current_loaded_models)
    path = hed_loader.resolve_hed_file(hed_ready["2"]["inputs"]["model_name"])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))     # the file changed on disk: read again
    comfy.run(hed_ready)
    (reread,) = hed_loader.PATCHERS.values()
    assert reread is not patcher
    assert any(m.model is reread for m in mm.current_loaded_models)


def test_free_memory_drops_the_cached_model(comfy, hed_ready):
    """ComfyUI's prompt worker takes /free's flags with PromptQueue.get_flags and then drops every node output; the
    pack's cached models go at the same moment, and only for free_memory (unload_models keeps RAM models)."""
    import execution
    hed_loader = comfy_hed_loader(comfy)
    hed_ready = {k: hed_ready[k] for k in ("1", "2", "5")}
    comfy.run(hed_ready)
    (patcher,) = hed_loader.PATCHERS.values()
    queue = execution.PromptQueue(types.SimpleNamespace())
    queue.set_flag("unload_models", True)
    assert queue.get_flags() == {"unload_models": True}
    assert hed_loader.PATCHERS.values() == [patcher]
    queue.set_flag("free_memory", True)
    assert queue.get_flags(reset=False) == {"free_memory": True}      # looked at, not taken: nothing dropped
    assert hed_loader.PATCHERS.values() == [patcher]
    assert queue.get_flags() == {"free_memory": True}
    assert len(hed_loader.PATCHERS) == 0
    comfy.run(hed_ready)
    (reread,) = hed_loader.PATCHERS.values()
    assert reread is not patcher


def test_found_where_the_preprocessor_pack_keeps_it(comfy, comfy_dirs, tmp_path, monkeypatch):
    import folder_paths
    from pixart_delta.tiny.hed import write_hed
    from fixture_files import HED_NARROW
    from pixart_delta.loaders.hed_comfy import AUX_SUBPATH, list_hed_files, resolve_hed_file
    target = write_hed(tmp_path.joinpath(*AUX_SUBPATH), widths=HED_NARROW)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "custom_nodes", ([str(tmp_path)], set()))
    real = folder_paths.get_full_path
    monkeypatch.setattr(folder_paths, "get_full_path", lambda f, n: None if f == "hed" else real(f, n))
    assert "ControlNetHED.pth" in list_hed_files()
    assert resolve_hed_file("ControlNetHED.pth") == target


def test_gray_and_rgba_images_through_the_node(comfy, hed_ready):
    from pixart_delta.nodes.hed import PixArtHEDEdgeDetector
    rgb = torch.rand(2, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    for image in (rgb[..., :1], torch.cat([rgb, torch.ones_like(rgb[..., :1])], -1)):
        out = PixArtHEDEdgeDetector.execute(image, "ControlNetHED.pth", False, False, 0).result[0]
        assert out.shape == (2, 40, 56, 3)
    with pytest.raises(ValueError, match="5 channels"):
        PixArtHEDEdgeDetector.execute(torch.rand(1, 40, 56, 5), "ControlNetHED.pth", False, False, 0)


def test_tiny_vae_file_in_the_hed_folder_is_a_clear_error(comfy, comfy_dirs, hed_ready):
    save(comfy_dirs["models"] / "hed" / "taesd_decoder.pth", random_taesd_decoder())
    graph = json.loads(json.dumps(hed_ready))
    graph["2"]["inputs"]["model_name"] = "taesd_decoder.pth"
    with pytest.raises(ExecutionFailed, match="not a HED edge model.*tiny VAE"):
        comfy.run({k: graph[k] for k in ("1", "2", "5")})


@pytest.mark.parametrize("name", ["sdxs_1step_tinyvae", "pixart_tinyvae_decode"])
def test_tiny_vae_workflows(comfy, comfy_dirs, name):
    graph = api(name)
    graph["5"]["inputs"].update(width=192, height=128, batch_size=2)
    if graph["6"]["inputs"]["steps"] > 2:
        graph["6"]["inputs"]["steps"] = 2
    write_for_workflow(graph, comfy_dirs["models"])
    paths = saved(comfy.run(graph), "8", comfy_dirs["output"])
    assert len(paths) == 2
    for p in paths:
        with Image.open(p) as im:
            assert im.size == (192, 128)
