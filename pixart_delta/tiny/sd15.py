"""SD1.5-family stand-ins for `run --tiny` and the workflow tests, every tensor at its real shape and name:

- the SD1.5 base checkpoint (v1-5-pruned-emaonly.safetensors: `model.diffusion_model.*` UNet,
  `first_stage_model.*` VAE, `cond_stage_model.transformer.text_model.*` CLIP-L, the DDPM schedule buffers);
- lllyasviel's ControlNet 1.0 `control_sd15_canny.pth` (lllyasviel/ControlNet models/): a torch pickle of the whole
  cldm model, the same SD1.5 parts plus `control_model.*` (hint block, 13 zero convolutions);
- the five ControlNet++ files (limingcv/reward_controlnet checkpoints/<condition>/controlnet/
  diffusion_pytorch_model.safetensors): diffusers `ControlNetModel` keys at SD1.5 geometry (320/640/1280/1280,
  cross-attention 768, 3 hint channels), stored under distinct names;
- SDXS-512-DreamShaper's tiny decoder (IDKiro/sdxs-512-dreamshaper vae/, AutoencoderTiny, as pixart_delta/tiny/tiny_vae.py).

ComfyUI detects SD1.5 (checkpoints and ControlNets) only at full width, so these are full size and sparse in the
way pixart_delta/tiny/sdxs.py writes SDXS: norms, biases and a few weights that carry the signal (UNet in/out
convolutions, the ControlNets' hint path and output convolutions, the VAE decoder) are random, every other weight
is a zero-filled filesystem hole. The pickle is written the same way (zero runs skipped by seeking). Shapes come
from ComfyUI's own modules and diffusers' ControlNetModel on the meta device (needs a booted ComfyUI).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .sdxs import _fill, write_sparse_safetensors

SD15_FILE = "checkpoints/v1-5-pruned-emaonly.safetensors"
CONTROLNET_10_CANNY_FILE = "controlnet/control_sd15_canny.pth"
DREAMSHAPER_TINY_VAE_FILE = "vae_approx/sdxs-512-dreamshaper_tiny_vae.safetensors"
CONTROLNET_PP_CONDITIONS = ("canny", "hed", "lineart", "depth", "seg")
CONTROLNET_PP_FILES = {c: f"controlnet/controlnet_pp_sd15_{c}.safetensors" for c in CONTROLNET_PP_CONDITIONS}

# ComfyUI's SD15 UNet config (comfy/model_detection.py, unet_config_from_diffusers_unet).
SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}
SD_VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                   "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
# Weights that carry the signal through an otherwise zero network (residual paths do the rest).
UNET_RANDOM = ("input_blocks.0.0.weight", "out.2.weight")
CONTROL_RANDOM_PARTS = ("input_hint_block.", "zero_convs.", "middle_block_out.")
DIFFUSERS_CONTROL_RANDOM_PARTS = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.",
                                  "conv_in.")


def _meta_shapes(module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def sd15_unet_shapes() -> dict[str, tuple]:
    """ldm UNet key (no prefix) -> shape, from ComfyUI's UNetModel."""
    import comfy.model_detection
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    cfg = comfy.model_detection.convert_config(dict(SD15_UNET))
    return _meta_shapes(UNetModel(**cfg, device="meta", operations=comfy.ops.disable_weight_init))


def sd_vae_shapes() -> dict[str, tuple]:
    from comfy.ldm.models.autoencoder import AutoencoderKL
    with torch.device("meta"):
        return _meta_shapes(AutoencoderKL(ddconfig=SD_VAE_DDCONFIG, embed_dim=4))


def clip_l_shapes() -> dict[str, tuple]:
    """transformers CLIPTextModel keys of CLIP-L as SD1.5 checkpoints store them (no text projection)."""
    import json

    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip
    config = json.loads(Path(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json").read_text())
    model = comfy.clip_model.CLIPTextModel(config, torch.float32, "meta", comfy.ops.disable_weight_init)
    return {k: v for k, v in _meta_shapes(model).items() if not k.startswith("text_projection")}


def ldm_control_shapes() -> dict[str, tuple]:
    """cldm ControlNet key (no prefix) -> shape: lllyasviel's ControlNet 1.0 control_model at SD1.5 geometry."""
    import comfy.model_detection
    import comfy.ops
    from comfy.cldm.cldm import ControlNet
    cfg = comfy.model_detection.convert_config(dict(SD15_UNET))
    cfg.pop("out_channels")
    return _meta_shapes(ControlNet(**cfg, hint_channels=3, device="meta", operations=comfy.ops.disable_weight_init))


def diffusers_controlnet_shapes() -> dict[str, tuple]:
    """diffusers ControlNetModel keys at the ControlNet++ config (limingcv/reward_controlnet
    checkpoints/canny/controlnet/config.json: diffusers defaults with cross_attention_dim 768)."""
    from diffusers import ControlNetModel
    with torch.device("meta"):
        return _meta_shapes(ControlNetModel(cross_attention_dim=768))


def ddpm_schedule_buffers() -> dict[str, torch.Tensor]:
    """The LatentDiffusion buffers SD1.5 checkpoints carry (scaled-linear betas 0.00085 -> 0.012, 1000 steps)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    return {"betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev, "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(), "log_one_minus_alphas_cumprod": (1 - ac).log(),
            "sqrt_recip_alphas_cumprod": ac.rsqrt(), "sqrt_recipm1_alphas_cumprod": (1 / ac - 1).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": torch.cat([post_var[1:2], post_var[1:]]).log(),
            "posterior_mean_coef1": betas * ac_prev.sqrt() / (1 - ac),
            "posterior_mean_coef2": (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)}


def _random_where(shapes: dict, parts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(k for k in shapes if any(p in k for p in parts))


def sd15_parts(seed: int, random_vae_decoder: bool) -> tuple[dict[str, tuple], dict[str, torch.Tensor]]:
    """(shapes, filled values) of the SD1.5 checkpoint's keys."""
    unet = {f"model.diffusion_model.{k}": s for k, s in sd15_unet_shapes().items()}
    vae = {f"first_stage_model.{k}": s for k, s in sd_vae_shapes().items()}
    clip = {f"cond_stage_model.transformer.{k}": s for k, s in clip_l_shapes().items()}
    shapes = {**unet, **vae, **clip}
    vae_random = tuple(k for k in vae if len(vae[k]) > 1 and (random_vae_decoder and
                                                              (".decoder." in k or "post_quant_conv" in k)))
    clip_random = ("cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
                   "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
    filled = _fill(shapes, seed, random_weights=tuple(f"model.diffusion_model.{k}" for k in UNET_RANDOM)
                   + vae_random + clip_random)
    buffers = ddpm_schedule_buffers()
    shapes.update({k: tuple(v.shape) for k, v in buffers.items()})
    filled.update(buffers)
    return shapes, filled


def write_sd15_checkpoint(path: Path, seed: int = 0) -> Path:
    shapes, filled = sd15_parts(seed, random_vae_decoder=True)
    return write_sparse_safetensors(path, shapes, filled)


class _SparseWriter:
    """A write-only file object that turns runs of zero bytes into holes (torch.save writes through it)."""
    BLOCK = 1 << 20

    def __init__(self, f):
        self.f, self.pos = f, 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        for start in range(0, n, self.BLOCK):
            chunk = view[start:start + self.BLOCK]
            if np.frombuffer(chunk, dtype=np.uint8).any():
                self.f.seek(self.pos + start)
                self.f.write(chunk)
        self.pos += n
        return n

    def flush(self):
        self.f.truncate(self.pos)
        self.f.flush()


def write_pickle_with_holes(path: Path, shapes: dict[str, tuple], filled: dict[str, torch.Tensor],
                        dtype=torch.float16) -> Path:
    """torch.save of {key: tensor} (one storage per tensor, as a saved state dict has); unfilled tensors are zeros
    and stay holes on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (filled[k].to(dtype) if k in filled else torch.zeros(s, dtype=dtype)) for k, s in shapes.items()}
    with open(path, "wb") as f:
        torch.save(sd, _SparseWriter(f))
    return path


def write_controlnet_10_canny(path: Path, seed: int = 2) -> Path:
    """control_sd15_canny.pth: the whole cldm state dict (the SD1.5 parts zero apart from norms and biases, as
    ComfyUI's ControlNetLoader reads only `control_model.*`)."""
    shapes, filled = sd15_parts(seed, random_vae_decoder=False)
    control = {f"control_model.{k}": s for k, s in ldm_control_shapes().items()}
    shapes.update(control)
    filled.update(_fill(control, seed + 1, random_weights=_random_where(control, CONTROL_RANDOM_PARTS)
                        + ("control_model.input_blocks.0.0.weight",)))
    return write_pickle_with_holes(path, shapes, filled)


def write_controlnet_pp(path: Path, seed: int = 3) -> Path:
    shapes = diffusers_controlnet_shapes()
    return write_sparse_safetensors(path, shapes, _fill(shapes, seed, _random_where(shapes,
                                                                                    DIFFUSERS_CONTROL_RANDOM_PARTS)))


def _pp_writer(seed: int):
    return lambda path: write_controlnet_pp(path, seed)


def write_dreamshaper_tiny_vae(path: Path) -> Path:
    """IDKiro/sdxs-512-dreamshaper vae/: the same AutoencoderTiny layout as SDXS-512-0.9's tiny decoder."""
    from .tiny_vae import write_autoencoder_tiny
    return write_autoencoder_tiny(path)


# The files of this module that the bundled workflows name (models/<folder>/<file>).
FILES = {
    DREAMSHAPER_TINY_VAE_FILE: write_dreamshaper_tiny_vae,
    SD15_FILE: write_sd15_checkpoint,
    CONTROLNET_10_CANNY_FILE: write_controlnet_10_canny,
    **{CONTROLNET_PP_FILES[c]: _pp_writer(10 + i) for i, c in enumerate(CONTROLNET_PP_CONDITIONS)},
}
