"""ComfyUI glue for the few-step samplers: SIGMAS from a MODEL's model_sampling, SAMPLER objects (KSAMPLER around
sampling.py) and the prediction-type patch (as ComfyUI's ModelSamplingDiscrete node does it)."""
from __future__ import annotations

import torch

import comfy.model_sampling
import comfy.samplers

from .sampling import sample_dmd, sample_few_step

PREDICTIONS = ("auto", "eps", "v_prediction", "lcm")


class FewStepSampler(comfy.samplers.KSAMPLER):
    """KSAMPLER whose starting latent can be unit-variance noise at any first sigma.

    Stock KSAMPLER scales the noise by sqrt(1 + sigma0^2) only when sigma0 is the model's largest sigma, else by
    sigma0; a DMD model sampled at t=400 then sees 0.898x the variance it was trained on. With
    `unit_variance_start` the start is latent + noise * sqrt(1 + sigma0^2), i.e. the network sees exactly z ~ N(0, I).
    """

    def __init__(self, sampler_function, extra_options=None, unit_variance_start=False):
        super().__init__(sampler_function, extra_options or {})
        self.unit_variance_start = unit_variance_start

    def max_denoise(self, model_wrap, sigmas):
        return True if self.unit_variance_start else super().max_denoise(model_wrap, sigmas)


def make_sampler(kind: str, timestep_scaling: float = 10.0, sigma_data: float = 0.5) -> FewStepSampler:
    if kind == "lcm":
        return FewStepSampler(sample_few_step, {"timestep_scaling": timestep_scaling, "sigma_data": sigma_data})
    if kind == "dmd":
        return FewStepSampler(sample_dmd, {}, unit_variance_start=True)
    raise ValueError(f"unknown few-step sampler {kind!r}; expected lcm or dmd")


def model_sampling_of(model_patcher):
    ms = model_patcher.get_model_object("model_sampling")
    if not (hasattr(ms, "sigma") and hasattr(ms, "timestep") and hasattr(ms, "sigmas")):
        raise ValueError(f"the MODEL's model sampling ({type(ms).__name__}) is not a discrete-timestep schedule; "
                         f"few-step PixArt schedules need PixArt's 1000-step discrete schedule")
    return ms


def sigmas_for_timesteps(model_patcher, timesteps: list[int]) -> torch.Tensor:
    """[sigma(t_0), ..., sigma(t_n-1), 0] from the MODEL's own model_sampling."""
    ms = model_sampling_of(model_patcher)
    t = torch.tensor(timesteps, dtype=torch.float32)
    sig = ms.sigma(t).float().cpu()
    return torch.cat([sig, sig.new_zeros(1)])


def prediction_for_variant(variant) -> str:
    if variant is None:
        return "eps"
    return "v_prediction" if variant.prediction == "v" else "eps"


def patch_prediction(model_patcher, prediction: str):
    """Clone of the MODEL whose model_sampling predicts eps, v or eps with LCM boundary conditions.

    Same patch as ComfyUI's ModelSamplingDiscrete node (its LCM classes are reused), keeping the model's
    linear beta schedule."""
    if prediction not in PREDICTIONS[1:]:
        raise ValueError(f"unknown prediction type {prediction!r}; expected one of {', '.join(PREDICTIONS)}")
    base = comfy.model_sampling.ModelSamplingDiscrete
    if prediction == "eps":
        kind = comfy.model_sampling.EPS
    elif prediction == "v_prediction":
        kind = comfy.model_sampling.V_PREDICTION
    else:
        from comfy_extras.nodes_model_advanced import LCM, ModelSamplingDiscreteDistilled
        kind, base = LCM, ModelSamplingDiscreteDistilled

    class ModelSamplingPixArt(base, kind):
        pass

    m = model_patcher.clone()
    m.add_object_patch("model_sampling", ModelSamplingPixArt(model_patcher.model.model_config))
    return m
