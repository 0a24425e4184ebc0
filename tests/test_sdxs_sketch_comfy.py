"""The SDXS sketch ControlNet (a diffusers ControlNetModel over the SDXS-512 blocks) through PixArt SDXS ControlNet
Loader, against diffusers' own ControlNetModel on the same random full-size weights, for each mid-block form; core's
loader on the same file loses the mid block's transformer (the reason for the node); the tiny files of
tiny/sdxs.py load with every tensor placed (the sketch ControlNet here, the DreamShaper UNet and CLIP-L in core)."""
from __future__ import annotations

import gc

import pytest
import torch

from pixart_delta.loaders.files import CheckpointError
from pixart_delta.loaders.sdxs_controlnet import MID_CROSS_ATTENTION, MID_NONE, MID_RESNET, mid_block_of
from pixart_delta.tiny import sdxs

pytestmark = pytest.mark.comfyui


def random_controlnet(mid_block_type: str | None, seed: int = 0):
    """diffusers ControlNetModel at the sketch model's geometry, every tensor random (zero convs included)."""
    import diffusers
    torch.manual_seed(seed)
    config = dict(sdxs.SKETCH_CONTROLNET_CONFIG, mid_block_type=mid_block_type or "UNetMidBlock2D")
    model = diffusers.ControlNetModel(**config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("controlnet_down_blocks.", "controlnet_mid_block.", "controlnet_cond_embedding.conv_out")):
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
    if mid_block_type is None:
        model.mid_block = None
    return model


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, 32, 32, generator=g), torch.tensor([500.0]), torch.randn(1, 77, 768, generator=g),
            torch.rand(1, 3, 256, 256, generator=g))


def diffusers_residuals(model):
    x, t, ctx, hint = inputs()
    with torch.no_grad():
        down, mid = model(x, t, encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False)
    return list(down), mid


def cldm_residuals(control):
    x, t, ctx, hint = inputs()
    with torch.no_grad():
        out = control.control_model(x=x, hint=hint, timesteps=t, context=ctx)
    return out["output"], out["middle"][0]


def close(a, b):
    return torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-3 * float(b.abs().max()))


@pytest.mark.parametrize("mid_block_type,kind", [("UNetMidBlock2DCrossAttn", MID_CROSS_ATTENTION),
                                                 ("UNetMidBlock2D", MID_RESNET), (None, MID_NONE)])
def test_loader_matches_diffusers(comfy, tmp_path, mid_block_type, kind):
    from pixart_delta.loaders.sdxs_controlnet_comfy import load_sdxs_controlnet
    model = random_controlnet(mid_block_type)
    path = tmp_path / "sketch.bin"
    torch.save(model.state_dict(), path)
    assert mid_block_of(model.state_dict()).kind == kind
    want_down, want_mid = diffusers_residuals(model)
    del model
    gc.collect()
    control = load_sdxs_controlnet(path)
    got_down, got_mid = cldm_residuals(control)
    assert len(got_down) == len(want_down) == 6
    for i, (g, w) in enumerate(zip(got_down, want_down)):
        assert g.shape == w.shape and close(g, w), f"encoder residual {i}"
    assert close(got_mid, want_mid)
    del control
    gc.collect()


def test_core_loader_loses_the_mid_transformer(comfy, tmp_path):
    """core's ControlNetLoader on a cross-attention-mid file: encoder residuals right, middle residual wrong."""
    import comfy.controlnet
    model = random_controlnet("UNetMidBlock2DCrossAttn")
    path = tmp_path / "sketch.bin"
    torch.save(model.state_dict(), path)
    want_down, want_mid = diffusers_residuals(model)
    del model
    gc.collect()
    core = comfy.controlnet.load_controlnet(str(path))
    got_down, got_mid = cldm_residuals(core)
    assert all(close(g, w) for g, w in zip(got_down, want_down))
    assert not close(got_mid, want_mid)
    del core
    gc.collect()


def test_tiny_sketch_file_loads_every_tensor(comfy, tmp_path):
    from pixart_delta.loaders.sdxs_controlnet_comfy import diffusers_to_cldm_keys, controlnet_config, load_sdxs_controlnet
    path = sdxs.write_sketch_controlnet(tmp_path / "sdxs-512-dreamshaper-sketch.bin")
    sd = torch.load(path, weights_only=True)
    assert set(sd) == set(sdxs.diffusers_shapes("ControlNetModel", sdxs.SKETCH_CONTROLNET_CONFIG))
    names = diffusers_to_cldm_keys(controlnet_config(dict(sd), path), sd)
    assert not set(sd) - set(names)                               # every tensor of the file has a place
    control = load_sdxs_controlnet(path)                          # and fills the network exactly (strict check)
    assert set(control.control_model.state_dict()) == {names[k] for k in sd}
    del control
    gc.collect()


def test_tiny_dreamshaper_unet_and_clip_in_core(comfy, tmp_path):
    import comfy.sd
    import comfy.utils
    unet = sdxs.write_dreamshaper_unet(tmp_path / "unet.safetensors")
    sd = comfy.utils.load_torch_file(str(unet))
    n = len(sd)
    patcher = comfy.sd.load_diffusion_model_state_dict(sd)
    assert patcher is not None and not sd, f"left over: {list(sd)[:4]}"   # core pops every key it places
    assert len(patcher.model.diffusion_model.state_dict()) == n
    assert patcher.model.diffusion_model.middle_block is None or len(patcher.model.diffusion_model.middle_block) == 0
    del patcher
    gc.collect()
    te = sdxs.write_dreamshaper_text_encoder(tmp_path / "te.safetensors")
    clip = comfy.sd.load_clip([str(te)], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    missing, unexpected = clip.load_sd(comfy.utils.load_torch_file(str(te)))
    assert not unexpected and set(missing) <= {"text_projection.weight"}


def test_not_a_controlnet_is_refused(comfy, tmp_path):
    from pixart_delta.loaders.sdxs_controlnet_comfy import load_sdxs_controlnet
    path = tmp_path / "unet.bin"
    torch.save({"conv_in.weight": torch.zeros(320, 4, 3, 3), "time_embedding.linear_1.weight": torch.zeros(4, 4),
                "down_blocks.0.resnets.0.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="unet.bin.*not a diffusers ControlNetModel"):
        load_sdxs_controlnet(path)
