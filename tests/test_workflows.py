"""Every bundled workflow: the API graph runs in-process in ComfyUI on tiny random models (the `run --tiny` path)
and writes its images; the UI-format file says the same as the API file; the CLI runs end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pixart_delta.tools.cli import (API_DIR, bundled_workflows, load_workflow, shrink_for_tiny,
                                   write_missing_inputs)
from pixart_delta.tools import PACK_ROOT

from conftest import comfyui_or_skip
from pixart_delta.tiny import write_for_workflow

# each graph loads its own full-size stand-ins: released after every test, not only after the module
pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("release_memory_after_test")]
UI_DIR = PACK_ROOT / "example_workflows"


# What each bundled workflow saves on the tiny models: {filename_prefix: (width, height)}. Generated images are
# capped at TINY_MAX_SIZE (256): width/height inputs are capped at 256 and PixArt Resolution uses the 256 table
# (2048x1152 asked -> 256x256 asked -> the 256x256 bucket, resized back to 256x256); edge maps keep the size of
# the input picture that --tiny writes (512 x 384).
INPUT_SIZE = (512, 384)
EXPECTED_IMAGES = {
    "control_preprocessors": {p: INPUT_SIZE for p in ("control_canny", "control_canny_kornia", "control_lineart",
                                                      "control_lineart_coarse", "control_hed", "control_depth",
                                                      "control_seg")},
    "controlnet_pp_canny": {"controlnet_pp_canny": (256, 256), "controlnet_pp_canny_condition": (256, 256)},
    "controlnet_pp_depth": {"controlnet_pp_depth": (256, 256), "controlnet_pp_depth_condition": (256, 256)},
    "controlnet_pp_hed": {"controlnet_pp_hed": (256, 256), "controlnet_pp_hed_condition": (256, 256)},
    "controlnet_pp_lineart": {"controlnet_pp_lineart": (256, 256), "controlnet_pp_lineart_condition": (256, 256)},
    "controlnet_pp_seg": {"controlnet_pp_seg": (256, 256), "controlnet_pp_seg_condition": (256, 256)},
    "customnet_inpaint_background": {"customnet_inpaint_background": (256, 256),
                                     "customnet_inpaint_background_canvas": (256, 256)},
    "customnet_object": {"customnet_object": (256, 256), "customnet_object_canvas": (256, 256)},
    "hed_edges": {"hed_edges": INPUT_SIZE, "hed_safe": INPUT_SIZE, "hed_scribble": INPUT_SIZE},
    "pixart_controlnet_512_hed": {"pixart_controlnet_512_hed": (256, 256), "pixart_controlnet_512_hed_edges": INPUT_SIZE},
    "pixart_controlnet_hed": {"pixart_controlnet_hed": (256, 256), "pixart_controlnet_hed_edges": INPUT_SIZE},
    "pixart_controlnet_lcm": {"pixart_controlnet_lcm": (256, 256)},
    "pixart_dmd_1step": {"pixart_dmd_1step": (256, 256)},
    "pixart_lcm_4step": {"pixart_lcm_4step": (256, 256)},
    "pixart_sigma_256": {"pixart_sigma_256": (256, 256)},
    "pixart_sigma_2k": {"pixart_sigma_2k": (256, 256)},
    "pixart_sigma_t2i": {"pixart_sigma_t2i": (256, 256)},
    "pixart_tinyvae_decode": {"pixart_tinyvae_decode": (256, 256)},
    "sd15_controlnet_canny": {"sd15_controlnet_canny": (256, 256), "sd15_controlnet_canny_edges": (256, 256)},
    "sdxs_1step_tinyvae": {"sdxs_1step_tinyvae": (256, 256)},
    "sdxs_dreamshaper_1step": {"sdxs_dreamshaper_1step": (256, 256)},
    "sdxs_sketch_1step": {"sdxs_sketch_1step": (256, 256)},
    "yoso_pixart1024_1step": {"yoso_pixart1024_1step": (256, 256)},
    "yoso_pixart_1step_ipi": {"yoso_pixart_1step_ipi": (256, 256)},
    "yoso_sd15_lora_1step_ipi": {"yoso_sd15_lora_1step_ipi": (256, 256)},
    "yoso_sd15_lora_2step": {"yoso_sd15_lora_2step": (256, 256)},
}


# The point is that each bundled graph runs and saves its images, not the pictures: KSampler steps are capped (the
# 50 DDIM steps of the CustomNet graphs or the 20 of the SD1.5 ones cost minutes of CI each on the fixed 256 px
# canvases); the sampler and scheduler stay as bundled, and few-step schedules keep their own step counts. The
# bundled schedules themselves are checked against their references (e.g. test_customnet_comfy.py's 50-step DDIM).
TEST_STEPS = 3


def test_every_bundled_workflow_has_expected_images():
    assert sorted(EXPECTED_IMAGES) == bundled_workflows()


def saved_images(outputs: dict, out_dir: Path) -> list[Path]:
    return [out_dir / img.get("subfolder", "") / img["filename"]
            for ui in outputs.values() for img in ui.get("images", []) if img.get("type") == "output"]


@pytest.mark.parametrize("name", bundled_workflows())
def test_bundled_workflow_runs_on_tiny_models(comfy, comfy_dirs, name):
    graph = load_workflow(name)
    shrink_for_tiny(graph)
    for node in graph.values():
        if node["class_type"] in ("KSampler", "KSamplerAdvanced") and node["inputs"].get("steps", 0) > TEST_STEPS:
            node["inputs"]["steps"] = TEST_STEPS
    write_for_workflow(graph, comfy_dirs["models"])
    write_missing_inputs(graph, comfy_dirs["input"])
    images = saved_images(comfy.run(graph), comfy_dirs["output"])
    expected = EXPECTED_IMAGES[name]
    got = {}
    for p in images:
        prefix = p.name.rsplit("_", 2)[0]
        with Image.open(p) as im:
            channels = im.convert("RGB").getextrema()
            got[prefix] = im.size
            assert any(hi > lo for lo, hi in channels), f"{name}: {p.name} is one flat colour {channels}"
    assert got == expected, f"{name}: saved {got}, expected {expected}"


@pytest.mark.parametrize("width,height", [(256, 256), (192, 320), (200, 120)])
def test_t2i_writes_the_requested_size(comfy, comfy_dirs, width, height):
    """PixArt Resolution (node 5, the 256 table as under --tiny) -> KSampler -> VAE Decode -> PixArt Resize Back:
    a bucket (192x320) or not (200x120 samples the 320x192 bucket), the saved image has the asked size."""
    graph = load_workflow("pixart_sigma_t2i")
    assert graph["5"]["class_type"] == "PixArtResolution"
    graph["5"]["inputs"].update(width=width, height=height, batch_size=2, native_size="256")
    graph["6"]["inputs"]["steps"] = 2
    write_for_workflow(graph, comfy_dirs["models"])
    images = saved_images(comfy.run(graph), comfy_dirs["output"])
    assert len(images) == 2
    for p in images:
        with Image.open(p) as im:
            assert im.size == (width, height)


@pytest.mark.parametrize("name", bundled_workflows())
def test_ui_file_matches_api_file(comfy, name):
    from pixart_delta.tools.workflow_format import canonical, ui_to_api
    ui_path = UI_DIR / f"{name}.json"
    assert ui_path.is_file(), f"{name}: no UI-format file in example_workflows/"
    ui = json.loads(ui_path.read_text())
    assert any(n["type"] in ("Note", "MarkdownNote") for n in ui["nodes"]), f"{name}: no Note naming the model files"
    api = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in load_workflow(name).items()}
    assert canonical(ui_to_api(ui, comfy.node_classes)) == canonical(api)


def test_cli_run_tiny_end_to_end(tmp_path):
    comfy_path = comfyui_or_skip()
    proc = subprocess.run([sys.executable, "-m", "pixart_delta", "run", "pixart_sigma_t2i", "--tiny",
                           "--out", str(tmp_path), "--set", "6.steps=2"],
                          cwd=PACK_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COMFYUI_PATH": str(comfy_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = [Path(line) for line in proc.stdout.splitlines() if line.endswith(".png")]
    assert len(images) == 1 and images[0].is_file()
    with Image.open(images[0]) as im:
        assert im.size == (256, 256)


def test_api_files_are_api_format():
    for path in API_DIR.glob("*.json"):
        graph = json.loads(path.read_text())
        assert all("class_type" in node and "inputs" in node for node in graph.values()), path.name
