"""PixArt-δ ControlNet inside ComfyUI on tiny files: core "Apply ControlNet
(Advanced)" and "PixArt ControlNet Apply" through ComfyUI's own sampling path give exactly what the network
computes with the branch (checked against direct calls), percent range / strength / chaining / per-latent hints,
and every way it could be silently unused is an error instead."""
import pytest
import torch

from pixart_delta.tiny import pixart as fx
from pixart_delta.tiny.pixart_controlnet import TINY_CN, tiny_controlnet_file
from reference import rel_norm

pytestmark = pytest.mark.comfyui
H = W = 8          # latent size
CTX = 6            # text tokens
# The ComfyUI plumbing does not depend on the branch depth: 3 copies on a 4-block base keep these tests quick
# (the 13-copy structure is checked in test_controlnet.py and at full size in test_controlnet_parity.py).
SMALL = dict(hidden=144, depth=4, caption_channels=64)
COPIES = 3


@pytest.fixture(scope="module")
def setup(comfy, tmp_path_factory):
    import comfy.sd
    from pixart_delta.tiny.sd_vae import write_sd_vae
    from pixart_delta.loaders.files import load_state_dict
    from pixart_delta.loaders.pixart_controlnet_comfy import load_pixart_controlnet
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    d = tmp_path_factory.mktemp("cn")
    p1024 = fx.write_original(d / "PixArt-XL-2-1024-ControlNet.pth", tiny_controlnet_file(1024, seed=5, size=SMALL, copies=COPIES))
    p512 = fx.write_original(d / "PixArt-XL-2-512-ControlNet.pth", tiny_controlnet_file(512, seed=6, size=SMALL, copies=COPIES))
    vae_path = d / "vae.safetensors"
    write_sd_vae(vae_path)
    return dict(model=load_pixart_model(p1024), cn=load_pixart_controlnet(p1024), cn512=load_pixart_controlnet(p512),
                vae=comfy.sd.VAE(sd=load_state_dict(vae_path)), dir=d, p1024=p1024)


def conds(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    pos = [[torch.randn(batch, CTX, TINY_CN["caption_channels"], generator=g), {}]]
    neg = [[torch.randn(batch, CTX, TINY_CN["caption_channels"], generator=g), {}]]
    return pos, neg


def image(seed=0, batch=1, h=H * 8, w=W * 8):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, h, w, 1, generator=g) > 0.8).float().expand(-1, -1, -1, 3)


def latent(batch=1, seed=3):
    return torch.randn(batch, 4, H, W, generator=torch.Generator().manual_seed(seed))


def denoised(model, pos, neg, x, t, cfg=1.0, model_options=None):
    """One Euler step from sigma(t) to 0 with zero noise = the denoised latent at t (ComfyUI's whole path)."""
    import comfy.sample
    import comfy.samplers
    m = model.clone()
    if model_options:
        m.model_options.update(model_options)
    sigma = m.get_model_object("model_sampling").sigmas[t]
    sigmas = torch.stack([sigma, torch.zeros(())])
    return comfy.sample.sample_custom(m, torch.zeros_like(x), cfg, comfy.samplers.ksampler("euler"), sigmas, pos, neg,
                                      x, disable_pbar=True)


def expected(model, ctx, x, t, runs=()):
    """The same step computed by calling the network directly (SD1 latent scale, eps parametrisation)."""
    net = model.model.diffusion_model
    ms = model.get_model_object("model_sampling")
    sigma = float(ms.sigmas[t])
    xs = x * 0.18215
    with torch.inference_mode():
        eps = net(xs / (sigma ** 2 + 1) ** 0.5, torch.full((x.shape[0],), float(t)), ctx,
                  transformer_options={"pixart_controlnet": list(runs)})
    return (xs - sigma * eps) / 0.18215


def hint_latent(vae, img):
    return vae.encode(img) * 0.18215


def core_apply(pos, neg, cn, img, vae, strength=1.0, start=0.0, end=1.0):
    import nodes
    return nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, cn, img, strength, start, end, vae=vae)


def our_apply(pos, neg, cn, img, vae, x, strength=1.0, start=0.0, end=1.0):
    from pixart_delta.nodes.controlnet import PixArtControlNetApply
    return tuple(PixArtControlNetApply.execute(pos, neg, cn, img, vae, {"samples": x}, strength, start, end).result)


def test_core_and_our_apply_equal_the_network_with_the_branch(setup):
    from pixart_delta.models.pixart_controlnet import PixArtControlRun
    model, cn, vae = setup["model"], setup["cn"], setup["vae"]
    pos, neg = conds()
    x, img = latent(), image()
    run = PixArtControlRun(cn.control_model, hint_latent(vae, img))
    want = expected(model, pos[0][0], x, 500, [run])
    plain = expected(model, pos[0][0], x, 500)
    assert rel_norm(want, plain) > 1e-2
    core = denoised(model, *core_apply(pos, neg, cn, img, vae), x, 500)
    ours = denoised(model, *our_apply(pos, neg, cn, img, vae, x), x, 500)
    assert rel_norm(core, want) < 1e-5
    assert rel_norm(ours, want) < 1e-5
    assert rel_norm(denoised(model, pos, neg, x, 500), plain) < 1e-5
    # with CFG the hint goes to both halves: cfg 4.5 = uncond + 4.5 (cond - uncond), both controlled
    want_u = expected(model, neg[0][0], x, 500, [run])
    cfg = denoised(model, *our_apply(pos, neg, cn, img, vae, x), x, 500, cfg=4.5)
    assert rel_norm(cfg, want_u + 4.5 * (want - want_u)) < 1e-4


def test_strength_and_percent_range(setup):
    from pixart_delta.models.pixart_controlnet import PixArtControlRun
    model, cn, vae = setup["model"], setup["cn"], setup["vae"]
    pos, neg = conds(1)
    x, img = latent(seed=4), image(1)
    hint = hint_latent(vae, img)
    plain = {t: denoised(model, pos, neg, x, t) for t in (900, 100)}
    # strength 0: exactly the uncontrolled model (core node and ours)
    assert torch.equal(denoised(model, *core_apply(pos, neg, cn, img, vae, strength=0.0), x, 900), plain[900])
    assert torch.equal(denoised(model, *our_apply(pos, neg, cn, img, vae, x, strength=0.0), x, 900), plain[900])
    half = denoised(model, *our_apply(pos, neg, cn, img, vae, x, strength=0.5), x, 900)
    assert rel_norm(half, expected(model, pos[0][0], x, 900, [PixArtControlRun(cn.control_model, hint, 0.5)])) < 1e-5
    # control only in the second half of sampling: t=900 (progress ~10%) is untouched, t=100 (~90%) controlled
    for apply in (lambda: our_apply(pos, neg, cn, img, vae, x, 1.0, 0.5, 1.0),
                  lambda: core_apply(pos, neg, cn, img, vae, 1.0, 0.5, 1.0)):
        p, n = apply()
        assert torch.equal(denoised(model, p, n, x, 900), plain[900])
        got = denoised(model, p, n, x, 100)
        assert rel_norm(got, expected(model, pos[0][0], x, 100, [PixArtControlRun(cn.control_model, hint)])) < 1e-5
        assert rel_norm(got, plain[100]) > 1e-3


def test_chained_controlnets_add_up(setup):
    from pixart_delta.models.pixart_controlnet import PixArtControlRun
    model, cn, cn512, vae = setup["model"], setup["cn"], setup["cn512"], setup["vae"]
    pos, neg = conds(2)
    x, a, b = latent(seed=5), image(2), image(3)
    p, n = our_apply(pos, neg, cn, a, vae, x, 0.7)
    p, n = core_apply(p, n, cn, b, vae, 0.4)
    runs = [PixArtControlRun(cn.control_model, hint_latent(vae, a), 0.7),
            PixArtControlRun(cn.control_model, hint_latent(vae, b), 0.4)]
    assert rel_norm(denoised(model, p, n, x, 300), expected(model, pos[0][0], x, 300, runs)) < 1e-5


def test_one_hint_per_latent_or_one_for_all(setup):
    from pixart_delta.models.pixart_controlnet import PixArtControlRun
    model, cn, vae = setup["model"], setup["cn"], setup["vae"]
    pos, neg = conds(3)
    x, imgs = latent(batch=2, seed=6), image(4, batch=2)
    got = denoised(model, *our_apply(pos, neg, cn, imgs, vae, x), x, 400)
    for i in range(2):
        run = PixArtControlRun(cn.control_model, hint_latent(vae, imgs[i:i + 1]))
        assert rel_norm(got[i:i + 1], expected(model, pos[0][0], x[i:i + 1], 400, [run])) < 1e-5
    single = denoised(model, *our_apply(pos, neg, cn, imgs[:1], vae, x), x, 400)
    run = PixArtControlRun(cn.control_model, hint_latent(vae, imgs[:1]))
    assert rel_norm(single, expected(model, pos[0][0].expand(2, -1, -1), x, 400, [run])) < 1e-5
    with pytest.raises(ValueError, match="3 hint images for a batch of 2 latents"):
        our_apply(pos, neg, cn, image(5, batch=3), vae, x)


def test_hint_of_another_size_and_aspect_is_cover_cropped(setup):
    from pixart_delta.models.pixart_controlnet import PixArtControlRun
    from pixart_delta.preprocessors.controlnet_hint import fit_hint
    model, cn, vae = setup["model"], setup["cn"], setup["vae"]
    pos, neg = conds(4)
    x, big = latent(seed=7), image(6, h=100, w=180)
    got = denoised(model, *our_apply(pos, neg, cn, big, vae, x), x, 600)
    run = PixArtControlRun(cn.control_model, hint_latent(vae, fit_hint(big, H * 8, W * 8)))
    assert rel_norm(got, expected(model, pos[0][0], x, 600, [run])) < 1e-5


def test_missing_vae_and_wrong_inputs_are_clear_errors(setup):
    from pixart_delta.nodes.controlnet import PixArtControlNetApply
    model, cn, vae = setup["model"], setup["cn"], setup["vae"]
    pos, neg = conds(5)
    x = latent()
    p, n = core_apply(pos, neg, cn, image(), None)
    with pytest.raises(ValueError, match="needs a VAE"):
        denoised(model, p, n, x, 500)
    with pytest.raises(ValueError, match="connect a VAE"):
        PixArtControlNetApply.execute(pos, neg, cn, image(), None, {"samples": x})
    with pytest.raises(ValueError, match="not a PixArt-δ ControlNet"):
        PixArtControlNetApply.execute(pos, neg, object(), image(), vae, {"samples": x})


def test_controlnet_that_does_not_fit_the_model_stops_the_run(setup):
    model, cn512, vae = setup["model"], setup["cn512"], setup["vae"]
    pos, neg = conds(6)
    x = latent()
    with pytest.raises(ValueError, match="trained on the 512 px base"):
        denoised(model, *our_apply(pos, neg, cn512, image(), vae, x), x, 500)


def test_pixart_controlnet_on_a_model_that_would_ignore_it_is_an_error(setup):
    """ComfyUI's built-in PixArt network ignores control entirely (TRAP 4): refused, not silently dropped."""
    from comfy.ldm.pixart.pixartms import PixArtMS
    from pixart_delta.loaders.pixart_controlnet_comfy import check_model
    cn = setup["cn"]

    class Native:   # what UNETLoader gives for a PixArt file (its 1152-wide network, not built here)
        diffusion_model = object.__new__(PixArtMS)
    with pytest.raises(ValueError, match="built-in PixArt model ignores ControlNets"):
        check_model(cn.info, Native())

    class Fake:
        diffusion_model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="not one of this pack's PixArt models"):
        check_model(cn.info, Fake())


def test_foreign_controlnet_on_pixart_model_is_an_error(setup):
    import comfy.controlnet
    model, vae = setup["model"], setup["vae"]
    pos, neg = conds(7)
    x = latent()

    class UNetLikeControl(comfy.controlnet.ControlBase):
        def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
            z = torch.zeros(x_noisy.shape[0], 320, 8, 8)
            return self.control_merge({"input": [z], "middle": [z], "output": [z]}, None, None)

        def copy(self):
            c = UNetLikeControl()
            self.copy_to(c)
            return c
    p = [[pos[0][0], {"control": UNetLikeControl()}]]
    # refused up front by the MODEL's extra_conds, or by the forward where conds bypass it
    with pytest.raises(ValueError, match="not a PixArt ControlNet|ControlNet is attached to a PixArt MODEL"):
        denoised(model, p, neg, x, 500)


def test_a_model_call_that_drops_the_branch_is_an_error(setup):
    """A model wrapper that calls the network without transformer_options would sample uncontrolled."""
    model, cn, vae = setup["model"], setup["cn"], setup["vae"]
    pos, neg = conds(8)
    x = latent()

    def drop_options(apply_model, args):
        c = {k: v for k, v in args["c"].items() if k != "transformer_options"}
        return apply_model(args["input"], args["timestep"], **c)
    with pytest.raises(RuntimeError, match="did not run the ControlNet branch"):
        denoised(model, *our_apply(pos, neg, cn, image(), vae, x), x, 500,
                 model_options={"model_function_wrapper": drop_options})


def test_loader_node(setup, models_dir):
    import shutil
    from pixart_delta.nodes.controlnet import PixArtControlNetLoader
    # a subfolder of its own: the workflow tests' tiny file has the published name at the folder's top
    (models_dir / "controlnet" / "test_loader_node").mkdir(parents=True, exist_ok=True)
    shutil.copy(setup["p1024"], models_dir / "controlnet" / "test_loader_node" / "PixArt-XL-2-1024-ControlNet.pth")
    name = "test_loader_node/PixArt-XL-2-1024-ControlNet.pth"
    out = PixArtControlNetLoader.execute(name).result
    assert out[0].model.model_config.pixart_variant.name == "controlnet_1024" and out[1].info.copies == COPIES
    assert PixArtControlNetLoader.execute(name, setup["model"]).result[0] is setup["model"]
    adapter = models_dir / "controlnet" / "pixart_adapter.safetensors"
    from fixture_files import write_controlnet_adapter
    write_controlnet_adapter(adapter, tiny_controlnet_file(1024, seed=5, size=SMALL, copies=COPIES))
    with pytest.raises(ValueError, match="has no base weights: connect the PixArt MODEL"):
        PixArtControlNetLoader.execute("pixart_adapter.safetensors")
    notcn = models_dir / "controlnet" / "sd15_canny.safetensors"
    fx.save(notcn, {"control_model.input_hint_block.0.weight": torch.zeros(16, 3, 3, 3)})
    with pytest.raises(ValueError, match="Stable Diffusion \\(UNet\\) ControlNet"):
        PixArtControlNetLoader.execute("sd15_canny.safetensors", setup["model"])


@pytest.mark.parametrize("path", ["ksampler_dpmpp_2m_cfg4.5", "lcm_4", "dmd_1", "yoso_1", "core_lcm_sampler"])
def test_every_sampler_runs_the_branch_at_every_model_call(setup, path):
    """Each sampling path sees the ControlNet at every model call (counted at the model input), the result
    differs from the uncontrolled one, and strength 0 gives exactly the uncontrolled result."""
    import comfy.sample
    import comfy.samplers
    from pixart_delta.models.pixart import CONTROL_KEY
    from pixart_delta.samplers.sampling_comfy import make_sampler, patch_prediction, sigmas_for_timesteps
    model, cn, vae = setup["model"], setup["cn"], setup["vae"]
    pos, neg = conds(9)
    x = torch.zeros(1, 4, H, W)
    noise = latent(seed=10)
    img = image(7)
    calls = []

    def counting(apply_model, args):
        runs = args["c"]["transformer_options"].get(CONTROL_KEY, [])
        calls.append(len(runs))
        return apply_model(args["input"], args["timestep"], **args["c"])

    def sample(p, n, count=False):
        m = model.clone()
        if path == "yoso_1":
            m = patch_prediction(m, "v_prediction")
        if path == "core_lcm_sampler":
            m = patch_prediction(m, "lcm")
        if count:
            m.model_options["model_function_wrapper"] = counting
        if path.startswith("ksampler"):
            return comfy.sample.sample(m, noise, 3, 4.5, "dpmpp_2m", "normal", p, n, x, disable_pbar=True, seed=1)
        sampler, ts = {"lcm_4": (make_sampler("lcm"), [999, 759, 499, 259]), "dmd_1": (make_sampler("dmd"), [400]),
                       "yoso_1": (make_sampler("lcm"), [999]),
                       "core_lcm_sampler": (comfy.samplers.ksampler("lcm"), [999, 759, 499, 259])}[path]
        return comfy.sample.sample_custom(m, noise, 1.0, sampler, sigmas_for_timesteps(m, ts), p, n, x,
                                          disable_pbar=True, seed=1)

    plain = sample(pos, neg)
    controlled = sample(*our_apply(pos, neg, cn, img, vae, x), count=True)
    n_calls = {"ksampler_dpmpp_2m_cfg4.5": 3, "lcm_4": 4, "dmd_1": 1, "yoso_1": 1, "core_lcm_sampler": 4}[path]
    assert calls == [1] * n_calls
    assert rel_norm(controlled, plain) > 1e-3
    assert torch.equal(sample(*our_apply(pos, neg, cn, img, vae, x, strength=0.0)), plain)


def test_control_chain_check_for_the_model(setup):
    """check_control_chain: what the PixArt MODEL's extra_conds calls to refuse foreign ControlNets up front."""
    import comfy.controlnet
    from pixart_delta.loaders.pixart_comfy import check_control_chain
    cn = setup["cn"]
    check_control_chain(None)
    ours = cn.copy().set_cond_hint(image(), 1.0)
    ours.set_previous_controlnet(cn.copy())
    check_control_chain(ours)
    ours.set_previous_controlnet(comfy.controlnet.T2IAdapter(torch.nn.Identity(), 4, 8, "nearest-exact"))
    with pytest.raises(ValueError, match="T2IAdapter ControlNet is attached to a PixArt MODEL"):
        check_control_chain(ours)
