"""CustomNet inside ComfyUI, on random weights in the real checkpoint layout (narrow widths; the pack reads every
part's configuration from the shapes).

Parity: the CFG noise prediction of our MODEL on our Conditioning's positive/negative, through ComfyUI's own
condition processing and sampling_function, equals an independent restatement of TencentARC/CustomNet's
formulas: diffusers' UNet2DConditionModel (ldm weights converted by diffusers) with the dual cross-attention
written out as customnet/attention.py has it, diffusers' AutoencoderKL (encode().mode(), unscaled),
transformers' CLIPVisionModelWithProjection (the OpenAI weights converted here) and CLIPTextModel, the
app's canvas, camera vector, cc_projection and e = uc + 3 (c - uc) (main/app.py, customnet/ddim.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference import customnet_object

pytestmark = pytest.mark.comfyui

CFG = 3.0


# ---------------- the reference, independent of the pack ----------------

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
    return encode


@torch.no_grad()
def reference_eps(sd, sizes, object_u8, alpha_u8, box, polar, azimuth, text, background_u8, x_ddpm, t, text_scale,
                  comfy_path):
    """TencentARC/CustomNet main/app.py run_generation (main_inpaint.py with a background) up to one CFG eps."""
    import cv2
    inpaint = background_u8 is not None
    ctx = sizes["context"]
    img_cond = torch.from_numpy(customnet_object(object_u8, alpha_u8)).float().permute(2, 0, 1)[None] / 255.0 * 2 - 1
    x0, y0, x1, y1 = box
    location = torch.ones_like(img_cond)
    location[:, :, y0:y1, x0:x1] = F.interpolate(img_cond, (y1 - y0, x1 - x0), mode="bilinear")
    T = torch.tensor([[math.radians(polar), math.sin(math.radians(azimuth)), math.cos(math.radians(azimuth)), 0.0]])[:, None]
    vision = ref_clip_vision({k[len("cond_stage_model.model."):]: v for k, v in sd.items()
                              if k.startswith("cond_stage_model.model.visual.")},
                             {"hidden_size": sizes["vision_width"], "intermediate_size": 4 * sizes["vision_width"],
                              "num_hidden_layers": sizes["vision_layers"],
                              "num_attention_heads": max(1, sizes["vision_width"] // 64), "projection_dim": ctx})
    px = F.interpolate(img_cond, (224, 224), mode="bicubic", align_corners=True)    # kornia.geometry.resize
    px = ((px + 1) / 2 - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / \
        torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    c = vision(pixel_values=px).image_embeds.float()[:, None]
    c = F.linear(torch.cat([c, T], dim=-1), sd["cc_projection.weight"], sd["cc_projection.bias"])
    vae = ref_vae(sd, sizes["vae_ch"])
    encode = ref_text(sd, comfy_path, ctx, sizes["text_layers"])
    # ComfyUI's VAE takes 0..1 pixels (x * 2 - 1 inside): the same float rounding here, since a random VAE's
    # float32 GroupNorm over a mostly white canvas turns 1e-7 input differences into 1e-2 latent differences
    c_concat = [vae.encode((location + 1) / 2 * 2 - 1).latent_dist.mode()]
    uc_concat = [torch.zeros(1, 4, 32, 32)]
    if inpaint:
        bg = torch.from_numpy(cv2.resize(background_u8, (256, 256))).float().permute(2, 0, 1)[None] / 255.0 * 2 - 1
        bg[:, :, y0:y1, x0:x1] = 1
        bg_latent = vae.encode((bg + 1) / 2 * 2 - 1).latent_dist.mode()
        c_concat.append(bg_latent)
        uc_concat.append(bg_latent)
    cond_ctx = torch.cat([c, encode(text)], 1)
    uncond_ctx = torch.cat([torch.zeros_like(c), encode("")], 1)
    unet = ref_unet(sd, 12 if inpaint else 8, sizes["model_channels"], ctx, text_scale)
    ts = torch.tensor([t])
    e_c = unet(torch.cat([x_ddpm] + c_concat, 1), ts, encoder_hidden_states=cond_ctx).sample
    e_uc = unet(torch.cat([x_ddpm] + uc_concat, 1), ts, encoder_hidden_states=uncond_ctx).sample
    return e_uc + CFG * (e_c - e_uc)


# ---------------- ours ----------------

def picture(seed: int):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (180, 150, 3), dtype=np.uint8)
    alpha = np.zeros((180, 150), np.uint8)
    alpha[30:160, 20:120] = 255
    alpha[60:80, 40:60] = 0
    return img, alpha


@pytest.fixture(scope="module")
def files(comfy, comfy_dirs, one_torch_thread):
    """The two test checkpoints; the CLIPs run in fp32 (ComfyUI's --fp32-text-enc) as the reference does: on
    CPU ComfyUI keeps text and image encoders in fp16 by default."""
    import comfy.cli_args
    from pixart_delta.tiny.customnet import TINY, customnet_state_dict
    fp32_before = comfy.cli_args.args.fp32_text_enc
    comfy.cli_args.args.fp32_text_enc = True
    out = {}
    for name, inpaint in (("customnet_test_object.pt", False), ("customnet_test_inpaint.pt", True)):
        sd = customnet_state_dict(inpaint=inpaint, seed=3 if inpaint else 2)
        path = comfy_dirs["models"] / "customnet" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, str(path))
        out[inpaint] = (name, sd)
    yield out, TINY
    comfy.cli_args.args.fp32_text_enc = fp32_before


@torch.no_grad()
def our_eps(name, text_scale, object_u8, alpha_u8, box, polar, azimuth, text, background_u8, x_ddpm, t):
    import comfy.model_management as mm
    import comfy.sampler_helpers
    import comfy.samplers
    from pixart_delta.nodes.customnet import MASK_BACKGROUND, PixArtCustomNetConditioning, PixArtCustomNetLoader
    model, clip, clip_vision, vae = PixArtCustomNetLoader.execute(name, text_scale).result
    image = torch.from_numpy(object_u8).float()[None] / 255.0
    mask = 1.0 - torch.from_numpy(alpha_u8).float()[None] / 255.0          # Load Image's MASK = 1 - alpha
    bg = None if background_u8 is None else torch.from_numpy(background_u8).float()[None] / 255.0
    pos, neg, latent, obj, canvas = PixArtCustomNetConditioning.execute(
        clip, clip_vision, vae, image, *box, polar, azimuth, text, mask=mask, mask_convention=MASK_BACKGROUND,
        background=bg).result
    assert latent["samples"].shape == (1, 4, 32, 32)
    mm.load_models_gpu([model])
    model.pre_run()                       # as CFGGuider does: the model knows its patcher
    base = model.model
    sigma = base.model_sampling.sigmas[t].reshape(1)
    x = x_ddpm * (1.0 + sigma ** 2).sqrt()
    conds = {"positive": comfy.sampler_helpers.convert_cond(pos), "negative": comfy.sampler_helpers.convert_cond(neg)}
    conds = comfy.samplers.process_conds(base, x, conds, x.device, seed=0)
    denoised = comfy.samplers.sampling_function(base, x, sigma, conds["negative"], conds["positive"], CFG,
                                                model_options=model.model_options, seed=0)
    return (x - denoised) / sigma


@pytest.mark.parametrize("inpaint", [False, True], ids=["object", "inpaint"])
@pytest.mark.parametrize("text_scale", [1.0, 0.0], ids=["text", "no_text"])
def test_noise_prediction_matches_the_reference(comfy, files, inpaint, text_scale):
    (by_kind, sizes) = files
    name, sd = by_kind[inpaint]
    img, alpha = picture(0)
    background = np.random.default_rng(5).integers(0, 256, (200, 300, 3), dtype=np.uint8) if inpaint else None
    box, polar, azimuth, text = (40, 30, 220, 200), -15.0, 35.0, "a backpack in the office"
    x_ddpm = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(7))
    t = 501
    ours = our_eps(name, text_scale, img, alpha, box, polar, azimuth, text, background, x_ddpm, t)
    ref = reference_eps(sd, sizes, img, alpha, box, polar, azimuth, text, background, x_ddpm, t, text_scale,
                        comfy.comfy_path)
    assert ref.abs().max() > 0.1
    assert (ours - ref).abs().max().item() < 1e-5, (ours - ref).abs().max().item()


def test_text_branch_changes_the_prediction(comfy, files):
    """The text weights are in use: the prompt moves the prediction only when text_scale is not 0."""
    (by_kind, _) = files
    name, _ = by_kind[False]
    img, alpha = picture(0)
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    args = (img, alpha, (0, 0, 256, 256), 0.0, 0.0)
    a = our_eps(name, 1.0, *args, "a red car", None, x, 301)
    b = our_eps(name, 1.0, *args, "in the snow", None, x, 301)
    c = our_eps(name, 0.0, *args, "a red car", None, x, 301)
    d = our_eps(name, 0.0, *args, "in the snow", None, x, 301)
    assert (a - b).abs().max() > 1e-3
    assert (c - d).abs().max() < 1e-6


def test_loader_reports_every_unused_key(comfy, files):
    from pixart_delta.loaders.customnet import SCHEDULE_KEYS
    from pixart_delta.loaders.customnet_comfy import load_customnet_cached, resolve_customnet_file
    from pixart_delta.nodes.customnet import PixArtCustomNetLoader
    (by_kind, _) = files
    name, sd = by_kind[False]
    out = PixArtCustomNetLoader.execute(name)
    bundle = load_customnet_cached(resolve_customnet_file(name))
    expected = set(SCHEDULE_KEYS) | {"text_encoder.transformer.text_model.embeddings.position_ids"} | {
        k for k in sd if k.startswith("cond_stage_model.model.") and not k.startswith("cond_stage_model.model.visual.")}
    assert set(bundle.unused) == expected
    text = out.ui["text"][0]
    assert all(k in text for k in expected)
    assert "16 dual-attention blocks" in text
    # the loaded parts hold every other tensor: UNet (with the 32 text-branch linears), VAE, CLIP vision, text
    dm = bundle.model.model.diffusion_model.state_dict()
    assert sum(k.endswith(("to_k_text.weight", "to_v_text.weight")) for k in dm) == 32
    assert len(dm) == sum(k.startswith("model.diffusion_model.") for k in sd)


def test_wrong_conditioning_is_refused(comfy, files):
    import comfy.sample
    import nodes
    from pixart_delta.nodes.customnet import PixArtCustomNetLoader
    (by_kind, _) = files
    model, clip, _, _ = PixArtCustomNetLoader.execute(by_kind[True][0]).result
    cond = nodes.CLIPTextEncode().encode(clip, "a car")[0]
    latent = torch.zeros(1, 4, 32, 32)
    with pytest.raises(ValueError, match="CustomNet Conditioning"):
        comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), 1, 1.0, "euler", "normal", cond, cond,
                            latent)


def test_object_model_refuses_a_background(comfy, files):
    import comfy.sample
    from pixart_delta.nodes.customnet import PixArtCustomNetConditioning, PixArtCustomNetLoader
    (by_kind, _) = files
    model, clip, cv, vae = PixArtCustomNetLoader.execute(by_kind[False][0]).result
    img = torch.rand(1, 64, 64, 3)
    pos, neg, latent, _, _ = PixArtCustomNetConditioning.execute(clip, cv, vae, img, 0, 0, 256, 256, 0.0, 0.0, "x",
                                                                 background=img).result
    with pytest.raises(ValueError, match="leave the background input empty"):
        comfy.sample.sample(model, comfy.sample.prepare_noise(latent["samples"], 0), 1, 1.0, "euler", "normal",
                            pos, neg, latent["samples"])


@pytest.mark.parametrize("damage", ["no_text_branch", "no_cc_projection", "stable_zero123_channels", "empty"])
def test_bad_files_are_named(comfy, comfy_dirs, files, damage):
    from pixart_delta.loaders.files import CheckpointError
    from pixart_delta.nodes.customnet import PixArtCustomNetLoader
    (by_kind, _) = files
    sd = dict(by_kind[False][1])
    path = comfy_dirs["models"] / "customnet" / f"customnet_bad_{damage}.pt"
    if damage == "no_text_branch":
        sd = {k: v for k, v in sd.items() if "_text." not in k}
        want = "no attn2.to_k_text"
    elif damage == "no_cc_projection":
        sd = {k: v for k, v in sd.items() if not k.startswith("cc_projection.")}
        want = "no cc_projection.weight"
    elif damage == "stable_zero123_channels":
        w = sd["model.diffusion_model.input_blocks.0.0.weight"]
        sd["model.diffusion_model.input_blocks.0.0.weight"] = w[:, :4]
        want = "takes 4 input channels"
    if damage == "empty":
        path.write_bytes(b"")
        want = "empty"
    else:
        torch.save(sd, str(path))
    with pytest.raises(CheckpointError, match=want) as e:
        PixArtCustomNetLoader.execute(path.name)
    assert path.name in str(e.value)


def test_ddim_uniform_50_visits_the_reference_timesteps(comfy, files):
    """The bundled workflows' KSampler (ddim + ddim_uniform, 50 steps) on the loaded model visits the timesteps of
    the reference's DDIM (customnet/ddim.py -> ldm make_ddim_timesteps "uniform": range(0, 1000, 1000 // 50) + 1,
    i.e. 981, 961, ..., 1) at their sigmas under the training schedule, then sigma 0."""
    import comfy.samplers
    from pixart_delta.nodes.customnet import PixArtCustomNetLoader
    (by_kind, _) = files
    model = PixArtCustomNetLoader.execute(by_kind[False][0]).result[0]
    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "ddim_uniform", 50)
    timesteps = np.arange(0, 1000, 1000 // 50)[::-1] + 1
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    expected = np.sqrt((1 - alphas_cumprod[timesteps]) / alphas_cumprod[timesteps])
    assert len(sigmas) == 51 and sigmas[-1] == 0
    assert np.allclose(sigmas[:-1].double().numpy(), expected, rtol=1e-5, atol=0)
    assert sampling.timestep(sigmas[:-1]).round().long().tolist() == timesteps.tolist()
