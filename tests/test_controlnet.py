"""PixArt-δ ControlNet without ComfyUI, on tiny models: layouts (original full file with/without wrapper,
controlnet-only, diffusers adapter), errors for foreign or unfit files, exact no-control properties, hint fitting."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import PixArtTransformer2DModel

from pixart_delta.tiny import pixart as fx
from pixart_delta.tiny.io import save
from pixart_delta.tiny.pixart_controlnet import TINY_CN, random_controlnet_file, tiny_controlnet_file
from pixart_delta.loaders.pixart_keys import original_controlnet_to_diffusers_adapter, original_to_diffusers
from pixart_delta.loaders.files import CheckpointError
from pixart_delta.loaders.pixart import inspect_checkpoint
from pixart_delta.loaders.pixart_controlnet import check_fit, read_controlnet
from pixart_delta.loaders.variants import VARIANTS
from pixart_delta.models.pixart import PixArt
from pixart_delta.models.pixart_controlnet import PixArtControlNetBranch, PixArtControlRun
from pixart_delta.preprocessors.controlnet_hint import HintError, fit_hint, hint_batch
from pixart_controlnet_reference import Adapter, adapter_transformer_block, controlled_forward

CFG = dict(hidden_size=144, depth=14, micro_condition=True)


def build(path, sd):
    ckpt = inspect_checkpoint(path, sd=dict(sd))
    base = PixArt(**ckpt.unet_config)
    base.load_state_dict(ckpt.state_dict, strict=True)
    cn = read_controlnet(path, sd=sd)
    branch = PixArtControlNetBranch(cn.hidden, cn.num_heads, cn.copies)
    branch.load_state_dict(cn.state_dict, strict=True)
    return base.eval(), cn, branch.eval()


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(batch, 4, 8, 8, generator=g), timesteps=torch.tensor([800.0, 30.0][:batch]),
                context=torch.randn(batch, 6, TINY_CN["caption_channels"], generator=g))


def eps(base, runs=(), **kw):
    return base(kw["x"], kw["timesteps"], kw["context"], transformer_options={"pixart_controlnet": list(runs)})


@pytest.fixture(scope="module")
def tiny():
    sd = tiny_controlnet_file(1024)
    return sd, *build(Path("PixArt-XL-2-1024-ControlNet.pth"), sd)


def test_original_and_diffusers_adapter_layouts_give_the_same_prediction(tmp_path, tiny):
    sd, base, cn, branch = tiny
    adapter = original_controlnet_to_diffusers_adapter(sd)
    assert all(k.startswith("controlnet_blocks.") for k in adapter) and not any("base_model" in k for k in adapter)
    path = save(tmp_path / "pixart-1024-controlnet-adapter.safetensors", adapter)
    cn2 = read_controlnet(path)
    assert (cn2.layout, cn2.copies, cn2.hidden, cn2.has_base, cn2.native_px) == ("diffusers", 13, 144, False, 1024)
    assert cn2.state_dict.keys() == cn.state_dict.keys()
    branch2 = PixArtControlNetBranch(cn2.hidden, cn2.num_heads, cn2.copies)
    branch2.load_state_dict(cn2.state_dict, strict=True)
    kw = inputs()
    hint = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        a = eps(base, [PixArtControlRun(branch, hint)], **kw)
        b = eps(base, [PixArtControlRun(branch2, hint)], **kw)
    assert torch.equal(a, b)


@torch.inference_mode()
def test_adapter_layout_is_diffusers_basic_transformer_block(tiny):
    """The adapter keys load strictly into diffusers' own BasicTransformerBlock (ada_norm_single), and that block
    computes what our copied block computes (independent check of the qkv / kv splits)."""
    sd, base, cn, branch = tiny
    adapter = original_controlnet_to_diffusers_adapter(sd)
    ref = adapter_transformer_block(144)
    prefix = "controlnet_blocks.5.transformer_block."
    ref.load_state_dict({k[len(prefix):]: v for k, v in adapter.items() if k.startswith(prefix)}, strict=True)
    g = torch.Generator().manual_seed(1)
    x, y, t0 = torch.randn(2, 16, 144, generator=g), torch.randn(2, 5, 144, generator=g), torch.randn(2, 864, generator=g)
    want = ref(x, encoder_hidden_states=y, timestep=t0)
    got = branch.controlnet[5].copied_block(x, y, t0)
    assert ((got - want).norm() / want.norm()).item() < 1e-5


@torch.inference_mode()
def test_controlled_prediction_matches_the_diffusers_research_pipeline(tiny):
    """Base + branch against diffusers' PixArtTransformer2DModel driving the research project's adapter
    (tests/pixart_controlnet_reference.py), on the same tensors: text mask, micro-conditions, non-square latent."""
    sd, base, cn, branch = tiny
    base_sd = {k[len("base_model."):]: v for k, v in sd.items() if k.startswith("base_model.")}
    ref = PixArtTransformer2DModel.from_config(fx.diffusers_config(**TINY_CN, micro=True, native_px=1024)).eval()
    ref.load_state_dict(original_to_diffusers(base_sd), strict=True)
    adapter = Adapter(copies=13, hidden=144).eval()
    adapter.load_state_dict(original_controlnet_to_diffusers_adapter(sd), strict=True)
    g = torch.Generator().manual_seed(4)
    x, hint = torch.randn(2, 4, 8, 12, generator=g), torch.randn(1, 4, 8, 12, generator=g)
    t, ctx = torch.tensor([900.0, 250.0]), torch.randn(2, 6, TINY_CN["caption_channels"], generator=g)
    keep = torch.ones(2, 6)
    keep[1, 3:] = 0
    size, ar = torch.tensor([[64.0, 96.0]] * 2), torch.tensor([[64 / 96]] * 2)
    want = controlled_forward(ref, adapter, x, ctx, t, hint.expand(2, -1, -1, -1),
                              {"resolution": size, "aspect_ratio": ar}, text_mask=keep)[:, :4]
    got = base(x, t, ctx, attention_mask=keep, c_size=size, c_ar=ar,
               transformer_options={"pixart_controlnet": [PixArtControlRun(branch, hint)]})
    assert ((got - want).norm() / want.norm()).item() < 1e-5
    plain = base(x, t, ctx, attention_mask=keep, c_size=size, c_ar=ar)
    assert ((plain - want).norm() / want.norm()).item() > 1e-2   # the control changes the prediction


@torch.inference_mode()
def test_no_control_cases_equal_the_uncontrolled_model_exactly(tiny):
    sd, base, cn, branch = tiny
    kw = inputs()
    hint = torch.randn(1, 4, 8, 8)
    plain = base(kw["x"], kw["timesteps"], kw["context"])
    assert torch.equal(eps(base, **kw), plain)
    assert torch.equal(eps(base, [PixArtControlRun(branch, hint, 0.0)], **kw), plain)
    controlled = eps(base, [PixArtControlRun(branch, hint)], **kw)
    assert not torch.allclose(controlled, plain, atol=1e-3)
    # strength scales the residuals: halfway strength lies between, and one hint == the same hint per sample
    half = eps(base, [PixArtControlRun(branch, hint, 0.5)], **kw)
    assert not torch.allclose(half, plain, atol=1e-4) and not torch.allclose(half, controlled, atol=1e-4)
    assert torch.allclose(eps(base, [PixArtControlRun(branch, hint.expand(2, -1, -1, -1))], **kw), controlled, atol=1e-6)
    zero = PixArtControlNetBranch(cn.hidden, cn.num_heads, cn.copies)
    zero.load_state_dict({k: (torch.zeros_like(v) if "after_proj" in k else v) for k, v in cn.state_dict.items()})
    assert torch.equal(eps(base, [PixArtControlRun(zero.eval(), hint)], **kw), plain)


@torch.inference_mode()
def test_two_controlnets_chain_by_adding_their_residuals(tiny):
    """Both branches read the same h_i; with one branch's after_proj zero the chain equals the other alone."""
    sd, base, cn, branch = tiny
    kw = inputs()
    hint = torch.randn(1, 4, 8, 8)
    zero = PixArtControlNetBranch(cn.hidden, cn.num_heads, cn.copies)
    zero.load_state_dict({k: (torch.zeros_like(v) if "after_proj" in k else v) for k, v in cn.state_dict.items()})
    one = eps(base, [PixArtControlRun(branch, hint)], **kw)
    assert torch.equal(eps(base, [PixArtControlRun(zero.eval(), hint), PixArtControlRun(branch, hint)], **kw), one)


def test_hint_of_wrong_size_is_refused_by_the_model(tiny):
    sd, base, cn, branch = tiny
    with pytest.raises(ValueError, match="hint latent is \\(4, 4\\)"):
        eps(base, [PixArtControlRun(branch, torch.zeros(1, 4, 4, 4))], **inputs())


def test_unet_style_control_on_pixart_model_is_an_error(tiny):
    sd, base, cn, branch = tiny
    kw = inputs()
    with pytest.raises(ValueError, match="not a PixArt ControlNet"):
        base(kw["x"], kw["timesteps"], kw["context"], control={"input": [], "middle": [torch.zeros(2, 320, 1, 1)], "output": []})
    with pytest.raises(ValueError, match="not a PixArt ControlNet"):
        base(kw["x"], kw["timesteps"], kw["context"], control={"input": [torch.zeros(2, 320, 8, 8)]})


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("native_px, n_keys", [(1024, 668), (512, 660)])
def test_full_files_are_read_with_and_without_wrapper(tmp_path, wrap, native_px, n_keys):
    sd = random_controlnet_file(micro=native_px == 1024, native_px=native_px, hidden=144, depth=28,
                                   caption_channels=64)
    assert len(sd) == n_keys
    path = fx.write_original(tmp_path / f"PixArt-XL-2-{native_px}-ControlNet.pth", sd, wrap=wrap)
    cn = read_controlnet(path)
    assert (cn.layout, cn.copies, cn.has_base, cn.native_px, cn.base_variant.name) == \
        ("original", 13, True, native_px, f"controlnet_{native_px}")
    assert len(cn.state_dict) == n_keys - len(fx.original_shapes(micro=native_px == 1024, native_px=native_px))


def test_controlnet_only_file_without_base(tmp_path):
    sd = {k: v for k, v in tiny_controlnet_file(512).items() if k.startswith("controlnet.")}
    path = save(tmp_path / "pixart_512_controlnet.safetensors", sd)
    cn = read_controlnet(path)
    assert (cn.has_base, cn.native_px, cn.base_variant.name) == (False, 512, "controlnet_512")
    cn = read_controlnet(tmp_path / "my_controlnet.safetensors", sd=sd)
    assert cn.base_variant is None and cn.warnings


@pytest.mark.parametrize("sd, words", [
    ({"control_model.input_hint_block.0.weight": torch.zeros(1)}, "Stable Diffusion \\(UNet\\) ControlNet"),
    ({"controlnet_cond_embedding.conv_in.weight": torch.zeros(1)}, "Stable Diffusion \\(UNet\\) ControlNet"),
    (fx.random_original(**fx.TINY), "PixArt transformer .*, not a PixArt-δ ControlNet .*load it with PixArt Checkpoint Loader"),
    ({"controlnet_x_embedder.weight": torch.zeros(1)}, "another transformer"),
])
def test_foreign_files_get_clear_errors(tmp_path, sd, words):
    with pytest.raises(CheckpointError, match=words) as e:
        read_controlnet(tmp_path / "some_controlnet.pth", sd=sd)
    assert "some_controlnet.pth" in str(e.value) and "controlnet.0.copied_block" in str(e.value)


def test_incomplete_file_names_the_missing_tensor(tmp_path):
    sd = tiny_controlnet_file(1024)
    del sd["controlnet.7.after_proj.bias"]
    with pytest.raises(CheckpointError, match="controlnet.7.after_proj.bias"):
        read_controlnet(tmp_path / "PixArt-XL-2-1024-ControlNet.pth", sd=sd)


def test_fit_checks():
    cn1024 = read_controlnet("PixArt-XL-2-1024-ControlNet.pth", sd=tiny_controlnet_file(1024))
    cn512 = read_controlnet("PixArt-XL-2-512-ControlNet.pth", sd=tiny_controlnet_file(512))
    assert check_fit(cn1024, CFG, VARIANTS["controlnet_1024"]) == []
    assert check_fit(cn1024, CFG, VARIANTS["alpha_1024_ms"]) == []
    warn = check_fit(cn1024, CFG, VARIANTS["lcm_1024"])
    assert len(warn) == 1 and "PixArt-LCM 1024" in warn[0]
    assert check_fit(cn512, dict(CFG, micro_condition=False), VARIANTS["alpha_512"]) == []
    with pytest.raises(CheckpointError, match="trained on the 512 px base"):
        check_fit(cn512, CFG, VARIANTS["alpha_1024_ms"])
    with pytest.raises(CheckpointError, match="trained on the 1024 px base"):
        check_fit(cn1024, dict(CFG, micro_condition=False), VARIANTS["dmd_512"])
    with pytest.raises(CheckpointError, match="SDXL latents"):
        check_fit(cn1024, CFG, VARIANTS["sigma_1024"])
    with pytest.raises(CheckpointError, match="hidden size 144, the MODEL 1152"):
        check_fit(cn1024, dict(CFG, hidden_size=1152), VARIANTS["controlnet_1024"])
    with pytest.raises(CheckpointError, match="more than 13 blocks; the MODEL has 2"):
        check_fit(cn1024, dict(CFG, depth=2), VARIANTS["controlnet_1024"])
    with pytest.raises(CheckpointError, match="more than 13 blocks; the MODEL has 13"):
        check_fit(cn1024, dict(CFG, depth=13), VARIANTS["controlnet_1024"])
    assert check_fit(cn1024, dict(CFG, depth=42), VARIANTS["alpha_1024_ms"]) == []  # community depth-42 bases


def test_fit_hint_covers_and_centre_crops_like_the_reference():
    # 100 x 200 (h x w) image into 32 x 32: scaled to 32 x 64 (short side), columns 16..47 kept
    img = torch.linspace(0, 1, 200).reshape(1, 1, 200, 1).expand(1, 100, 200, 3).contiguous()
    out = fit_hint(img, 32, 32)
    scaled = F.interpolate(img.movedim(-1, 1), size=(32, 64), mode="bilinear", antialias=True, align_corners=False)
    assert out.shape == (1, 32, 32, 3)
    assert torch.allclose(out.movedim(-1, 1), scaled[..., 16:48], atol=1e-6)
    # same size: untouched; grey: replicated to RGB; per-latent or single hints only
    same = torch.rand(2, 16, 24, 3)
    assert torch.equal(fit_hint(same, 16, 24), same)
    assert fit_hint(torch.rand(1, 16, 16, 1), 16, 16).shape == (1, 16, 16, 3)
    hint_batch(1, 4)
    hint_batch(4, 4)
    with pytest.raises(HintError, match="3 hint images for a batch of 4"):
        hint_batch(3, 4)
    with pytest.raises(HintError, match="IMAGE"):
        fit_hint(torch.rand(16, 16, 3), 8, 8)


def test_safetensors_full_file_reads_only_the_branch(tmp_path):
    sd = tiny_controlnet_file(1024)
    path = save(tmp_path / "PixArt-XL-2-1024-ControlNet.safetensors", sd)
    cn = read_controlnet(path)
    ref = read_controlnet(tmp_path / "x-1024.pth", sd=sd)
    assert (cn.has_base, cn.micro, cn.native_px) == (True, True, 1024)
    assert cn.state_dict.keys() == ref.state_dict.keys()
    assert all(torch.equal(cn.state_dict[k], ref.state_dict[k]) for k in ref.state_dict)
