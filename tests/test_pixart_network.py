"""Our PixArt network against diffusers' PixArtTransformer2DModel on the same random weights.

The weights are written in the original layout (real key names, small sizes) and converted for diffusers
with the mapping of diffusers' own conversion scripts; our side loads them through the checkpoint loader.
"""
import pytest
import torch
from diffusers import PixArtTransformer2DModel

from pixart_delta.tiny import pixart as fx
from pixart_delta.loaders.pixart_keys import original_to_diffusers
from pixart_delta.loaders.pixart import inspect_checkpoint
from pixart_delta.models.pixart import PixArt
from reference import rel_norm

LAYOUTS = {
    # name: (file name, fixture kwargs, diffusers interpolation_scale, non-square bucket in px (h, w))
    "alpha_512": ("PixArt-XL-2-512x512.pth", dict(micro=False, native_px=512, tokens=120), 1, (384, 640)),
    "alpha_1024_ms": ("PixArt-XL-2-1024-MS.pth", dict(micro=True, native_px=1024, tokens=120), 2, (768, 1344)),
    # pe_interpolation 0.5: PixArt-alpha/PixArt-sigma configs/pixart_sigma_config/PixArt_sigma_xl2_img256_internal.py
    "sigma_256": ("PixArt-Sigma-XL-2-256x256.pth", dict(micro=False, native_px=256, tokens=300), 0.5, (192, 336)),
    "sigma_1024": ("PixArt-Sigma-XL-2-1024-MS.pth", dict(micro=False, native_px=1024, tokens=300), 2, (1344, 768)),
}


def build(tmp_path, name):
    fname, kw, interp, bucket = LAYOUTS[name]
    sd = fx.random_original(seed=1, **fx.TINY, **kw)
    path = fx.write_original(tmp_path / fname, sd)
    ckpt = inspect_checkpoint(path)
    ours = PixArt(**ckpt.unet_config)
    ours.load_state_dict(ckpt.state_dict, strict=True)
    cfg = fx.diffusers_config(interpolation_scale=interp, **fx.TINY, **kw)
    ref = PixArtTransformer2DModel.from_config(cfg)
    ref.load_state_dict(original_to_diffusers(sd), strict=True)
    return ckpt, ours.eval(), ref.eval(), kw, bucket


def reference_eps(ref, x, t, ctx, micro, mask=None):
    h, w = x.shape[-2] * 8, x.shape[-1] * 8
    added = {"resolution": None, "aspect_ratio": None}
    if micro:
        added = {"resolution": torch.tensor([[h, w]] * x.shape[0], dtype=torch.float32),
                 "aspect_ratio": torch.tensor([[h / w]] * x.shape[0], dtype=torch.float32)}
    return ref(x, encoder_hidden_states=ctx, timestep=t, added_cond_kwargs=added,
               encoder_attention_mask=mask).sample[:, :4]


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("shape", ["native", "bucket"])
@pytest.mark.parametrize("linears", ["onednn", "layer forward"])
@torch.inference_mode()
def test_forward_matches_diffusers(tmp_path, monkeypatch, name, shape, linears):
    # "layer forward" is the path of GPUs, casting comfy.ops layers and gradients (models/linear.py)
    if linears == "layer forward":
        monkeypatch.setattr("pixart_delta.models.linear.ONEDNN", False)
    ckpt, ours, ref, kw, bucket = build(tmp_path, name)
    assert ckpt.variant.name == name
    h, w = (kw["native_px"], kw["native_px"]) if shape == "native" else bucket
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, h // 8, w // 8, generator=g)
    t = torch.tensor([999.0, 421.0])
    ctx = torch.randn(2, 9, fx.TINY["caption_channels"], generator=g)
    expected = reference_eps(ref, x, t, ctx, kw["micro"])
    got = ours(x, t, ctx)
    assert rel_norm(got, expected) < 1e-4


@pytest.mark.parametrize("name", list(LAYOUTS))
@torch.inference_mode()
def test_padded_prompt_with_mask_equals_unpadded(tmp_path, name):
    ckpt, ours, ref, kw, _ = build(tmp_path, name)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 32, 32, generator=g)
    t = torch.tensor([500.0, 20.0])
    c = fx.TINY["caption_channels"]
    ctx = torch.randn(2, 6, c, generator=g)
    padded = torch.cat([ctx, 50 * torch.randn(2, kw["tokens"] - 6, c, generator=g)], dim=1)
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, kw["tokens"] - 6)], dim=1)
    unpadded = ours(x, t, ctx)
    assert rel_norm(ours(x, t, padded, attention_mask=mask), unpadded) < 1e-5
    # diffusers with its mask agrees as well, and without a mask the padding does change the result
    assert rel_norm(reference_eps(ref, x, t, padded, kw["micro"], mask=mask), unpadded) < 1e-4
    assert rel_norm(ours(x, t, padded), unpadded) > 1e-3


# Diffusers folders: name -> (folder, fixture kwargs, config.json interpolation_scale, sizes in px (h, w)).
# The 42-block model is the community PixArt-Σ "900M" (ptx0/pixart-900m-1024-ft) at a reduced hidden size.
FOLDERS = {
    "sigma_256": ("PixArt-Sigma-XL-2-256x256", dict(**fx.TINY, micro=False, native_px=256, tokens=300), 0.5,
                  [(256, 256), (192, 336)]),
    # no interpolation_scale: diffusers uses max(sample_size // 64, 1) = 1, and so must we
    "sigma_256 no scale": ("PixArt-Sigma-XL-2-256x256", dict(**fx.TINY, micro=False, native_px=256, tokens=300),
                           None, [(256, 256), (192, 336)]),
    "sigma_1024 depth 42": ("pixart-900m-1024-ft", dict(fx.TINY, depth=42, micro=False, native_px=1024, tokens=300),
                            2, [(384, 640)]),
}


@pytest.mark.parametrize("name", list(FOLDERS))
@torch.inference_mode()
def test_diffusers_folder_forward_matches_diffusers(tmp_path, name):
    folder, kw, interp, sizes = FOLDERS[name]
    sd = fx.random_original(seed=4, **kw)
    cfg = fx.diffusers_config(**kw, interpolation_scale=interp)
    path = fx.write_diffusers(tmp_path / folder / "transformer", sd, cfg)
    ckpt = inspect_checkpoint(path)
    assert ckpt.variant.name == name.split()[0] and ckpt.unet_config["depth"] == kw["depth"]
    ours = PixArt(**ckpt.unet_config)
    ours.load_state_dict(ckpt.state_dict, strict=True)
    ref = PixArtTransformer2DModel.from_config(cfg)
    ref.load_state_dict(original_to_diffusers(sd), strict=True)
    assert len(ours.blocks) == len(ref.transformer_blocks) == kw["depth"]
    g = torch.Generator().manual_seed(0)
    for h, w in sizes:
        x = torch.randn(2, 4, h // 8, w // 8, generator=g)
        t = torch.tensor([999.0, 421.0])
        ctx = torch.randn(2, 9, fx.TINY["caption_channels"], generator=g)
        assert rel_norm(ours.eval()(x, t, ctx), reference_eps(ref.eval(), x, t, ctx, kw["micro"])) < 1e-4


@torch.inference_mode()
def test_diffusers_layout_loads_to_the_same_model(tmp_path):
    kw = dict(micro=True, native_px=1024, tokens=120)
    sd = fx.random_original(seed=5, **fx.TINY, **kw)
    folder = tmp_path / "PixArt-XL-2-1024-MS" / "transformer"
    fx.write_diffusers(folder, sd, fx.diffusers_config(**fx.TINY, **kw))
    ckpt = inspect_checkpoint(folder / "diffusion_pytorch_model.safetensors")
    assert ckpt.layout == "diffusers" and ckpt.variant.name == "alpha_1024_ms"
    expected = {k: v for k, v in sd.items() if k not in ("pos_embed", "y_embedder.y_embedding")}
    assert set(ckpt.state_dict) == set(expected)
    for k, v in expected.items():
        assert torch.equal(ckpt.state_dict[k], v), k


@torch.inference_mode()
def test_256px_runs_with_the_trained_position_embedding(tmp_path):
    """ComfyUI's native PixArt divides by zero at 256 px; the α-256 PE is the original table value."""
    sd = fx.random_original(seed=2, **fx.TINY, micro=False, native_px=256, tokens=120)
    ckpt = inspect_checkpoint(fx.write_original(tmp_path / "PixArt-XL-2-256x256.pth", sd))
    assert (ckpt.variant.name, ckpt.unet_config["base_size"], ckpt.unet_config["pe_interpolation"]) == ("alpha_256", 16, 1.0)
    model = PixArt(**ckpt.unet_config)
    model.load_state_dict(ckpt.state_dict)
    # the file's own fixed pos_embed buffer (here: what PixArt's get_2d_sincos_pos_embed gives) is reproduced
    pe = model.pos_embed(32, 32)
    ref = PixArtTransformer2DModel.from_config(fx.diffusers_config(**fx.TINY, native_px=256, interpolation_scale=1.0))
    assert torch.allclose(pe, ref.pos_embed.pos_embed, atol=1e-6)
    out = model(torch.randn(1, 4, 32, 32), torch.tensor([999.0]), torch.randn(1, 3, fx.TINY["caption_channels"]))
    assert out.shape == (1, 4, 32, 32) and torch.isfinite(out).all()


def test_input_gradients_match_diffusers(tmp_path):
    """The CPU oneDNN kernel has no autograd formula, so a call that needs gradients must avoid it
    (ComfyUI trains LoRAs through the MODEL)."""
    _, ours, ref, kw, _ = build(tmp_path, "alpha_512")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 32, 32, generator=g)
    ctx = torch.randn(1, 9, fx.TINY["caption_channels"], generator=g)
    t = torch.tensor([500.0])
    grads = []
    for run in (lambda a, c: ours(a, t, c), lambda a, c: reference_eps(ref, a, t, c, False)):
        a, c = x.clone().requires_grad_(), ctx.clone().requires_grad_()
        (run(a, c) ** 2).sum().backward()
        grads.append((a.grad, c.grad))
    for got, expected in zip(*grads):
        assert rel_norm(got, expected) < 1e-4
