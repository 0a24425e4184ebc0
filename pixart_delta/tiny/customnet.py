"""CustomNet stand-ins (TencentARC/CustomNet customnet_v1.pt / customnet_inpaint_v1.pt): the whole LatentDiffusion
state_dict in the real key layout - the 12 DDPM schedule buffers, model.diffusion_model.* (SD1.5 UNet names with
attn2.to_k_text/to_v_text in every transformer block), first_stage_model.* (ldm AutoencoderKL),
cond_stage_model.model.* (OpenAI CLIP: the visual tower and the unused text remnants), cc_projection.*,
text_encoder.transformer.text_model.* (transformers CLIPTextModel names incl. embeddings.position_ids) - as a
torch.save pickle, random fp32 weights.

The pack reads every part's configuration from the shapes, so these files are narrow (UNet 32 channels, 64-wide
context / CLIP, VAE 32 channels: ~25 MB); the UNet shapes come from ComfyUI's own UNetModel on the meta device
(the ldm names), so writing needs a booted ComfyUI, as `run --tiny` and the tests have.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

OBJECT_FILE = "customnet/customnet_v1.pt"
INPAINT_FILE = "customnet/customnet_inpaint_v1.pt"

# Released sizes (configs/config_customnet.yaml; OpenAI CLIP ViT-L/14; SD1.5 CLIP-L) and the tiny ones.
FULL = {"model_channels": 320, "context": 768, "vae_ch": 128, "vision_width": 1024, "vision_layers": 24,
        "text_layers": 12}
TINY = {"model_channels": 32, "context": 64, "vae_ch": 32, "vision_width": 64, "vision_layers": 2,
        "text_layers": 2}
VOCAB, TEXT_POSITIONS, PATCH, IMAGE_SIZE = 49408, 77, 14, 224


def schedule_buffers(timesteps=1000, linear_start=0.00085, linear_end=0.012) -> dict[str, torch.Tensor]:
    """ldm DDPM.register_schedule's persistent buffers for the "linear" schedule (v_posterior 0), float32."""
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    out = {"betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev, "sqrt_alphas_cumprod": ac.sqrt(),
           "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(), "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
           "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(), "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(),
           "posterior_variance": post_var,
           "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
           "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
           "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac)}
    return {k: v.float() for k, v in out.items()}


def _unet_shapes(in_channels: int, model_channels: int, context: int) -> dict[str, tuple]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    with torch.device("meta"):
        # SD1.5 in ComfyUI's terms (comfy/model_detection.py SD15): attention at the first three levels
        unet = UNetModel(image_size=32, in_channels=in_channels, out_channels=4, model_channels=model_channels,
                         num_res_blocks=[2, 2, 2, 2], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                         channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
                         transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], num_heads=8,
                         use_spatial_transformer=True, context_dim=context, use_linear_in_transformer=False,
                         use_checkpoint=False, legacy=False, operations=comfy.ops.disable_weight_init)
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    for k in list(shapes):
        if k.endswith(".attn2.to_k.weight"):
            base = k[:-len("to_k.weight")]
            shapes[base + "to_k_text.weight"] = shapes[k]
            shapes[base + "to_v_text.weight"] = shapes[base + "to_v.weight"]
    return shapes


def _vae_shapes(ch: int) -> dict[str, tuple]:
    from comfy.ldm.models.autoencoder import AutoencoderKL
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": ch,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    with torch.device("meta"):
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    return {k: tuple(v.shape) for k, v in vae.state_dict().items()}


def _openai_clip_shapes(width: int, layers: int, proj: int) -> dict[str, tuple]:
    """OpenAI CLIP (clip.model.CLIP) after FrozenCLIPImageEmbedder deletes `transformer`: the visual tower and
    the text embedding remnants (a 768-wide text side: CLIP ViT-L/14's)."""
    grid = IMAGE_SIZE // PATCH
    s = {"visual.class_embedding": (width,), "visual.positional_embedding": (grid * grid + 1, width),
         "visual.proj": (width, proj), "visual.conv1.weight": (width, 3, PATCH, PATCH),
         "visual.ln_pre.weight": (width,), "visual.ln_pre.bias": (width,),
         "visual.ln_post.weight": (width,), "visual.ln_post.bias": (width,)}
    for i in range(layers):
        b = f"visual.transformer.resblocks.{i}."
        s.update({b + "attn.in_proj_weight": (3 * width, width), b + "attn.in_proj_bias": (3 * width,),
                  b + "attn.out_proj.weight": (width, width), b + "attn.out_proj.bias": (width,),
                  b + "ln_1.weight": (width,), b + "ln_1.bias": (width,),
                  b + "mlp.c_fc.weight": (4 * width, width), b + "mlp.c_fc.bias": (4 * width,),
                  b + "mlp.c_proj.weight": (width, 4 * width), b + "mlp.c_proj.bias": (width,),
                  b + "ln_2.weight": (width,), b + "ln_2.bias": (width,)})
    s.update({"positional_embedding": (TEXT_POSITIONS, proj), "text_projection": (proj, proj), "logit_scale": (),
              "token_embedding.weight": (VOCAB, proj), "ln_final.weight": (proj,), "ln_final.bias": (proj,)})
    return s


def _text_shapes(hidden: int, layers: int) -> dict[str, tuple]:
    """transformers CLIPTextModel names (text_model.*)."""
    s = {"text_model.embeddings.token_embedding.weight": (VOCAB, hidden),
         "text_model.embeddings.position_embedding.weight": (TEXT_POSITIONS, hidden),
         "text_model.final_layer_norm.weight": (hidden,), "text_model.final_layer_norm.bias": (hidden,)}
    for i in range(layers):
        b = f"text_model.encoder.layers.{i}."
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[b + f"self_attn.{p}.weight"] = (hidden, hidden)
            s[b + f"self_attn.{p}.bias"] = (hidden,)
        s.update({b + "layer_norm1.weight": (hidden,), b + "layer_norm1.bias": (hidden,),
                  b + "mlp.fc1.weight": (4 * hidden, hidden), b + "mlp.fc1.bias": (4 * hidden,),
                  b + "mlp.fc2.weight": (hidden, 4 * hidden), b + "mlp.fc2.bias": (hidden,),
                  b + "layer_norm2.weight": (hidden,), b + "layer_norm2.bias": (hidden,)})
    return s


def _random(shapes: dict[str, tuple], g: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for k, shape in shapes.items():
        if len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            out[k] = torch.randn(shape, generator=g) / fan_in ** 0.5
        elif len(shape) == 1 and ("norm" in k or k.rsplit(".", 1)[-1].startswith("ln_") or ".ln_" in k) \
                and k.endswith("weight"):
            out[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[k] = 0.1 * torch.randn(shape, generator=g)
    return out


def customnet_state_dict(inpaint: bool = False, sizes: dict | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A CustomNet LatentDiffusion state_dict (random fp32) at `sizes` (TINY by default)."""
    z = {**TINY, **(sizes or {})}
    g = torch.Generator().manual_seed(seed)
    sd = dict(schedule_buffers())
    groups = (("model.diffusion_model.", _unet_shapes(12 if inpaint else 8, z["model_channels"], z["context"])),
              ("first_stage_model.", _vae_shapes(z["vae_ch"])),
              ("cond_stage_model.model.", _openai_clip_shapes(z["vision_width"], z["vision_layers"], z["context"])),
              ("text_encoder.transformer.", _text_shapes(z["context"], z["text_layers"])))
    for prefix, shapes in groups:
        sd.update({prefix + k: v for k, v in _random(shapes, g).items()})
    sd["cond_stage_model.model.logit_scale"] = torch.tensor(math.log(100.0))
    sd["text_encoder.transformer.text_model.embeddings.position_ids"] = torch.arange(TEXT_POSITIONS)[None]
    ctx = z["context"]
    sd["cc_projection.weight"] = torch.randn(ctx, ctx + 4, generator=g) / (ctx + 4) ** 0.5
    sd["cc_projection.bias"] = 0.1 * torch.randn(ctx, generator=g)
    return sd


def write_customnet(path: Path, inpaint: bool = False, sizes: dict | None = None, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(customnet_state_dict(inpaint, sizes, seed), str(path))
    return path


def write_customnet_inpaint(path: Path) -> Path:
    return write_customnet(path, inpaint=True, seed=1)


FILES = {
    OBJECT_FILE: write_customnet,
    INPAINT_FILE: write_customnet_inpaint,
}
