"""The tiny few-step files the workflows name are in the layouts the real ones ship in and are detected as the
right variant (no ComfyUI); each few-step workflow names them and the few-step nodes."""
import json

import pytest

from pixart_delta.tools.comfy_runtime import PACK_ROOT
from pixart_delta.tiny import pixart as m
from pixart_delta.loaders.pixart import inspect_checkpoint


@pytest.mark.parametrize("rel, writer, variant, suffix", [
    (m.LCM_1024, m.lcm_1024, "lcm_1024", ".safetensors"),
    (m.DMD_512, m.dmd_512, "dmd_512", ".bin"),
    (m.YOSO_512, m.yoso_512, "yoso_512", ".safetensors"),
    (m.YOSO_1024, m.yoso_1024, "yoso_1024", ".safetensors"),
])
def test_tiny_few_step_files_are_detected(tmp_path, rel, writer, variant, suffix):
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    writer(path)
    assert path.suffix == suffix and (path.parent / "config.json").is_file()
    ckpt = inspect_checkpoint(path)
    assert ckpt.layout == "diffusers" and ckpt.variant.name == variant and not ckpt.warnings
    expected = {"lcm_1024": ("lcm", "eps", True), "dmd_512": ("dmd", "eps", False), "yoso_512": ("yoso", "v", False),
                "yoso_1024": ("yoso", "v", True)}
    assert (ckpt.variant.sampling, ckpt.variant.prediction, ckpt.unet_config["micro_condition"]) == expected[variant]


@pytest.mark.parametrize("name, rel, sampler", [
    ("pixart_lcm_4step", m.LCM_1024, "lcm"), ("pixart_dmd_1step", m.DMD_512, "dmd"),
    ("yoso_pixart_1step_ipi", m.YOSO_512, "lcm"), ("yoso_pixart1024_1step", m.YOSO_1024, "lcm"),
])
def test_workflows_use_the_few_step_nodes(name, rel, sampler):
    graph = json.loads((PACK_ROOT / "workflows" / "api" / f"{name}.json").read_text())
    by_type = {n["class_type"]: n["inputs"] for n in graph.values()}
    assert by_type["PixArtCheckpointLoader"]["ckpt_name"] == rel.split("/", 1)[1]
    assert by_type["PixArtFewStepSampler"]["sampler"] == sampler
    assert by_type["SamplerCustom"]["cfg"] == 1.0
    assert by_type["PixArtFewStepScheduler"]["mode"] == "auto"
    assert ("PixArtYOSOPriorLatent" in by_type) == name.endswith("_ipi")  # yoso_pixart1024_1step: pure noise
    assert (PACK_ROOT / "example_workflows" / f"{name}.json").is_file()
