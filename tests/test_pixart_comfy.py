"""The PixArt MODEL inside a real ComfyUI: parity of its noise prediction with diffusers, latent formats,
prediction types, core KSampler / SamplerCustom / LoRA, 256 px, and loader errors through the executor."""
import math

import pytest
import torch

from pixart_delta.tiny import pixart as fx
from pixart_delta.loaders.pixart_keys import original_to_diffusers
from reference import rel_norm

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def unet_dir(models_dir):
    d = models_dir / "diffusion_models" / "test_pixart_comfy"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load(path, variant="auto", weight_dtype="default"):
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    return load_pixart_model(path, variant, weight_dtype)


@torch.inference_mode()
def test_model_noise_prediction_matches_diffusers(comfy, unet_dir):
    """ComfyUI MODEL (apply_model: VE sigma input, micro-conditioning conds) vs diffusers at the same timestep."""
    from diffusers import PixArtTransformer2DModel
    kw = dict(**fx.TINY, micro=True, native_px=1024, tokens=120)
    sd = fx.random_original(seed=21, **kw)
    patcher = load(fx.write_original(unet_dir / "PixArt-XL-2-1024-MS.pth", sd), weight_dtype="fp32")
    ref = PixArtTransformer2DModel.from_config(fx.diffusers_config(**kw, interpolation_scale=2))
    ref.load_state_dict(original_to_diffusers(sd))
    model = patcher.model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 96, 168, generator=g)            # 768 x 1344 px bucket
    ctx = torch.randn(2, 11, fx.TINY["caption_channels"], generator=g)
    sigma = model.model_sampling.sigma(torch.tensor([700.0, 700.0]))
    c_size, c_ar = torch.tensor([[768.0, 1344.0]] * 2), torch.tensor([[768 / 1344]] * 2)
    denoised = model.apply_model(x, sigma, c_crossattn=ctx, c_size=c_size, c_ar=c_ar)
    eps = (x - denoised) / sigma.reshape(-1, 1, 1, 1)
    x_in = x / torch.sqrt(sigma ** 2 + 1).reshape(-1, 1, 1, 1)
    expected = ref(x_in, encoder_hidden_states=ctx, timestep=torch.tensor([700.0, 700.0]),
                   added_cond_kwargs={"resolution": c_size, "aspect_ratio": c_ar}).sample[:, :4]
    assert rel_norm(eps, expected) < 1e-4


@pytest.mark.parametrize("name,kw,scale,vpred", [
    ("PixArt-XL-2-512x512.pth", dict(micro=False, native_px=512, tokens=120), 0.18215, False),
    ("PixArt-Sigma-XL-2-1024-MS.pth", dict(micro=False, native_px=1024, tokens=300), 0.13025, False),
    ("PixArt-Sigma-XL-2-256x256.pth", dict(micro=False, native_px=256, tokens=300), 0.13025, False),
    ("yoso_pixart512.pth", dict(micro=False, native_px=512, tokens=120), 0.18215, True),
])
def test_latent_format_and_prediction_type(comfy, unet_dir, name, kw, scale, vpred):
    import comfy.model_sampling
    patcher = load(fx.write_original(unet_dir / name, fx.random_original(**fx.TINY, **kw)))
    assert patcher.model.latent_format.scale_factor == scale
    assert isinstance(patcher.model.model_sampling, comfy.model_sampling.V_PREDICTION) == vpred
    # the linear-beta PixArt schedule: alpha_bar(999) = 4.0358e-5 -> sigma(999) = 157.407 (pixart.md §6)
    assert math.isclose(float(patcher.model.model_sampling.sigma_max), 157.407, rel_tol=1e-4)


@pytest.mark.parametrize("name,tokens,latent_format,pe_interpolation", [
    ("PixArt-XL-2-256x256.pth", 120, "SD15", 1.0),
    ("PixArt-Sigma-XL-2-256x256.pth", 300, "SDXL", 0.5),
])
@torch.inference_mode()
def test_core_ksampler_and_sampler_custom_at_256px(comfy, unet_dir, name, tokens, latent_format, pe_interpolation):
    import comfy.latent_formats
    import nodes
    from comfy_extras.nodes_custom_sampler import BasicScheduler, KSamplerSelect, SamplerCustom
    patcher = load(fx.write_original(unet_dir / name,
                                     fx.random_original(**fx.TINY, micro=False, native_px=256, tokens=tokens)))
    assert type(patcher.model.latent_format) is getattr(comfy.latent_formats, latent_format)
    net = patcher.model.diffusion_model
    assert (net.base_size, net.pe_interpolation) == (16, pe_interpolation)
    cond = [[torch.randn(1, 7, fx.TINY["caption_channels"]), {}]]
    uncond = [[torch.randn(1, 1, fx.TINY["caption_channels"]), {}]]
    latent = {"samples": torch.zeros(1, 4, 32, 32)}
    (out,) = nodes.KSampler().sample(patcher, 1, 3, 4.5, "dpmpp_2m", "sgm_uniform", cond, uncond, latent)
    assert out["samples"].shape == (1, 4, 32, 32) and torch.isfinite(out["samples"]).all()
    (sigmas,) = BasicScheduler().get_sigmas(patcher, "normal", 3, 1.0)
    (sampler,) = KSamplerSelect().get_sampler("euler")
    res = SamplerCustom().sample(patcher, True, 7, 4.5, cond, uncond, sampler, sigmas, latent)
    assert res[0]["samples"].shape == (1, 4, 32, 32) and torch.isfinite(res[0]["samples"]).all()


@torch.inference_mode()
def test_diffusers_format_lora_patches_the_right_weights(comfy, unet_dir):
    """A PEFT/diffusers LoRA (transformer.transformer_blocks.i.attn1.to_k...) lands on the fused qkv rows."""
    import comfy.sd
    patcher = load(fx.write_original(unet_dir / "lora_base.pth",
                                     fx.random_original(**fx.TINY, micro=False, native_px=512)), weight_dtype="fp32")
    hidden, rank = fx.TINY["hidden"], 4
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(rank, hidden, generator=g), torch.randn(hidden, rank, generator=g)
    a2, b2 = torch.randn(rank, hidden, generator=g), torch.randn(hidden, rank, generator=g)
    lora = {"transformer.transformer_blocks.1.attn1.to_k.lora_A.weight": a,
            "transformer.transformer_blocks.1.attn1.to_k.lora_B.weight": b,
            "transformer.transformer_blocks.0.attn2.to_q.lora_A.weight": a2,
            "transformer.transformer_blocks.0.attn2.to_q.lora_B.weight": b2}
    before_qkv = patcher.model.diffusion_model.blocks[1].attn.qkv.weight.clone()
    before_q = patcher.model.diffusion_model.blocks[0].cross_attn.q_linear.weight.clone()
    lored, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 0.5, 0)
    lored.patch_model()
    try:
        qkv = lored.model.diffusion_model.blocks[1].attn.qkv.weight
        expected = before_qkv.clone()
        expected[hidden:2 * hidden] += 0.5 * (b @ a)
        assert torch.allclose(qkv, expected, atol=1e-5)
        q = lored.model.diffusion_model.blocks[0].cross_attn.q_linear.weight
        assert torch.allclose(q, before_q + 0.5 * (b2 @ a2), atol=1e-5)
    finally:
        lored.unpatch_model()


def test_loader_error_reaches_the_user_and_executor_keeps_working(comfy, models_dir, unet_dir):
    from pixart_delta.tools.comfy_runtime import ExecutionFailed
    fx.save(unet_dir / "v1-5-pruned-emaonly.safetensors",
            {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)})
    fx.write_original(unet_dir / "good.pth", fx.random_original(**fx.TINY, micro=False, native_px=512))

    def graph(name):
        return {"1": {"class_type": "PixArtCheckpointLoader",
                      "inputs": {"ckpt_name": f"test_pixart_comfy/{name}", "variant": "auto", "weight_dtype": "default"}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    with pytest.raises(ExecutionFailed) as e:
        comfy.run(graph("v1-5-pruned-emaonly.safetensors"))
    assert e.value.node_id == "1" and "Stable Diffusion UNet" in e.value.message
    assert "v1-5-pruned-emaonly.safetensors" in e.value.message
    comfy.run(graph("good.pth"))


@torch.inference_mode()
def test_foreign_controlnet_stops_the_sampler_with_a_clear_error(comfy, unet_dir):
    """An SD-family ControlNet on a PixArt MODEL must never be silently unused."""
    import comfy.controlnet
    import nodes
    patcher = load(fx.write_original(unet_dir / "cn_base.pth", fx.random_original(**fx.TINY, micro=False, native_px=512)))
    adapter = comfy.controlnet.T2IAdapter(torch.nn.Identity(), 4, 8, "nearest-exact")
    adapter = adapter.set_cond_hint(torch.zeros(1, 3, 64, 64), 1.0)
    cond = [[torch.randn(1, 5, fx.TINY["caption_channels"]), {"control": adapter}]]
    uncond = [[torch.randn(1, 1, fx.TINY["caption_channels"]), {}]]
    with pytest.raises(ValueError, match="T2IAdapter ControlNet is attached to a PixArt MODEL"):
        nodes.KSampler().sample(patcher, 1, 1, 4.5, "euler", "normal", cond, uncond,
                                {"samples": torch.zeros(1, 4, 8, 8)})
