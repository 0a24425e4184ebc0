"""ComfyUI's "Unload models" (/free with unload_models: main.py's prompt worker calls
comfy.model_management.unload_all_models) also drops what the pack's FileCaches keep."""
import importlib

import pytest

pytestmark = pytest.mark.comfyui


def file_cache_module_comfyui_runs(comfy):
    """The pack as ComfyUI loaded it (custom-node module names), not the copy the tests import as pixart_delta."""
    node_module = comfy.node_classes["PixArtHEDEdgeDetector"].__module__   # <pack>.pixart_delta.nodes.hed
    return importlib.import_module(node_module.rsplit(".nodes.", 1)[0] + ".loaders.file_cache")


def test_unloading_models_empties_the_file_caches_and_still_unloads_core_models(comfy, tmp_path):
    file_cache = file_cache_module_comfyui_runs(comfy)
    import comfy.model_management as mm
    import comfy.model_patcher
    import torch
    path = tmp_path / "weights.bin"
    path.write_bytes(b"0")
    cache = file_cache.FileCache(max_entries=2)
    cache.get(path, (), object)
    patcher = comfy.model_patcher.ModelPatcher(torch.nn.Linear(4, 4), load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    mm.load_models_gpu([patcher])
    assert len(cache) == 1 and any(m.model is patcher for m in mm.current_loaded_models)

    mm.unload_all_models()   # looked up as main.py does, by module attribute

    assert len(cache) == 0
    assert not any(m.model is patcher for m in mm.current_loaded_models)
