"""A detected PixArt checkpoint -> ComfyUI MODEL (ModelPatcher) that core samplers, LoRA loaders and
model patches accept."""
from __future__ import annotations

import functools
import logging

import torch

import comfy.cli_args
import comfy.latent_formats
import comfy.ldm.modules.attention as comfy_attention_module
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models_base
import comfy.utils

from ..models.pixart import PixArt, PixArtBranchControl, foreign_control
from .dtypes import PIXART_WEIGHT_DTYPES, chosen_dtype
from .dtypes_comfy import computes_bf16_on_cpu, unet_manual_cast
from .files import assign_weights
from .pixart import inspect_checkpoint
from .pixart_lora import lora_key_map
from .pixart_lora_comfy import install_lora_hooks
from .variants import Variant

install_lora_hooks()  # core has no per-model LoRA key hook; its loaders call these functions by module attribute


def comfy_attention(q, k, v, heads, mask=None, transformer_options={}, **kwargs):
    """The attention of our networks inside ComfyUI: its selected optimized_attention (optimized_attention_masked
    with the text mask), looked up at every call so flags, nodes replacing it and the registered functions apply;
    wrap_attn hands the call to transformer_options["optimized_attention_override"] when one is installed."""
    fn = comfy_attention_module.optimized_attention if mask is None else comfy_attention_module.optimized_attention_masked
    if (fn is comfy_attention_module.attention_sub_quad and q.device.type == "cpu"
            and not comfy.cli_args.args.use_quad_cross_attention):
        # Sub-quadratic attention is ComfyUI's fallback wherever PyTorch attention is not enabled (every CPU when no
        # flag is given); its chunked einsums lose to one SDPA call: on this 2-core CPU the registered "pytorch"
        # function runs PixArt's attention 1.4-2.7x faster and the full 256 px forward in 7.7 s instead of 9.4 s
        # (bench/pixart_forward.py --attention all), so that implicit fallback alone is replaced; flags and
        # overrides are followed.
        fn = comfy_attention_module.attention_pytorch
    return fn(q, k, v, heads, mask=mask, transformer_options=transformer_options, **kwargs)


def check_control_chain(control) -> None:
    """Refuses a control chain (linked by previous_controlnet) holding a ControlNet made for another model family
    (SD/SDXL ControlNet, T2I-Adapter, ControlLoRA, SD3/Flux/HunyuanDiT ControlNets): on a PixArt MODEL they would
    either crash with a shape error or be dropped. The network refuses what reaches it as residuals as well."""
    while control is not None:
        if not isinstance(control, PixArtBranchControl):
            raise foreign_control(f"a {type(control).__name__} ControlNet")
        control = control.previous_controlnet


class PixArtDeltaModel(comfy.model_base.PixArt):
    """comfy.model_base.PixArt (its conds and LoRA key mapping) around our network."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.EPS, device=None):
        comfy.model_base.BaseModel.__init__(self, model_config, model_type, device=device,
                                            unet_model=functools.partial(PixArt, attention=comfy_attention))

    def extra_conds(self, **kwargs):
        check_control_chain(kwargs.get("control"))  # an SD/SDXL ControlNet here is an error, never ignored
        out = super().extra_conds(**kwargs)
        mask = kwargs.get("attention_mask", None)
        if mask is not None:
            out["attention_mask"] = comfy.conds.CONDRegular(mask)
        return out

    def pixart_lora_keys(self) -> dict:
        """The LoRA key forms core's PixArt map lacks (OneTrainer, kohya-style, LyCORIS); see pixart_lora.py."""
        shapes = {k: tuple(v.shape) for k, v in self.diffusion_model.state_dict().items()}
        return lora_key_map(shapes, prefix="diffusion_model.")


class PixArtDeltaConfig(comfy.supported_models_base.BASE):
    unet_config = {"image_model": "pixart_delta"}
    sampling_settings = {"beta_schedule": "sqrt_linear", "linear_start": 0.0001, "linear_end": 0.02, "timesteps": 1000}
    unet_extra_config = {}
    latent_format = comfy.latent_formats.SD15
    memory_usage_factor = 0.5

    def __init__(self, unet_config: dict, variant: Variant):
        super().__init__(unet_config)
        self.pixart_variant = variant
        self.latent_format = getattr(comfy.latent_formats, variant.latent_format)()

    def get_model(self, state_dict, prefix="", device=None):
        model_type = comfy.model_base.ModelType.V_PREDICTION if self.pixart_variant.prediction == "v" \
            else comfy.model_base.ModelType.EPS
        return PixArtDeltaModel(self, model_type=model_type, device=device).eval()


def load_pixart_model(path, variant: str = "auto", weight_dtype: str = "default") -> comfy.model_patcher.ModelPatcher:
    ckpt = inspect_checkpoint(path, variant)
    sd = ckpt.state_dict
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    config = PixArtDeltaConfig(ckpt.unet_config, ckpt.variant)
    dtype = chosen_dtype(weight_dtype, PIXART_WEIGHT_DTYPES)
    if dtype is None:
        dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                              supported_dtypes=config.supported_inference_dtypes,
                              weight_dtype=comfy.utils.weight_dtype(sd))
    if computes_bf16_on_cpu(dtype, load_device):
        config.unet_config["residual_dtype"] = torch.float32   # bf16 linears and attention, fp32 token stream
    config.set_inference_dtype(dtype, unet_manual_cast(dtype, load_device, config.supported_inference_dtypes))
    model = config.get_model(sd, "", device=None).to(offload_device)
    missing, unexpected = assign_weights(model.diffusion_model, sd)   # core's load_model_weights copies: 2x at peak
    if missing or unexpected:
        logging.warning("PixArt loader: %s: weights the network lacks %s, network weights the file lacks %s",
                        ckpt.path.name, unexpected, missing)
    logging.info("PixArt loader: %s -> %s (%s layout, %s latents, %s prediction, PE scale %s, base size %s, "
                 "micro-conditioning %s, depth %d)", ckpt.path.name, ckpt.variant.title, ckpt.layout,
                 ckpt.variant.latent_format, ckpt.variant.prediction, ckpt.unet_config["pe_interpolation"],
                 ckpt.unet_config["base_size"], ckpt.unet_config["micro_condition"], ckpt.unet_config["depth"])
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def is_pixart_model(model_patcher) -> bool:
    """True for our MODELs and for ComfyUI's native PixArt MODELs."""
    model = getattr(model_patcher, "model", None)
    return isinstance(model, comfy.model_base.PixArt)


def pixart_variant(model_patcher) -> Variant | None:
    return getattr(getattr(getattr(model_patcher, "model", None), "model_config", None), "pixart_variant", None)
