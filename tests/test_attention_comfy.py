"""Attention of the PixArt MODEL and the PixArt-δ ControlNet branch inside ComfyUI: computed by ComfyUI's attention
functions (comfy/ldm/modules/attention.py: optimized_attention / optimized_attention_masked, the registered
"pytorch" / "split" / "sub_quad", transformer_options["optimized_attention_override"]), with the text-token mask.
References: diffusers' PixArtTransformer2DModel (base) and the plain-torch PixArt-δ formula of
test_controlnet_parity.py (ControlNet)."""
import pytest
import torch

from pixart_delta.tiny import pixart as fx
from pixart_delta.tiny.pixart_controlnet import tiny_controlnet_file
from pixart_delta.loaders.pixart_keys import original_to_diffusers
from reference import rel_norm
from test_controlnet_parity import reference_eps as controlnet_reference_eps

pytestmark = pytest.mark.comfyui

ON_CPU = ("pytorch", "split", "sub_quad")   # what ComfyUI registers without xformers / sage / flash
KW = dict(**fx.TINY, micro=True, native_px=1024, tokens=120)
SMALL_CN = dict(hidden=144, depth=4, caption_channels=64)
COPIES = 3


@pytest.fixture(scope="module")
def attn(comfy):
    import comfy.ldm.modules.attention as attn
    return attn


@pytest.fixture(scope="module")
def base(comfy, models_dir, one_torch_thread):
    from diffusers import PixArtTransformer2DModel
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    d = models_dir / "diffusion_models" / "test_attention_comfy"
    d.mkdir(parents=True, exist_ok=True)
    sd = fx.random_original(seed=31, **KW)
    patcher = load_pixart_model(fx.write_original(d / "PixArt-XL-2-1024-MS.pth", sd), weight_dtype="fp32")
    ref = PixArtTransformer2DModel.from_config(fx.diffusers_config(**KW, interpolation_scale=2)).eval()
    ref.load_state_dict(original_to_diffusers(sd))
    return patcher, ref


@pytest.fixture(scope="module")
def controlnet(comfy, tmp_path_factory, one_torch_thread):
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    from pixart_delta.loaders.pixart_controlnet_comfy import load_pixart_controlnet
    sd = tiny_controlnet_file(1024, seed=8, size=SMALL_CN, copies=COPIES)
    path = fx.write_original(tmp_path_factory.mktemp("attn_cn") / "PixArt-XL-2-1024-ControlNet.pth", sd)
    return sd, load_pixart_model(path, weight_dtype="fp32"), load_pixart_controlnet(path, weight_dtype="fp32")


def inputs(seed=0, batch=2, h=16, w=24, real=7, padded=120, channels=64):
    """Latent, a padded prompt whose padding is large (a mask that does not apply shows), its mask, sizes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, h, w, generator=g)
    ctx = torch.cat([torch.randn(batch, real, channels, generator=g),
                     30 * torch.randn(batch, padded - real, channels, generator=g)], dim=1)
    keep = torch.zeros(batch, padded, dtype=torch.bool)
    keep[:, :real] = True
    keep[-1, real:real + 4] = True          # two prompts of different lengths (batch 2)
    c_size = torch.tensor([[h * 8.0, w * 8.0]] * batch)
    c_ar = torch.tensor([[h / w]] * batch)
    return x, ctx, keep, c_size, c_ar


class Recorder:
    """An optimized_attention_override: records the function ComfyUI hands it and runs `use` (a registered name)
    instead, or that function itself when `use` is None."""

    def __init__(self, attn, use=None):
        self.attn, self.use, self.seen, self.masked, self.blocks = attn, use, [], [], []

    def __call__(self, func, *args, **kwargs):
        self.seen.append(func.__name__)
        self.masked.append(kwargs.get("mask") is not None)
        self.blocks.append(kwargs["transformer_options"].get("block_index"))
        fn = func if self.use is None else self.attn.REGISTERED_ATTENTION_FUNCTIONS[self.use]
        return fn(*args, **kwargs)


def select(monkeypatch, attn, name):
    """What a ComfyUI flag does (--use-split-cross-attention / --use-quad-cross-attention / ...): the module's
    optimized_attention and optimized_attention_masked become that function."""
    import comfy.cli_args
    fn = attn.REGISTERED_ATTENTION_FUNCTIONS[name]
    monkeypatch.setattr(attn, "optimized_attention", fn)
    monkeypatch.setattr(attn, "optimized_attention_masked", fn)
    monkeypatch.setattr(comfy.cli_args.args, "use_quad_cross_attention", name == "sub_quad")


def model_eps(patcher, x, ctx, keep, c_size, c_ar, t=700.0, transformer_options=None):
    model = patcher.model
    sigma = model.model_sampling.sigma(torch.tensor([t] * x.shape[0]))
    with torch.inference_mode():
        denoised = model.apply_model(x, sigma, c_crossattn=ctx, attention_mask=keep.float(), c_size=c_size, c_ar=c_ar,
                                     transformer_options=transformer_options or {})
    s = sigma.reshape(-1, 1, 1, 1)
    return (x - denoised) / s, x / torch.sqrt(s ** 2 + 1)


def test_the_registered_functions_of_this_machine_are_the_tested_ones(attn):
    assert set(ON_CPU) <= set(attn.REGISTERED_ATTENTION_FUNCTIONS)


@pytest.mark.parametrize("name", ON_CPU)
@pytest.mark.parametrize("route", ["selected", "override"])
def test_each_attention_function_keeps_parity_with_diffusers(base, attn, monkeypatch, name, route):
    """route "selected": the function is ComfyUI's optimized_attention (a flag); "override": a node's
    optimized_attention_override dispatches to it. Either way every attention of the network runs it."""
    patcher, ref = base
    if route == "selected":
        select(monkeypatch, attn, name)
    rec = Recorder(attn, use=name if route == "override" else None)
    x, ctx, keep, c_size, c_ar = inputs()
    eps, x_in = model_eps(patcher, x, ctx, keep, c_size, c_ar, transformer_options={"optimized_attention_override": rec})
    with torch.inference_mode():
        expected = ref(x_in, encoder_hidden_states=ctx, timestep=torch.tensor([700.0, 700.0]),
                       encoder_attention_mask=keep.float(),
                       added_cond_kwargs={"resolution": c_size, "aspect_ratio": c_ar}).sample[:, :4]
        unmasked = ref(x_in, encoder_hidden_states=ctx, timestep=torch.tensor([700.0, 700.0]),
                       added_cond_kwargs={"resolution": c_size, "aspect_ratio": c_ar}).sample[:, :4]
    assert rel_norm(eps, expected) < 1e-4
    assert rel_norm(unmasked, expected) > 1e-2          # the padding would change the result without the mask
    depth = KW["depth"]
    if route == "selected":
        assert rec.seen == [f"attention_{name}"] * (2 * depth)
    assert rec.masked == [False, True] * depth          # self-attention unmasked, cross-attention with the text mask
    assert rec.blocks == [i for i in range(depth) for _ in (0, 1)]


@pytest.mark.parametrize("name", ON_CPU)
def test_controlnet_branch_with_each_attention_function_matches_the_formula(controlnet, attn, name):
    from pixart_delta.models.pixart import CONTROL_KEY
    from pixart_delta.models.pixart_controlnet import PixArtControlRun
    sd, patcher, cn = controlnet
    x, ctx, keep, c_size, c_ar = inputs(seed=2, h=8, w=12, padded=20)
    hint = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(4))
    rec = Recorder(attn, use=name)
    opts = {CONTROL_KEY: [PixArtControlRun(cn.control_model, hint, 0.7)], "optimized_attention_override": rec}
    eps, x_in = model_eps(patcher, x, ctx, keep, c_size, c_ar, t=321.0, transformer_options=opts)
    with torch.inference_mode():
        expected = controlnet_reference_eps(sd, x_in, torch.tensor([321.0, 321.0]), ctx, keep, c_size, c_ar,
                                            64, 2.0, hint=hint, strength=0.7)
    assert rel_norm(eps, expected) < 1e-4
    assert len(rec.seen) == 2 * (SMALL_CN["depth"] + COPIES)


def test_cpu_fallback_runs_comfys_pytorch_function_and_flags_are_followed(base, attn, monkeypatch):
    """Without an attention flag ComfyUI on CPU selects sub-quadratic attention as its fallback; the network then
    runs ComfyUI's registered "pytorch" function (faster here, loaders/pixart_comfy.py). An explicit
    --use-quad-cross-attention or --use-split-cross-attention is followed."""
    import comfy.cli_args
    patcher, _ = base
    x, ctx, keep, c_size, c_ar = inputs(seed=1, batch=1)
    monkeypatch.setattr(attn, "optimized_attention", attn.attention_sub_quad)
    monkeypatch.setattr(attn, "optimized_attention_masked", attn.attention_sub_quad)
    monkeypatch.setattr(comfy.cli_args.args, "use_quad_cross_attention", False)
    results = {}
    for flag, name, expected in [(None, "sub_quad", "attention_pytorch"),
                                 ("use_quad_cross_attention", "sub_quad", "attention_sub_quad"),
                                 ("use_split_cross_attention", "split", "attention_split")]:
        if flag:
            select(monkeypatch, attn, name)
        rec = Recorder(attn)
        results[expected] = model_eps(patcher, x, ctx, keep, c_size, c_ar,
                                      transformer_options={"optimized_attention_override": rec})[0]
        assert set(rec.seen) == {expected}, flag
    assert rel_norm(results["attention_sub_quad"], results["attention_pytorch"]) < 1e-5
    assert rel_norm(results["attention_split"], results["attention_pytorch"]) < 1e-5


@pytest.mark.parametrize("with_controlnet", [False, True])
def test_override_in_model_options_is_called_for_every_attention(controlnet, attn, with_controlnet):
    """model_options["transformer_options"]["optimized_attention_override"] (what attention-override nodes set)
    through a real sampling step: 2 attentions (self, cross) per base block, and per ControlNet copy."""
    import comfy.sample
    import comfy.samplers
    sd, patcher, cn = controlnet
    g = torch.Generator().manual_seed(6)
    keep = torch.ones(1, 20)
    keep[:, 9:] = 0
    pos = [[torch.randn(1, 20, 64, generator=g), {"attention_mask": keep}]]
    neg = [[torch.randn(1, 20, 64, generator=g), {"attention_mask": keep}]]
    x = torch.zeros(1, 4, 8, 12)
    if with_controlnet:   # what PixArt ControlNet Apply attaches: the branch with a latent hint
        cnet = cn.copy().set_latent_hint(torch.randn(1, 4, 8, 12, generator=g), 1.0, (0.0, 1.0))
        pos = [[pos[0][0], {**pos[0][1], "control": cnet}]]
    rec = Recorder(attn)
    m = patcher.clone()
    m.model_options["transformer_options"] = {**m.model_options.get("transformer_options", {}),
                                              "optimized_attention_override": rec}
    ms = m.get_model_object("model_sampling")
    sigmas = torch.stack([ms.sigmas[500], torch.zeros(())])
    with torch.inference_mode():
        comfy.sample.sample_custom(m, torch.randn(1, 4, 8, 12, generator=g), 1.0, comfy.samplers.ksampler("euler"),
                                   sigmas, pos, neg, x, disable_pbar=True)
    depth = SMALL_CN["depth"]
    n = 2 * (depth + (COPIES if with_controlnet else 0))
    assert len(rec.seen) == n                       # cfg 1: one model call
    assert sum(rec.masked) == n // 2                # every cross-attention got the text mask
