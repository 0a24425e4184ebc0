"""CustomNet on ComfyUI's own objects: the UNet as a ComfyUI model (SD1.5 blocks, model sampling, samplers), the
VAE as comfy.sd.VAE, the CLIP image tower as comfy.clip_vision.ClipVisionModel, the text encoder as an SD1.5
comfy.sd.CLIP; the dual cross-attention through ComfyUI's attention patch hooks.

Each part's configuration is read from the tensor shapes (loaders/customnet.py) instead of ComfyUI's checkpoint
detection: core takes a full-size customnet_v1.pt for Stable Zero123 (dropping the text branch) and the
12-channel inpaint file for a plain SD1.5 model, and detects nothing at reduced widths. The UNet config comes
from ComfyUI's own shape parser (comfy.model_detection.detect_unet_config) plus the training config's 8 heads.

Dual cross-attention (TencentARC/CustomNet customnet/attention.py CrossAttention(new_text_att=True)): the
context is [image token | 77 text tokens]; attn2's output before to_out is
    attention(q, to_k(image token), to_v(image token)) + text_scale * attention(q, to_k_text(text), to_v_text(text)).
ComfyUI's BasicTransformerBlock runs an `attn2_patch` on the raw context (ours keeps the image token for core's
to_k/to_v and leaves the text tokens in extra_options) and then the per-block `attn2` replace patch with
to_q(x), to_k(image token), to_v(image token) (ours adds the text attention). The to_k_text/to_v_text weights are
modules of the UNet itself (added to each attn2 under their checkpoint names), so ComfyUI's ModelPatcher moves,
casts and offloads them with the rest of the model; the patches only reference them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .customnet import (UNET_HEADS, CustomNetParts, read_checkpoint, report_unused, schedule_matches,
                        text_branch_blocks, text_config, vae_ddconfig, vision_config)
from .file_cache import FileCache
from .files import CheckpointError
from ..preprocessors.customnet import CustomNetInputError

log = logging.getLogger(__name__)

FOLDER = "customnet"
TEXT_TOKENS_KEY = "customnet_text_tokens"


def register_folder():
    """models/customnet, a folder ComfyUI lists (checkpoints/ is searched too)."""
    import folder_paths
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = (
            [os.path.join(folder_paths.models_dir, FOLDER)], set(folder_paths.supported_pt_extensions))


def list_customnet_files() -> list[str]:
    """Files in models/customnet, then CustomNet-named files in models/checkpoints."""
    import folder_paths
    names = list(folder_paths.get_filename_list(FOLDER))
    names += [n for n in folder_paths.get_filename_list("checkpoints")
              if "customnet" in n.lower() and n not in names]
    return names


def resolve_customnet_file(name: str) -> Path:
    import folder_paths
    for folder in (FOLDER, "checkpoints"):
        p = folder_paths.get_full_path(folder, name)
        if p is not None:
            return Path(p)
    raise CheckpointError(f"{name}: CustomNet checkpoint not found; put customnet_v1.pt / customnet_inpaint_v1.pt "
                          f"(TencentARC/CustomNet) in {folder_paths.get_folder_paths(FOLDER)} or models/checkpoints")


# ---- the dual cross-attention as ComfyUI attention patches ----

class TextTokensAside:
    """attn2_patch: core's to_k/to_v see only the image token; the text tokens wait in extra_options."""

    def __call__(self, n, context, value, extra_options):
        extra_options[TEXT_TOKENS_KEY] = context[:, 1:]
        return n, context[:, :1], value[:, :1]


class DualTextAttention:
    """attn2 replace patch of one transformer block: image-token attention plus text_scale x text attention."""

    def __init__(self, to_k_text: torch.nn.Module, to_v_text: torch.nn.Module, text_scale: float):
        self.to_k_text = to_k_text
        self.to_v_text = to_v_text
        self.text_scale = float(text_scale)

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention
        # one key: softmax over it is exactly 1, so attention to the image token is its value at every query
        out = v.expand(-1, q.shape[1], -1)
        text = extra_options.get(TEXT_TOKENS_KEY)
        if self.text_scale != 0.0 and text is not None and text.shape[1] > 0:
            kt = self.to_k_text(text.to(q.dtype))
            vt = self.to_v_text(text.to(q.dtype))
            out = out + self.text_scale * optimized_attention(q, kt, vt, extra_options["n_heads"],
                                                              attn_precision=extra_options.get("attn_precision"))
        return out


def apply_text_branch(patcher, text_scale: float = 1.0):
    """A clone of `patcher` whose attn2 layers run CustomNet's dual cross-attention with `text_scale`
    (1.0 as trained; 0 = the image token alone)."""
    model = patcher.clone()
    diffusion_model = patcher.model.diffusion_model
    model.set_model_attn2_patch(TextTokensAside())
    for (block, number, index), path in patcher.model.customnet_text_blocks.items():
        attn2 = diffusion_model.get_submodule(path)
        model.set_model_attn2_replace(DualTextAttention(attn2.to_k_text, attn2.to_v_text, text_scale),
                                      block, number, index)
    return model


# ---- the model ----

def _model_classes():
    """ComfyUI model config + model classes (built on first use: ComfyUI is only importable inside it)."""
    import comfy.conds
    import comfy.latent_formats
    import comfy.model_base
    import comfy.ops
    import comfy.supported_models_base
    import comfy.utils

    class CustomNetConfig(comfy.supported_models_base.BASE):
        unet_config = {}
        unet_extra_config = {"num_heads": UNET_HEADS, "num_head_channels": -1}
        latent_format = comfy.latent_formats.SD15
        memory_usage_factor = 1.0

        def __init__(self, unet_config, cc_weight, cc_bias):
            super().__init__(unet_config)
            self.cc_weight, self.cc_bias = cc_weight, cc_bias

        def get_model(self, state_dict, prefix="", device=None):
            return CustomNetModel(self, device=device, cc_weight=self.cc_weight, cc_bias=self.cc_bias)

        def clip_target(self, state_dict={}):
            return None

    class CustomNetModel(comfy.model_base.BaseModel):
        """x = cat(noise latent, c_concat) with c_concat unscaled VAE latents (object canvas [, background]);
        context = [cc_projection(cat(CLIP image embedding, camera)) | text tokens]. Conditioning comes from
        PixArt CustomNet Conditioning: `concat_latent_image`, `customnet_image` (the 772-wide embedding, or a
        768-wide zero token for the unconditional side) and the text tokens as the cross_attn tensor."""

        def __init__(self, model_config, device=None, cc_weight=None, cc_bias=None):
            super().__init__(model_config, comfy.model_base.ModelType.EPS, device=device)
            self.cc_projection = comfy.ops.manual_cast.Linear(cc_weight.shape[1], cc_weight.shape[0],
                                                              dtype=self.get_dtype(), device=device)
            with torch.no_grad():
                self.cc_projection.weight.copy_(cc_weight)
                self.cc_projection.bias.copy_(cc_bias)
            self.concat_channels = model_config.unet_config["in_channels"] - model_config.unet_config["out_channels"]
            self.customnet_text_blocks = {}

        def extra_conds(self, **kwargs):
            noise = kwargs.get("noise")
            concat = kwargs.get("concat_latent_image")
            image = kwargs.get("customnet_image")
            text = kwargs.get("cross_attn")
            if concat is None or image is None or text is None:
                raise CustomNetInputError(
                    "a CustomNet model needs the positive and negative from PixArt CustomNet Conditioning (object "
                    "canvas latent and image token); this conditioning has "
                    + ("no object canvas latent" if concat is None else "no image token" if image is None
                       else "no text tokens"))
            if concat.shape[1] != self.concat_channels:
                need = ("the object canvas latent and a background latent: give PixArt CustomNet Conditioning a "
                        "background image" if self.concat_channels == 8 else "the object canvas latent only: this "
                        "is the text-background model, leave the background input empty")
                raise CustomNetInputError(f"this CustomNet model takes {self.concat_channels} concat channels "
                                          f"({need}); the conditioning has {concat.shape[1]}")
            if concat.shape[-2:] != noise.shape[-2:]:
                concat = comfy.utils.common_upscale(concat, noise.shape[-1], noise.shape[-2], "bilinear", "center")
            concat = comfy.utils.resize_to_batch_size(concat, noise.shape[0])
            if image.shape[-1] == self.cc_projection.in_features:
                image = self.cc_projection(image.to(self.cc_projection.weight.device))
            image = image.to(text.device, text.dtype)
            n = max(image.shape[0], text.shape[0])
            context = torch.cat([comfy.utils.resize_to_batch_size(image, n),
                                 comfy.utils.resize_to_batch_size(text, n)], dim=1)
            return {"c_concat": comfy.conds.CONDNoiseShape(concat),
                    "c_crossattn": comfy.conds.CONDCrossAttn(context)}

    return CustomNetConfig, CustomNetModel


def build_unet(parts: CustomNetParts):
    """The UNet (+ cc_projection, + the text-branch linears inside attn2) as a ComfyUI ModelPatcher; returns
    (patcher, keys it did not take)."""
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    CustomNetConfig, _ = _model_classes()
    prefix = "model.diffusion_model."
    unet_sd = {prefix + k: v for k, v in parts.unet.items()}
    unet_config = comfy.model_detection.detect_unet_config(unet_sd, prefix)
    if unet_config is None:
        raise CheckpointError(f"{parts.path}: ComfyUI cannot read the UNet's configuration from its weights")
    unet_config.pop("num_heads", None)
    unet_config.pop("num_head_channels", None)
    config = CustomNetConfig(unet_config, parts.cc_projection["weight"], parts.cc_projection["bias"])
    parameters = comfy.utils.calculate_parameters(parts.unet)
    weight_dtype = comfy.utils.weight_dtype(parts.unet)
    load_device = mm.get_torch_device()
    unet_dtype = mm.unet_dtype(model_params=parameters, supported_dtypes=list(config.supported_inference_dtypes),
                               weight_dtype=weight_dtype)
    config.set_inference_dtype(unet_dtype, mm.unet_manual_cast(unet_dtype, load_device,
                                                               config.supported_inference_dtypes))
    initial = mm.unet_inital_load_device(parameters, unet_dtype)
    model = config.get_model(unet_sd, prefix, device=initial)
    blocks = text_branch_blocks(parts.unet)
    dm = model.diffusion_model
    for path in blocks.values():
        attn2 = dm.get_submodule(path)
        linear = type(attn2.to_k)
        inner, ctx = parts.unet[path + ".to_k_text.weight"].shape
        for name in ("to_k_text", "to_v_text"):
            setattr(attn2, name, linear(ctx, inner, bias=False, dtype=attn2.to_k.weight.dtype, device=initial))
    missing, unexpected = dm.load_state_dict(parts.unet, strict=False)
    if missing:
        raise CheckpointError(f"{parts.path}: the UNet lacks {len(missing)} tensor(s) its configuration needs, e.g. "
                              f"{', '.join(missing[:4])}")
    model.customnet_text_blocks = blocks
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())
    return patcher, ["model.diffusion_model." + k for k in unexpected]


def build_vae(parts: CustomNetParts):
    import comfy.sd
    vae = comfy.sd.VAE(sd=dict(parts.vae), config={"params": {"embed_dim": parts.vae["quant_conv.weight"].shape[0] // 2,
                                                              "ddconfig": vae_ddconfig(parts.vae)}})
    unexpected = set(parts.vae) - set(vae.first_stage_model.state_dict())
    return vae, ["first_stage_model." + k for k in sorted(unexpected)]


def build_clip_vision(parts: CustomNetParts):
    """comfy.clip_vision.ClipVisionModel with the image tower's own configuration; ComfyUI's key conversion
    (convert_to_transformers) maps the OpenAI names."""
    import json
    import tempfile
    import comfy.clip_vision
    config = vision_config(parts.vision)
    sd = comfy.clip_vision.convert_to_transformers({"visual." + k: v for k, v in parts.vision.items()}, "visual.")
    # ClipVisionModel reads its configuration from a JSON file
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "clip_vision_config.json"
        cfg.write_text(json.dumps(config))
        clip_vision = comfy.clip_vision.ClipVisionModel(str(cfg))
    missing, unexpected = clip_vision.load_sd(sd)
    if missing:
        raise CheckpointError(f"{parts.path}: the CLIP image encoder lacks {len(missing)} tensor(s), e.g. "
                              f"{', '.join(missing[:4])}")
    return clip_vision, ["cond_stage_model.model.visual.(converted) " + k for k in unexpected]


def build_clip(parts: CustomNetParts):
    """The SD1.5 text encoder (transformers CLIPTextModel names) as ComfyUI's SD1 CLIP."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.utils
    config = text_config(parts.text)
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip_sd = {"clip_l.transformer." + k: v for k, v in parts.text.items()}
    hidden = config["hidden_size"]
    # the pooled projection is unused by SD1.5 conditioning; identity instead of uninitialised memory
    clip_sd.setdefault("clip_l.transformer.text_projection.weight", torch.eye(hidden))
    clip = comfy.sd.CLIP(target, parameters=comfy.utils.calculate_parameters(parts.text),
                         model_options={"clip_l_model_config": config})
    missing, unexpected = clip.load_sd(clip_sd, full_model=True)
    missing = [k for k in missing if not k.endswith("logit_scale")]
    if missing:
        raise CheckpointError(f"{parts.path}: the text encoder lacks {len(missing)} tensor(s), e.g. "
                              f"{', '.join(missing[:4])}")
    return clip, ["text_encoder.transformer." + k[len("clip_l.transformer."):] for k in unexpected]


@dataclass
class CustomNetBundle:
    model: object          # ModelPatcher, no attention patches (apply_text_branch adds them)
    clip: object
    clip_vision: object
    vae: object
    parts_kind: str
    inpaint: bool
    unused: list[str]
    report: str


def load_customnet(path: str | os.PathLike) -> CustomNetBundle:
    parts = read_checkpoint(path)
    unused = list(parts.unused)
    model, u = build_unet(parts)
    unused += u
    vae, u = build_vae(parts)
    unused += u
    clip_vision, u = build_clip_vision(parts)
    unused += u
    clip, u = build_clip(parts)
    unused += u
    notes = []
    match = schedule_matches(parts.schedule)
    if match is False:
        notes.append("the file's DDPM schedule (alphas_cumprod) differs from the linear 0.00085-0.012 schedule "
                     "the model samples with")
        log.warning("%s: %s", parts.path.name, notes[-1])
    unused += sorted(parts.schedule)   # compared with ComfyUI's schedule above, not loaded
    report = report_unused(parts.path, unused)
    summary = f"{parts.path.name}: {parts.kind}; {len(text_branch_blocks(parts.unet))} dual-attention blocks"
    if report:
        summary += "\n" + report + (" (the 12 DDPM schedule buffers are checked against ComfyUI's SD1.5 schedule, "
                                    "which samples the same betas)" if parts.schedule else "")
    if notes:
        summary += "\n" + "; ".join(notes)
    return CustomNetBundle(model, clip, clip_vision, vae, parts.kind, parts.inpaint, unused, summary)


BUNDLES = FileCache(max_entries=1)


def load_customnet_cached(path: str | os.PathLike) -> CustomNetBundle:
    """One CustomNet kept loaded (a full file is ~5.7 GB in RAM); a second file replaces it."""
    return BUNDLES.get(Path(path), (), lambda: load_customnet(path))
