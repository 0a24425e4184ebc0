"""The few-step sampler functions (no ComfyUI) against diffusers' LCMScheduler loop and the published one-step
formulas, with a deterministic stand-in denoiser. The VE-space model wrapper below is a plain re-implementation
of how a k-diffusion sampler sees a discrete eps/v model (x = x0 + sigma * noise; the network gets x / sqrt(1+sigma^2))."""
import pytest
import torch
from diffusers import LCMScheduler

from pixart_delta.samplers.sampling import lcm_scalings, sample_dmd, sample_few_step
from pixart_delta.samplers.schedules import few_step_timesteps
from reference import rel_max, stand_in


class VESchedule:
    """Discrete VP schedule seen in variance-exploding terms, written from the formulas."""

    def __init__(self):
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        ab = torch.cumprod(1 - betas, 0)
        self.sigmas = ((1 - ab) / ab).sqrt().float()

    def sigma(self, t):
        return self.sigmas[torch.as_tensor(t).long()]

    def timestep(self, sigma):
        return (sigma.log()[None] - self.sigmas.log()[:, None]).abs().argmin(0).view(sigma.shape)

    def calculate_input(self, sigma, x):
        return x / (sigma.reshape(-1, 1, 1, 1) ** 2 + 1) ** 0.5

    def noise_scaling(self, sigma, noise, latent, max_denoise=False):
        return latent + noise * sigma


def make_model(ms, prediction):
    def model(x, sigma, **_):
        s = sigma.reshape(-1, 1, 1, 1)
        xin = ms.calculate_input(sigma, x)
        out = stand_in(xin, ms.timestep(sigma))
        if prediction == "eps":
            return x - out * s
        return xin / (s ** 2 + 1) ** 0.5 - out * s / (s ** 2 + 1) ** 0.5   # v: sqrt(ab) x_t - sqrt(1-ab) v
    return model


def diffusers_lcm(noise, steps, seed, prediction="epsilon", timesteps=None):
    sched = LCMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         original_inference_steps=50, timestep_scaling=10.0, prediction_type=prediction)
    sched.set_timesteps(steps, timesteps=timesteps)
    gen = torch.Generator().manual_seed(seed)
    latents = noise.clone()
    for t in sched.timesteps:
        latents = sched.step(stand_in(latents, int(t)), t, latents, generator=gen).prev_sample
    return latents


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lcm_matches_diffusers_loop(steps):
    ms, seed = VESchedule(), 123
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    sigmas = torch.cat([ms.sigma(few_step_timesteps("lcm", steps)), torch.zeros(1)])
    x = noise * (1 + sigmas[0] ** 2) ** 0.5          # the sampler's start at the largest sigma
    ours = sample_few_step(make_model(ms, "eps"), x, sigmas, extra_args={"seed": seed}, disable=True, model_sampling=ms)
    ref = diffusers_lcm(noise, steps, seed)
    assert rel_max(ours, ref) < 1e-5
    # a different seed for the re-noising changes multistep results only
    other = sample_few_step(make_model(ms, "eps"), x, sigmas, extra_args={"seed": seed + 1}, disable=True, model_sampling=ms)
    assert torch.equal(other, ours) == (steps == 1)


def test_boundary_conditions_at_low_timestep():
    """At t=19 the LCM boundary conditions are large enough to see: with them we match diffusers, without not."""
    ms, seed, ts = VESchedule(), 9, [999, 259, 19]
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = torch.cat([ms.sigma(ts), torch.zeros(1)])
    x = noise * (1 + sigmas[0] ** 2) ** 0.5
    ref = diffusers_lcm(noise, None, seed, timesteps=ts)
    ours = sample_few_step(make_model(ms, "eps"), x, sigmas, extra_args={"seed": seed}, disable=True, model_sampling=ms)
    off = sample_few_step(make_model(ms, "eps"), x, sigmas, extra_args={"seed": seed}, disable=True,
                          model_sampling=ms, boundary=False)
    assert rel_max(ours, ref) < 1e-6 < rel_max(off, ref)


def test_lcm_scalings_formula():
    c_skip, c_out = lcm_scalings(torch.tensor([259.0, 999.0]))
    assert c_skip[0].item() == pytest.approx(0.25 / (2590 ** 2 + 0.25))
    assert c_out[1].item() == pytest.approx(9990 / (9990 ** 2 + 0.25) ** 0.5)


def test_yoso_one_step_v_prediction_formula():
    ms = VESchedule()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    sigmas = torch.cat([ms.sigma(few_step_timesteps("yoso")), torch.zeros(1)])
    x = z * (1 + sigmas[0] ** 2) ** 0.5
    ours = sample_few_step(make_model(ms, "v"), x, sigmas, disable=True, model_sampling=ms)
    ab = 4.0358297653756754e-05   # alpha_bar(999), linear 1e-4..0.02 betas
    expected = ab ** 0.5 * z - (1 - ab) ** 0.5 * stand_in(z, 999)
    assert rel_max(ours, expected) < 1e-5
    assert rel_max(ours, diffusers_lcm(z, 1, 0, "v_prediction")) < 1e-5


def test_dmd_one_step_formula_from_unit_variance_input():
    ms = VESchedule()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sigmas = torch.cat([ms.sigma([400]), torch.zeros(1)])
    ab = 0.19357200966664667
    expected = (z - (1 - ab) ** 0.5 * stand_in(z, 400)) / ab ** 0.5
    ours = sample_dmd(make_model(ms, "eps"), z * (1 + sigmas[0] ** 2) ** 0.5, sigmas, disable=True, model_sampling=ms)
    assert rel_max(ours, expected) < 1e-5
    stock_start = sample_dmd(make_model(ms, "eps"), z * sigmas[0], sigmas, disable=True, model_sampling=ms)
    assert rel_max(stock_start, expected) > 1e-2
