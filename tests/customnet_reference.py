"""TencentARC/CustomNet's computation restated in plain torch, independent of the pack: diffusers'
UNet2DConditionModel (ldm weights converted by diffusers) with the dual cross-attention written out as
customnet/attention.py has it, diffusers' AutoencoderKL (encode().mode(), unscaled), transformers'
CLIPVisionModelWithProjection (the OpenAI weights converted here) and CLIPTextModel, the app's canvas, camera
vector, cc_projection and e = uc + 3 (c - uc) (main/app.py, main/main_inpaint.py, customnet/ddim.py), the DDIM
loop of customnet/ddim.py and ldm's decode_first_stage. Used by tests/test_customnet_comfy.py (parity) and
bench/customnet.py (the reference contender)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from reference import customnet_object   # ldm/util.py load_and_preprocess, restated

CFG = 3.0
SCALE_FACTOR = 0.18215          # configs/config_customnet.yaml scale_factor


def ref_clip_vision(vision_sd: dict, config: dict):
    """transformers CLIPVisionModelWithProjection from OpenAI CLIP `visual.*` weights (names mapped here)."""
    import transformers
    cfg = transformers.CLIPVisionConfig(hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
                                        num_hidden_layers=config["num_hidden_layers"],
                                        num_attention_heads=config["num_attention_heads"], image_size=224,
                                        patch_size=14, projection_dim=config["projection_dim"], hidden_act="quick_gelu")
    m = transformers.CLIPVisionModelWithProjection(cfg).eval()
    v = {k[len("visual."):]: t for k, t in vision_sd.items()}
    sd = {"vision_model.embeddings.class_embedding": v["class_embedding"],
          "vision_model.embeddings.patch_embedding.weight": v["conv1.weight"],
          "vision_model.embeddings.position_embedding.weight": v["positional_embedding"],
          "vision_model.pre_layrnorm.weight": v["ln_pre.weight"], "vision_model.pre_layrnorm.bias": v["ln_pre.bias"],
          "vision_model.post_layernorm.weight": v["ln_post.weight"],
          "vision_model.post_layernorm.bias": v["ln_post.bias"],
          "visual_projection.weight": v["proj"].t()}
    for i in range(config["num_hidden_layers"]):
        o, t = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[t + f"self_attn.{name}.weight"] = v[o + "attn.in_proj_weight"].chunk(3)[j]
            sd[t + f"self_attn.{name}.bias"] = v[o + "attn.in_proj_bias"].chunk(3)[j]
        pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                 "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
        for a, b in pairs.items():
            sd[t + b + ".weight"] = v[o + a + ".weight"]
            sd[t + b + ".bias"] = v[o + a + ".bias"]
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not [k for k in missing if "position_ids" not in k] and not unexpected
    return m


class RefDualAttention:
    """customnet/attention.py CrossAttention.forward with new_text_att=True, restated for diffusers' Attention."""

    def __init__(self, to_k_text: torch.Tensor, to_v_text: torch.Tensor, text_scale: float):
        self.wk, self.wv, self.text_scale = to_k_text, to_v_text, text_scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context_text = encoder_hidden_states[:, 1:, :]
        context = encoder_hidden_states[:, :1, :]
        h = attn.heads
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

        def heads(t):
            b, n, d = t.shape
            return t.reshape(b, n, h, d // h).permute(0, 2, 1, 3).reshape(b * h, n, d // h)
        q, k, v = heads(q), heads(k), heads(v)
        scale = q.shape[-1] ** -0.5
        out = torch.einsum("bij,bjd->bid", (torch.einsum("bid,bjd->bij", q, k) * scale).softmax(-1), v)
        k_text, v_text = heads(context_text @ self.wk.t()), heads(context_text @ self.wv.t())
        attn_text = (torch.einsum("bid,bjd->bij", q, k_text) * scale).softmax(-1)
        out = out + torch.einsum("bij,bjd->bid", attn_text, v_text) * self.text_scale
        bh, n, d = out.shape
        out = out.reshape(bh // h, h, n, d).permute(0, 2, 1, 3).reshape(bh // h, n, h * d)
        return attn.to_out[1](attn.to_out[0](out))


def ref_unet(sd: dict, in_channels: int, model_channels: int, context: int, text_scale: float):
    import diffusers
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    config = dict(sample_size=32, in_channels=in_channels, out_channels=4,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                  block_out_channels=tuple(model_channels * m for m in (1, 2, 4, 4)), layers_per_block=2,
                  cross_attention_dim=context, attention_head_dim=8)
    unet = diffusers.UNet2DConditionModel(**config).eval()
    converted = convert_ldm_unet_checkpoint({k: v for k, v in sd.items() if k.startswith("model.diffusion_model.")},
                                            config)
    text = {k: converted.pop(k) for k in list(converted) if "_text." in k}
    missing, unexpected = unet.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing[:3], unexpected[:3])
    assert len(text) == 32
    processors = {}
    for name in unet.attn_processors:
        base = name[:-len(".processor")]
        if base.endswith("attn2"):
            processors[name] = RefDualAttention(text[base + ".to_k_text.weight"], text[base + ".to_v_text.weight"],
                                                text_scale)
        else:
            processors[name] = diffusers.models.attention_processor.AttnProcessor()
    unet.set_attn_processor(processors)
    return unet


def ref_vae(sd: dict, ch: int):
    import diffusers
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    config = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(ch * m for m in (1, 2, 4, 4)),
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  layers_per_block=2, norm_num_groups=32, sample_size=256)
    vae = diffusers.AutoencoderKL(**config).eval()
    converted = convert_ldm_vae_checkpoint({k[len("first_stage_model."):]: v for k, v in sd.items()
                                            if k.startswith("first_stage_model.")}, config)
    missing, unexpected = vae.load_state_dict(converted, strict=False)
    assert not missing and not unexpected
    return vae


def ref_text(sd: dict, comfy_path, hidden: int, layers: int):
    import transformers
    tok = transformers.CLIPTokenizer.from_pretrained(str(comfy_path / "comfy" / "sd1_tokenizer"))
    cfg = transformers.CLIPTextConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                                      num_attention_heads=max(1, hidden // 64), max_position_embeddings=77,
                                      vocab_size=49408, hidden_act="quick_gelu", projection_dim=hidden)
    model = transformers.CLIPTextModel(cfg).eval()
    te = {k[len("text_encoder.transformer."):]: v for k, v in sd.items() if k.startswith("text_encoder.transformer.")}
    if not any(k.startswith("text_model.") for k in model.state_dict()):   # transformers 5 drops the prefix
        te = {k[len("text_model."):]: v for k, v in te.items()}
    missing, unexpected = model.load_state_dict(te, strict=False)
    assert not missing and all("position_ids" in k for k in unexpected), (missing, unexpected)

    def encode(text):
        ids = tok([text], truncation=True, max_length=77, padding="max_length", return_tensors="pt")["input_ids"]
        return model(input_ids=ids).last_hidden_state
    encode.model = model
    return encode


@dataclass
class ReferenceModels:
    vision: object      # CLIPVisionModelWithProjection
    vae: object         # diffusers AutoencoderKL
    encode: object      # text -> CLIP-L last_hidden_state
    unet: object        # diffusers UNet2DConditionModel with the dual cross-attention


def reference_models(sd: dict, sizes: dict, comfy_path, inpaint: bool, text_scale: float = 1.0) -> ReferenceModels:
    """Every network of a CustomNet state dict `sd` written at `sizes` (tiny/customnet.py's keys)."""
    ctx = sizes["context"]
    vision = ref_clip_vision({k[len("cond_stage_model.model."):]: v for k, v in sd.items()
                              if k.startswith("cond_stage_model.model.visual.")},
                             {"hidden_size": sizes["vision_width"], "intermediate_size": 4 * sizes["vision_width"],
                              "num_hidden_layers": sizes["vision_layers"],
                              "num_attention_heads": max(1, sizes["vision_width"] // 64), "projection_dim": ctx})
    vae = ref_vae(sd, sizes["vae_ch"])
    encode = ref_text(sd, comfy_path, ctx, sizes["text_layers"])
    unet = ref_unet(sd, 12 if inpaint else 8, sizes["model_channels"], ctx, text_scale)
    return ReferenceModels(vision, vae, encode, unet)


@torch.no_grad()
def reference_conditioning(sd, models: ReferenceModels, object_u8, alpha_u8, box, polar, azimuth, text,
                           background_u8):
    """main/app.py run_generation (main_inpaint.py with a background): ((c_concat, c_crossattn) of the
    conditional side, the same of the unconditional side)."""
    import cv2
    img_cond = torch.from_numpy(customnet_object(object_u8, alpha_u8)).float().permute(2, 0, 1)[None] / 255.0 * 2 - 1
    x0, y0, x1, y1 = box
    location = torch.ones_like(img_cond)
    location[:, :, y0:y1, x0:x1] = F.interpolate(img_cond, (y1 - y0, x1 - x0), mode="bilinear")
    T = torch.tensor([[math.radians(polar), math.sin(math.radians(azimuth)), math.cos(math.radians(azimuth)), 0.0]])[:, None]
    px = F.interpolate(img_cond, (224, 224), mode="bicubic", align_corners=True)    # kornia.geometry.resize
    px = ((px + 1) / 2 - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / \
        torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    c = models.vision(pixel_values=px).image_embeds.float()[:, None]
    c = F.linear(torch.cat([c, T], dim=-1), sd["cc_projection.weight"], sd["cc_projection.bias"])
    # ComfyUI's VAE takes 0..1 pixels (x * 2 - 1 inside): the same float rounding here, since a random VAE's
    # float32 GroupNorm over a mostly white canvas turns 1e-7 input differences into 1e-2 latent differences
    c_concat = [models.vae.encode((location + 1) / 2 * 2 - 1).latent_dist.mode()]
    uc_concat = [torch.zeros_like(c_concat[0])]
    if background_u8 is not None:
        bg = torch.from_numpy(cv2.resize(background_u8, (256, 256))).float().permute(2, 0, 1)[None] / 255.0 * 2 - 1
        bg[:, :, y0:y1, x0:x1] = 1
        bg_latent = models.vae.encode((bg + 1) / 2 * 2 - 1).latent_dist.mode()
        c_concat.append(bg_latent)
        uc_concat.append(bg_latent)
    cond_ctx = torch.cat([c, models.encode(text)], 1)
    uncond_ctx = torch.cat([torch.zeros_like(c), models.encode("")], 1)
    return (c_concat, cond_ctx), (uc_concat, uncond_ctx)


@torch.no_grad()
def reference_cfg_eps(unet, x_ddpm, t: int, cond, uncond, cfg: float = CFG) -> torch.Tensor:
    """customnet/ddim.py p_sample_ddim, cfg_type 0: two separate model calls, e = uc + cfg (c - uc)."""
    ts = torch.full((x_ddpm.shape[0],), t, dtype=torch.long)
    e_c = unet(torch.cat([x_ddpm] + cond[0], 1), ts, encoder_hidden_states=cond[1]).sample
    e_uc = unet(torch.cat([x_ddpm] + uncond[0], 1), ts, encoder_hidden_states=uncond[1]).sample
    return e_uc + cfg * (e_c - e_uc)


def ddim_timesteps(steps: int = 50, train_steps: int = 1000) -> np.ndarray:
    """ldm make_ddim_timesteps "uniform": 1, 21, ..., 981 for 50 of 1000."""
    return np.arange(0, train_steps, train_steps // steps) + 1


@torch.no_grad()
def reference_ddim(unet, cond, uncond, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int = 50,
                   cfg: float = CFG, callback=None) -> torch.Tensor:
    """customnet/ddim.py ddim_sampling with eta 0 (make_ddim_sampling_parameters: alphas_prev of the first
    DDIM step is alphas_cumprod[0])."""
    ts = ddim_timesteps(steps, alphas_cumprod.shape[0])
    a = alphas_cumprod.double()
    alphas = a[ts].float()
    alphas_prev = torch.cat([a[:1], a[ts[:-1]]]).float()
    x = x_T
    for i, t in enumerate(np.flip(ts)):
        index = len(ts) - i - 1
        e = reference_cfg_eps(unet, x, int(t), cond, uncond, cfg)
        a_t, a_prev = alphas[index], alphas_prev[index]
        pred_x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
        x = a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e
        if callback is not None:
            callback(i)
    return x


@torch.no_grad()
def reference_decode(vae, z: torch.Tensor) -> torch.Tensor:
    """ldm decode_first_stage (1 / scale_factor) and app.py's ((x + 1) / 2).clamp(0, 1), as [B, H, W, 3]."""
    x = vae.decode(z / SCALE_FACTOR).sample
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


@torch.no_grad()
def reference_eps(sd, sizes, object_u8, alpha_u8, box, polar, azimuth, text, background_u8, x_ddpm, t, text_scale,
                  comfy_path):
    """TencentARC/CustomNet main/app.py run_generation (main_inpaint.py with a background) up to one CFG eps."""
    models = reference_models(sd, sizes, comfy_path, background_u8 is not None, text_scale)
    cond, uncond = reference_conditioning(sd, models, object_u8, alpha_u8, box, polar, azimuth, text, background_u8)
    return reference_cfg_eps(models.unet, x_ddpm, t, cond, uncond)
