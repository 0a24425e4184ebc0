"""The YOSO SD1.5 LoRA layout (tiny/yoso_sd15.py, from diffusers' SD1.5 UNet modules and YOSO's LoraConfig) on
core's SD1.5 UNet at full size (built on the meta device): every tensor lands on a weight of the right shape through
core's key map, also after the PEFT / diffusers forms are renamed (core alone misses their attention keys); the
published case, a pickle under a .safetensors name, is refused naming the file and the fix."""
from __future__ import annotations

import math

import pytest
import torch

from pixart_delta.loaders.files import CheckpointError
from pixart_delta.loaders.sd15_lora import YOSO_ALPHA, lora_form, to_comfy_form
from pixart_delta.tiny.yoso_sd15 import lora_shapes, write_yoso_sd15_lora

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def sd15_meta(comfy):
    """core's SD1.5 BaseModel (UNet at full size) on the meta device."""
    import comfy.model_detection
    import comfy.supported_models
    config = comfy.model_detection.convert_config(dict(
        use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
        adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
        transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
        use_linear_in_transformer=False, context_dim=768, num_heads=8,
        transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        use_temporal_attention=False, use_temporal_resblock=False))
    model_config = comfy.supported_models.SD15(config)
    return model_config.get_model({}, device="meta")


@pytest.fixture(scope="module")
def yoso_lora(tmp_path_factory):
    path = write_yoso_sd15_lora(tmp_path_factory.mktemp("loras") / "yoso_sd15_lora.pt")
    return path, torch.load(path, weights_only=True)


def test_layout_is_the_published_size(yoso_lora):
    _, sd = yoso_lora
    assert len(sd) == 3 * 278 and lora_form(sd) == "kohya"
    values = sum(math.prod(t.shape) for k, t in sd.items() if not k.endswith(".alpha"))
    assert values * 4 == 269_008_896                               # fp32: the 269 MB of yoso_lora.safetensors
    assert all(float(t) == YOSO_ALPHA for k, t in sd.items() if k.endswith(".alpha"))


def test_every_tensor_lands_on_a_weight(sd15_meta, yoso_lora, caplog):
    import comfy.lora
    from pixart_delta.loaders.sd15_lora_comfy import lora_unet_fit
    _, sd = yoso_lora
    unmatched, wrong = lora_unet_fit(sd15_meta, sd)
    assert unmatched == [] and wrong == []
    key_map = comfy.lora.model_lora_keys_unet(sd15_meta, {})
    with caplog.at_level("WARNING"):
        patches = comfy.lora.load_lora(sd, key_map)
    assert "lora key not loaded" not in caplog.text
    assert len(patches) == 278 and set(patches) <= set(sd15_meta.state_dict())


def peft_form(sd: dict, prefix: str) -> dict:
    """The same LoRA as PEFT / diffusers training scripts name it: <prefix><diffusers path>.lora_A/B.weight."""
    from pixart_delta.tiny.yoso_sd15 import targeted_modules
    from pixart_delta.loaders.sd15_lora import kohya_name
    out = {}
    for path in targeted_modules():
        name = kohya_name(path)
        out[f"{prefix}{path}.lora_A.weight"] = sd[f"{name}.lora_down.weight"]
        out[f"{prefix}{path}.lora_B.weight"] = sd[f"{name}.lora_up.weight"]
    return out


@pytest.mark.parametrize("prefix", ["unet.", "base_model.model.", "unet.base_model.model."])
def test_peft_forms_land_after_renaming(sd15_meta, yoso_lora, prefix):
    from pixart_delta.loaders.sd15_lora_comfy import lora_unet_fit
    peft = peft_form(yoso_lora[1], prefix)
    assert lora_form(peft) == "peft"
    core_only, _ = lora_unet_fit(sd15_meta, peft)
    assert any(".attn1.to_q." in k for k in core_only)            # core's SD1 map has no such attention names
    unmatched, wrong = lora_unet_fit(sd15_meta, to_comfy_form(peft))
    assert unmatched == [] and wrong == []


def test_node_glue_patches_every_module(sd15_meta, yoso_lora):
    import comfy.model_patcher
    from pixart_delta.loaders.sd15_lora_comfy import apply_sd15_lora
    patcher = comfy.model_patcher.ModelPatcher(sd15_meta, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    patched, report = apply_sd15_lora(patcher, yoso_lora[0], 1.0)
    assert report == "" and len(patched.patches) == 278 and not patcher.patches


def test_pickle_named_safetensors_is_refused_with_the_fix(sd15_meta, yoso_lora, tmp_path):
    import comfy.model_patcher
    from pixart_delta.loaders.sd15_lora_comfy import apply_sd15_lora
    misnamed = tmp_path / "yoso_lora.safetensors"
    misnamed.write_bytes(yoso_lora[0].read_bytes())
    patcher = comfy.model_patcher.ModelPatcher(sd15_meta, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    with pytest.raises(CheckpointError, match=r"yoso_lora\.safetensors: this is a PyTorch pickle.*Rename it to "
                                              r"yoso_lora\.pt"):
        apply_sd15_lora(patcher, misnamed, 1.0)


def test_lora_for_another_model_is_refused(sd15_meta, tmp_path):
    import comfy.model_patcher
    from pixart_delta.loaders.sd15_lora_comfy import apply_sd15_lora
    path = tmp_path / "other.pt"
    torch.save({"lora_unet_single_blocks_0_linear1.lora_down.weight": torch.zeros(4, 8),
                "lora_unet_single_blocks_0_linear1.lora_up.weight": torch.zeros(8, 4)}, path)
    patcher = comfy.model_patcher.ModelPatcher(sd15_meta, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    with pytest.raises(CheckpointError, match="other.pt: none of this LoRA's 2 UNet tensors"):
        apply_sd15_lora(patcher, path, 1.0)
