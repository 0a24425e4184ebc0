"""Few-step nodes through ComfyUI's own sampling path (SamplerCustom -> CFGGuider -> KSAMPLER) with a
deterministic stand-in denoiser inside a PixArt MODEL, against diffusers' LCMScheduler loop and the published
one-step formulas (docs/facts/pixart.md §6); bad inputs."""
import pytest
import torch
from diffusers import LCMScheduler
from reference import alpha_bar, rel_max, stand_in

pytestmark = pytest.mark.comfyui

SEED = 1234
SHAPE = (2, 4, 8, 8)


def standin_model(variant):
    """A ComfyUI PixArt MODEL (our config, a comfy.model_base.PixArt) whose network is `stand_in`."""
    import comfy.model_base
    import comfy.model_patcher
    from pixart_delta.loaders.pixart_comfy import PixArtDeltaConfig
    from pixart_delta.loaders.variants import VARIANTS

    class Net(torch.nn.Module):
        def __init__(self, **_):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))
            self.dtype = torch.float32
            self.calls = 0

        def forward(self, x, timesteps, context=None, **_):
            self.calls += 1
            return stand_in(x, timesteps)

    class Model(comfy.model_base.PixArt):
        def __init__(self, config, model_type):
            comfy.model_base.BaseModel.__init__(self, config, model_type, unet_model=Net)

    config = PixArtDeltaConfig({"image_model": "pixart_delta"}, VARIANTS[variant])
    config.set_inference_dtype(torch.float32, None)
    v = VARIANTS[variant].prediction == "v"
    model = Model(config, comfy.model_base.ModelType.V_PREDICTION if v else comfy.model_base.ModelType.EPS)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def sample(model, sampler, sigmas, latent=None):
    """Core SamplerCustom, cfg 1, seed SEED; returns the latent in the model's (scaled) space."""
    from comfy_extras.nodes_custom_sampler import SamplerCustom
    cond = [[torch.zeros(1, 3, 8), {}]]
    latent = {"samples": torch.zeros(SHAPE) if latent is None else latent}
    out = SamplerCustom().sample(model, True, SEED, 1.0, cond, cond, sampler, sigmas, latent)[0]["samples"]
    return model.model.process_latent_in(out)


def seed_noise():
    """The noise SamplerCustom draws for SEED (comfy.sample.prepare_noise: a CPU generator seeded with it)."""
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(SEED))


def nodes():
    from pixart_delta.nodes import few_step
    return few_step


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lcm_through_comfy_matches_diffusers_lcmscheduler(comfy, steps):
    fs = nodes()
    model = standin_model("lcm_1024")
    sigmas = fs.PixArtFewStepScheduler.execute(model, "auto", steps).result[0]
    sampler = fs.PixArtFewStepSampler.execute("lcm").result[0]
    ours = sample(model, sampler, sigmas)

    sched = LCMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         original_inference_steps=50, timestep_scaling=10.0, prediction_type="epsilon")
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(SEED)   # the sampler's re-noising stream (seeded like ComfyUI's samplers)
    latents = seed_noise()
    for t in sched.timesteps:
        latents = sched.step(stand_in(latents, int(t)), t, latents, generator=gen).prev_sample
    assert rel_max(ours, latents) < 1e-5
    assert model.model.diffusion_model.calls == steps


def test_lcm_prediction_patch_with_stock_lcm_sampler_matches_too(comfy):
    """PixArt Prediction Type `lcm` (ComfyUI's LCM model sampling) + our sampler: boundary conditions not doubled."""
    import comfy.samplers
    fs = nodes()
    base = standin_model("lcm_1024")
    patched = fs.PixArtPredictionType.execute(base, "lcm").result[0]
    sigmas = fs.PixArtFewStepScheduler.execute(patched, "lcm", 4).result[0]
    ours = sample(patched, fs.PixArtFewStepSampler.execute("lcm").result[0], sigmas)
    stock = sample(patched, comfy.samplers.sampler_object("lcm"), sigmas)
    plain = sample(base, fs.PixArtFewStepSampler.execute("lcm").result[0],
                   fs.PixArtFewStepScheduler.execute(base, "lcm", 4).result[0])
    assert rel_max(ours, stock) < 1e-6
    assert rel_max(ours, plain) < 1e-5


def test_dmd_one_step_sees_unit_variance_noise(comfy):
    import comfy.samplers
    fs = nodes()
    model = standin_model("dmd_512")
    sigmas = fs.PixArtFewStepScheduler.execute(model, "auto").result[0]
    assert sigmas.tolist() == pytest.approx([2.0411, 0.0], rel=1e-4)
    ours = sample(model, fs.PixArtFewStepSampler.execute("dmd").result[0], sigmas)
    z, ab = seed_noise(), alpha_bar(400)
    expected = (z - (1 - ab) ** 0.5 * stand_in(z, 400)) / ab ** 0.5
    assert rel_max(ours, expected) < 1e-5
    # the stock path at the same sigma feeds the model sqrt(1 - alpha_bar) z = 0.898 z and misses the formula
    stock = sample(model, comfy.samplers.sampler_object("euler"), sigmas)
    assert rel_max(stock, expected) > 1e-2
    lcm_sampler = sample(model, fs.PixArtFewStepSampler.execute("lcm").result[0], sigmas)
    assert rel_max(lcm_sampler, expected) > 1e-2


def test_yoso_one_step_v_prediction(comfy):
    fs = nodes()
    model = standin_model("alpha_512")                  # loaded as eps ...
    model = fs.PixArtPredictionType.execute(model, "v_prediction").result[0]   # ... set to v by the node
    sigmas = fs.PixArtFewStepScheduler.execute(model, "yoso").result[0]
    ours = sample(model, fs.PixArtFewStepSampler.execute("lcm").result[0], sigmas)
    z, ab = seed_noise(), alpha_bar(999)
    expected = ab ** 0.5 * z - (1 - ab) ** 0.5 * stand_in(z, 999)
    assert rel_max(ours, expected) < 1e-5


def test_yoso_variant_is_v_prediction_and_auto_keeps_it(comfy):
    import comfy.model_sampling
    fs = nodes()
    model = standin_model("yoso_512")
    assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.V_PREDICTION)
    auto = fs.PixArtPredictionType.execute(model, "auto").result[0]
    assert isinstance(auto.get_model_object("model_sampling"), comfy.model_sampling.V_PREDICTION)
    eps = fs.PixArtPredictionType.execute(model, "eps").result[0]
    assert not isinstance(eps.get_model_object("model_sampling"), comfy.model_sampling.V_PREDICTION)
    assert fs.PixArtFewStepScheduler.execute(model, "auto").result[0].tolist() == pytest.approx([157.407, 0.0], rel=1e-4)


def test_yoso_with_informative_prior_equals_reference_add_noise(comfy):
    """Prior latent as latent image, full denoise: the model sees add_noise(prior, noise, 999) up to 2e-5."""
    fs = nodes()
    model = standin_model("yoso_512")
    refs = torch.randn(3, *SHAPE[1:], generator=torch.Generator().manual_seed(4)) * 5
    prior = fs.PixArtYOSOPriorLatent.execute(SHAPE[0], 77, references={"samples": refs}).result[0]["samples"]
    sigmas = fs.PixArtFewStepScheduler.execute(model, "yoso").result[0]
    ours = sample(model, fs.PixArtFewStepSampler.execute("lcm").result[0], sigmas, latent=prior)
    scaled_prior, z, ab = prior * 0.18215, seed_noise(), alpha_bar(999)
    x_t = ab ** 0.5 * scaled_prior + (1 - ab) ** 0.5 * z            # DDPM add_noise at T=999
    expected = ab ** 0.5 * x_t - (1 - ab) ** 0.5 * stand_in(x_t, 999)
    assert rel_max(ours, expected) < 1e-4


def test_custom_and_pixart_spacing_sigmas(comfy):
    fs = nodes()
    model = standin_model("lcm_1024")
    ms = model.get_model_object("model_sampling")
    for args, ts in [(("lcm", 4, "pixart"), [999, 759, 519, 279]),
                     (("custom", 4, "diffusers", 400, "999 500 20"), [999, 500, 20]),
                     (("dmd", 1, "diffusers", 250), [250])]:
        sig = fs.PixArtFewStepScheduler.execute(model, *args).result[0]
        assert sig[-1] == 0 and len(sig) == len(ts) + 1
        assert ms.timestep(sig[:-1]).tolist() == ts
        expected = [((1 - alpha_bar(t)) / alpha_bar(t)) ** 0.5 for t in ts]
        assert sig[:-1].tolist() == pytest.approx(expected, rel=1e-5)


def test_schedule_rejects_non_pixart_and_standard_models(comfy):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models
    fs = nodes()
    sd15 = comfy.supported_models.SD15({"disable_unet_model_creation": True})
    unet = comfy.model_patcher.ModelPatcher(comfy.model_base.BaseModel(sd15), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(ValueError, match="not a PixArt model"):
        fs.PixArtFewStepScheduler.execute(unet, "lcm", 4)
    with pytest.raises(ValueError, match="not a PixArt model"):
        fs.PixArtPredictionType.execute(unet, "v_prediction")
    with pytest.raises(ValueError, match="standard multi-step model"):
        fs.PixArtFewStepScheduler.execute(standin_model("alpha_512"), "auto")
    with pytest.raises(ValueError, match="strictly decreasing"):
        fs.PixArtFewStepScheduler.execute(standin_model("alpha_512"), "custom", 4, "diffusers", 400, "100, 200")


def test_prior_node_inputs_and_errors(comfy, tmp_path):
    fs = nodes()
    refs = torch.randn(2, 4, 6, 10, generator=torch.Generator().manual_seed(0))
    out = fs.PixArtYOSOPriorLatent.execute(5, 3, references={"samples": refs}).result[0]["samples"]
    assert out.shape == (5, 4, 6, 10)
    noise = torch.randn(5, 4, 6, 10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, refs.mean(0) + refs.std() * noise)

    class FakeVAE:   # encode: IMAGE [B,H,W,3] in [0,1] -> LATENT [B,4,H/8,W/8]
        def encode(self, pixels):
            return torch.nn.functional.avg_pool2d(pixels.permute(0, 3, 1, 2), 8).repeat(1, 2, 1, 1)[:, :4] * 2 - 1

    img = torch.rand(1, 48, 80, 3)
    both = fs.PixArtYOSOPriorLatent.execute(1, 3, references={"samples": refs}, image=img, vae=FakeVAE()).result[0]
    all_refs = torch.cat([refs, FakeVAE().encode(img)])
    torch.testing.assert_close(both["samples"], all_refs.mean(0) + all_refs.std() * noise[:1])

    with pytest.raises(ValueError, match="empty"):
        fs.PixArtYOSOPriorLatent.execute(1, 0, references={"samples": torch.zeros(0, 4, 6, 10)})
    with pytest.raises(ValueError, match="different sizes"):
        fs.PixArtYOSOPriorLatent.execute(1, 0, references={"samples": refs}, image=torch.rand(1, 64, 64, 3), vae=FakeVAE())
    with pytest.raises(ValueError, match="without a VAE"):
        fs.PixArtYOSOPriorLatent.execute(1, 0, image=img)
    with pytest.raises(ValueError, match="no references"):
        fs.PixArtYOSOPriorLatent.execute(1, 0)


def test_prior_save_then_load_through_the_executor(comfy, comfy_dirs):
    """PixArt Save YOSO Prior writes models/yoso_priors/<name>.safetensors; the prior node loads it by name."""
    import folder_paths
    refs = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    fs = nodes()
    fs.PixArtYOSOPriorSave.execute("test_prior", references={"samples": refs})
    assert "test_prior.safetensors" in folder_paths.get_filename_list("yoso_priors")
    saved = folder_paths.get_full_path("yoso_priors", "test_prior.safetensors")
    assert saved.startswith(str(comfy_dirs["models"]))
    graph = {
        "1": {"class_type": "PixArtYOSOPriorLatent",
              "inputs": {"batch_size": 2, "seed": 5, "prior_file": "test_prior.safetensors"}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "prior_test"}},
    }
    comfy.run(graph)
    direct = fs.PixArtYOSOPriorLatent.execute(2, 5, prior_file="test_prior.safetensors").result[0]["samples"]
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(direct, refs.mean(0) + refs.std() * noise)
    with pytest.raises(ValueError, match="use one"):
        fs.PixArtYOSOPriorLatent.execute(1, 0, references={"samples": refs}, prior_file="test_prior.safetensors")
    # the save node as an output node in a graph
    out = comfy.run({
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 2}},
        "2": {"class_type": "PixArtYOSOPriorSave", "inputs": {"name": "graph_prior", "references": ["1", 0]}},
    })
    assert "graph_prior.safetensors" in out["2"]["text"][0]
    from pixart_delta.samplers.prior import load_prior
    mean, std, meta = load_prior(folder_paths.get_full_path("yoso_priors", "graph_prior.safetensors"))
    assert mean.shape == (4, 4, 8) and float(mean.abs().max()) == 0 and float(std) == 0 and meta["references"] == "2"


def test_steps_out_of_range_is_a_validation_error(comfy, models_dir):
    """ComfyUI's prompt validation refuses steps > 8 with a message naming the input, before anything runs."""
    from pixart_delta.tools.comfy_runtime import ExecutionFailed
    from pixart_delta.tiny import pixart as fx
    fx.write_original(models_dir / "diffusion_models" / "few_step_test" / "PixArt-XL-2-512x512.pth",
                      fx.random_original(**fx.TINY, native_px=512))
    graph = {
        "1": {"class_type": "PixArtCheckpointLoader", "inputs": {"ckpt_name": "few_step_test/PixArt-XL-2-512x512.pth",
                                                                 "variant": "auto", "weight_dtype": "default"}},
        "2": {"class_type": "PixArtFewStepScheduler", "inputs": {"model": ["1", 0], "mode": "lcm", "steps": 9,
              "spacing": "diffusers", "timestep": 400, "timesteps": ""}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    with pytest.raises(ExecutionFailed) as e:
        comfy.run(graph)
    assert "steps" in str(e.value) and "bigger than max of 8" in str(e.value)
    assert "PixArtCheckpointLoader" not in str(e.value)
    graph["2"]["inputs"]["steps"] = 4
    comfy.run(graph)   # in range: runs
