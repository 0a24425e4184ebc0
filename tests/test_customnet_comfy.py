"""CustomNet inside ComfyUI, on random weights in the real checkpoint layout (narrow widths; the pack reads every
part's configuration from the shapes).

Parity: the CFG noise prediction of our MODEL on our Conditioning's positive/negative, through ComfyUI's own
condition processing and sampling_function, equals an independent restatement of TencentARC/CustomNet's
formulas (tests/customnet_reference.py, shared with bench/customnet.py): diffusers' UNet2DConditionModel
(ldm weights converted by diffusers) with the dual cross-attention written out as customnet/attention.py has
it, diffusers' AutoencoderKL (encode().mode(), unscaled), transformers' CLIPVisionModelWithProjection (the
OpenAI weights converted here) and CLIPTextModel, the app's canvas, camera vector, cc_projection and
e = uc + 3 (c - uc) (main/app.py, customnet/ddim.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from customnet_reference import CFG, reference_eps

pytestmark = pytest.mark.comfyui


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
