"""Few-step sampler functions with k-diffusion's signature (model, x, sigmas, extra_args, callback, disable),
for comfy.samplers.KSAMPLER.

`model(x, sigma)` returns the denoised x0 estimate in ComfyUI's variance-exploding space (x = x0 + sigma * noise),
computed by the MODEL's own prediction type (eps / v). No ComfyUI import: the model sampling object (the
MODEL's `model_sampling`) is duck-typed and can be passed explicitly.
"""
from __future__ import annotations

import torch
from tqdm.auto import trange


def lcm_scalings(timestep: torch.Tensor, timestep_scaling: float = 10.0, sigma_data: float = 0.5):
    """LCM boundary-condition coefficients (c_skip, c_out) for a discrete timestep."""
    scaled = timestep * timestep_scaling
    c_skip = sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)
    c_out = scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out


def has_lcm_boundary(model_sampling) -> bool:
    """True when the model sampling already applies LCM boundary conditions (ComfyUI's `lcm` sampling patch)."""
    return getattr(model_sampling, "lcm_boundary", False) or any(
        c.__name__ == "LCM" for c in type(model_sampling).__mro__)


def _model_sampling(model, model_sampling):
    if model_sampling is not None:
        return model_sampling
    return model.inner_model.inner_model.model_sampling


def _noise_sampler(x, seed):
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device,
                                                 generator=generator)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[:1] + (1,) * (like.ndim - 1)) if v.ndim else v


@torch.no_grad()
def sample_few_step(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    boundary=True, timestep_scaling=10.0, sigma_data=0.5, model_sampling=None):
    """Consistency-model multistep sampling (LCM, YOSO, DMD).

    Each step predicts x0 (with LCM's boundary conditions when `boundary`: denoised = c_out * x0 + c_skip * x_t,
    x_t being the variance-preserving sample the network sees), then re-noises it to the next sigma with fresh
    noise from the sampler's noise sampler (seeded by the sampler's seed). One step when sigmas is [sigma, 0].
    """
    extra_args = {} if extra_args is None else extra_args
    ms = _model_sampling(model, model_sampling)
    noise_sampler = _noise_sampler(x, extra_args.get("seed", None)) if noise_sampler is None else noise_sampler
    boundary = boundary and not has_lcm_boundary(ms)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma = sigmas[i] * s_in
        denoised = model(x, sigma, **extra_args)
        if boundary:
            t = ms.timestep(sigma).to(x.dtype)
            c_skip, c_out = lcm_scalings(_view(t, x), timestep_scaling, sigma_data)
            denoised = c_out * denoised + c_skip * ms.calculate_input(sigma, x)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x = ms.noise_scaling(sigmas[i + 1], noise_sampler(sigmas[i], sigmas[i + 1]), x)
    return x


@torch.no_grad()
def sample_dmd(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
               model_sampling=None):
    """DMD: x0 = (z - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) from the unit-variance input z, no boundary
    conditions. The unit-variance start is the caller's job (see comfy_samplers.FewStepSampler); with more
    than one step it re-noises like LCM."""
    return sample_few_step(model, x, sigmas, extra_args, callback, disable, noise_sampler, boundary=False,
                           model_sampling=model_sampling)
