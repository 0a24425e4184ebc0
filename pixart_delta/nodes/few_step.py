"""Few-step PixArt sampling: schedule (SIGMAS), sampler (SAMPLER), prediction type, YOSO informative prior."""
from __future__ import annotations

import os

import torch
from comfy_api.latest import io

import comfy.model_management
import comfy.utils
import folder_paths

from ..loaders.pixart_comfy import is_pixart_model, pixart_variant
from ..samplers import prior as ipi
from ..samplers.sampling_comfy import PREDICTIONS, make_sampler, patch_prediction, prediction_for_variant, sigmas_for_timesteps
from ..samplers.schedules import LCM_MAX_STEPS, MODES, SPACINGS, few_step_timesteps

PRIOR_FOLDER = "yoso_priors"
if PRIOR_FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.folder_names_and_paths[PRIOR_FOLDER] = ([os.path.join(folder_paths.models_dir, PRIOR_FOLDER)], {".safetensors"})


def _require_pixart(model):
    if not is_pixart_model(model):
        inner = type(getattr(model, "model", model)).__name__
        raise ValueError(f"the MODEL is a {inner}, not a PixArt model; load it with PixArt Checkpoint Loader "
                         f"(few-step schedules are defined on PixArt's 1000-step linear noise schedule)")


class PixArtFewStepScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtFewStepScheduler",
            display_name="PixArt Few-Step Schedule",
            category="PixArt/sampling",
            description="SIGMAS for few-step PixArt models (LCM, DMD, YOSO), for SamplerCustom / SamplerCustomAdvanced.",
            inputs=[
                io.Model.Input("model", tooltip="A PixArt MODEL; its own noise schedule turns timesteps into sigmas."),
                io.Combo.Input("mode", options=["auto", *MODES], default="auto",
                               tooltip="auto: what the checkpoint is (PixArt-LCM -> lcm, DMD -> dmd, YOSO -> yoso). "
                                       "lcm: 1-8 steps on LCM's 50-step origin schedule; dmd: one step at `timestep`; "
                                       "yoso: one step at t=999; custom: the `timesteps` list."),
                io.Int.Input("steps", default=4, min=1, max=LCM_MAX_STEPS,
                             tooltip="LCM steps (1-8); PixArt-LCM is made for 4. Ignored by dmd/yoso/custom."),
                io.Combo.Input("spacing", options=list(SPACINGS), default="diffusers",
                               tooltip="LCM timesteps: diffusers' LCMScheduler (4 steps: 999, 759, 499, 259) or "
                                       "PixArt-δ's original scheduler (999, 759, 519, 279)."),
                io.Int.Input("timestep", default=400, min=1, max=999,
                             tooltip="DMD only: the single timestep (PixArt-DMD was trained at 400)."),
                io.String.Input("timesteps", default="999, 759, 499, 259",
                                tooltip="custom only: decreasing integer timesteps (0-999), noisiest first."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, mode="auto", steps=4, spacing="diffusers", timestep=400,
                timesteps="999, 759, 499, 259") -> io.NodeOutput:
        _require_pixart(model)
        if mode == "auto":
            variant = pixart_variant(model)
            mode = getattr(variant, "sampling", "standard")
            if mode not in MODES:
                title = getattr(variant, "title", "this PixArt model")
                raise ValueError(f"{title} is a standard multi-step model, so 'auto' has no few-step schedule for "
                                 f"it; use a regular scheduler (BasicScheduler) or pick a mode")
        return io.NodeOutput(sigmas_for_timesteps(model, few_step_timesteps(mode, steps, spacing, timestep, timesteps)))


class PixArtFewStepSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtFewStepSampler",
            display_name="PixArt Few-Step Sampler",
            category="PixArt/sampling",
            description="SAMPLER for PixArt-LCM, YOSO-PixArt (lcm) and PixArt-DMD (dmd); use cfg 1.",
            inputs=[
                io.Combo.Input("sampler", options=["lcm", "dmd"], default="lcm",
                               tooltip="lcm: LCM multistep with boundary conditions, re-noising between steps with the "
                                       "sampler's seed (PixArt-LCM, YOSO). dmd: one step from unit-variance noise, as "
                                       "PixArt-DMD was trained (the stock path feeds it 0.898x that variance)."),
                io.Float.Input("timestep_scaling", default=10.0, min=0.0, max=1000.0, step=0.1,
                               tooltip="lcm only: LCM boundary-condition timestep scaling (10 for PixArt-LCM). "
                                       "0 turns the boundary conditions off."),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, sampler="lcm", timestep_scaling=10.0) -> io.NodeOutput:
        return io.NodeOutput(make_sampler(sampler, timestep_scaling))


class PixArtPredictionType(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtPredictionType",
            display_name="PixArt Prediction Type",
            category="PixArt/sampling",
            description="Sets how a PixArt MODEL's output is read: epsilon, v-prediction or LCM (epsilon with LCM "
                        "boundary conditions, for core samplers such as `lcm`).",
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("prediction", options=list(PREDICTIONS), default="auto",
                               tooltip="auto: what the checkpoint was trained for (YOSO: v_prediction, others: eps). "
                                       "lcm: ComfyUI's LCM model sampling (50-step origin schedule); not needed with "
                                       "PixArt Few-Step Sampler, which applies the boundary conditions itself."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, prediction="auto") -> io.NodeOutput:
        _require_pixart(model)
        if prediction == "auto":
            prediction = prediction_for_variant(pixart_variant(model))
        return io.NodeOutput(patch_prediction(model, prediction))


def _references(latents, image, vae) -> list[tuple[str, torch.Tensor]]:
    refs = []
    if latents is not None:
        refs.append(("the LATENT references", latents["samples"]))
    if image is not None:
        if vae is None:
            raise ValueError("YOSO prior: an IMAGE was connected without a VAE to encode it; connect the model's VAE")
        if image.shape[0] == 0:
            raise ValueError("YOSO prior: the IMAGE batch is empty (0 images); at least one reference is needed")
        refs.append(("the encoded IMAGE", vae.encode(image[:, :, :, :3])))
    return refs


def _prior_from_inputs(latents, image, vae, prior_file="none"):
    refs = _references(latents, image, vae)
    if prior_file and prior_file != "none":
        if refs:
            raise ValueError(f"YOSO prior: both a saved prior ({prior_file}) and references are connected; use one")
        mean, std, _ = ipi.load_prior(folder_paths.get_full_path_or_raise(PRIOR_FOLDER, prior_file))
        return mean, std, None
    batch = ipi.combine_references(refs)
    mean, std = ipi.prior_stats(batch)
    return mean, std, batch.shape[0]


class PixArtYOSOPriorLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtYOSOPriorLatent",
            display_name="PixArt YOSO Informative Prior Latent",
            category="PixArt/latent",
            description="YOSO's informative prior: per-element mean of reference latents + their std x noise. Use it "
                        "as the latent image with full denoise (YOSO one-step at t=999).",
            inputs=[
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="How many prior latents to draw."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the prior's noise (the sampler adds its own noise on top)."),
                io.Latent.Input("references", optional=True,
                                tooltip="A batch of reference latents (one is enough), e.g. from VAE Encode."),
                io.Image.Input("image", optional=True, tooltip="Reference images, encoded with `vae` inside the node."),
                io.Vae.Input("vae", optional=True, tooltip="VAE for `image` (the PixArt model's SD VAE)."),
                io.Combo.Input("prior_file", options=["none", *folder_paths.get_filename_list(PRIOR_FOLDER)],
                               default="none", optional=True,
                               tooltip="A prior saved by PixArt Save YOSO Prior in models/yoso_priors, instead of references."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, batch_size, seed, references=None, image=None, vae=None, prior_file="none") -> io.NodeOutput:
        mean, std, _ = _prior_from_inputs(references, image, vae, prior_file)
        noise = ipi.prior_noise(batch_size, mean.shape, seed)
        latent = ipi.prior_latent(mean, std, noise)
        return io.NodeOutput({"samples": latent.to(comfy.model_management.intermediate_device())})


class PixArtYOSOPriorSave(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtYOSOPriorSave",
            display_name="PixArt Save YOSO Prior",
            category="PixArt/latent",
            description="Saves a YOSO informative prior (mean latent + std) to models/yoso_priors/<name>.safetensors "
                        "so PixArt YOSO Informative Prior Latent can reuse it without the reference images.",
            inputs=[
                io.String.Input("name", default="yoso_prior", tooltip="File name (without extension) in models/yoso_priors."),
                io.Latent.Input("references", optional=True),
                io.Image.Input("image", optional=True),
                io.Vae.Input("vae", optional=True),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, name="yoso_prior", references=None, image=None, vae=None) -> io.NodeOutput:
        name = os.path.basename(str(name).strip()) or "yoso_prior"
        if not name.endswith(".safetensors"):
            name += ".safetensors"
        mean, std, count = _prior_from_inputs(references, image, vae)
        folder = folder_paths.get_folder_paths(PRIOR_FOLDER)[0]
        path = ipi.save_prior(os.path.join(folder, name), mean, std, count)
        return io.NodeOutput(ui={"text": [f"saved {path} ({count} references, latent {list(mean.shape)}, std {float(std):.4f})"]})


NODES = [PixArtFewStepScheduler, PixArtFewStepSampler, PixArtPredictionType, PixArtYOSOPriorLatent, PixArtYOSOPriorSave]
