"""A PixArt-δ ControlNet file -> a ComfyUI CONTROL_NET (comfy.controlnet.ControlNet subclass).

It works with core "Apply ControlNet" / "Apply ControlNet (Advanced)" (strength, start/end percent, the VAE
that encodes the hint image, chaining) and with our "PixArt ControlNet Apply". Instead of returning
residuals from get_control (which runs before the model and so cannot see h0), it hands the branch and the
hint latent to PixArt.forward through transformer_options; the branch then runs between the base blocks
with the MODEL's own h0, t0, text and mask (models/pixart_controlnet.py). The PixArt MODEL refuses any other
ControlNet in the chain (loaders/pixart_comfy.py).
"""
from __future__ import annotations

import dataclasses
import logging

import comfy.controlnet
import comfy.latent_formats
import comfy.model_management as mm
import comfy.ops
import comfy.utils

from ..models.pixart import CONTROL_KEY, PixArt, PixArtBranchControl
from ..models.pixart_controlnet import PixArtControlNetBranch, PixArtControlRun
from .dtypes import CONTROLNET_WEIGHT_DTYPES, chosen_dtype
from .dtypes_comfy import unet_manual_cast
from .files import CheckpointError, assign_weights
from .pixart_comfy import comfy_attention
from .pixart_controlnet import ControlNetFile, check_fit, log_warnings, read_controlnet


class PixArtControlNet(comfy.controlnet.ControlNet, PixArtBranchControl):
    """latent_format SD15 + compression_ratio 1: given an IMAGE hint and a VAE (core Apply nodes), ComfyUI's own
    code resizes (centre crop), VAE-encodes and scales it. `hint_is_latent` (PixArt ControlNet Apply) means the
    hint is already a scaled latent of the right size and is used as it is."""

    def __init__(self, control_model=None, info: ControlNetFile | None = None, **kw):
        super().__init__(control_model, compression_ratio=1, latent_format=comfy.latent_formats.SD15(),
                         extra_conds=[], **kw)
        self.info = info
        self.hint_is_latent = False
        self._pending: PixArtControlRun | None = None
        self._checked_models: set = set()

    def copy(self):
        c = PixArtControlNet(None, self.info, load_device=self.load_device, manual_cast_dtype=self.manual_cast_dtype)
        c.control_model = self.control_model
        c.control_model_wrapped = self.control_model_wrapped
        self.copy_to(c)
        c.hint_is_latent = self.hint_is_latent
        if self.hint_is_latent:
            c.latent_format = None
        return c

    def set_latent_hint(self, latent, strength, percent_range):
        """Our Apply node: `latent` is the hint already VAE-encoded, scaled and sized like the sampled latent."""
        self.hint_is_latent = True
        self.latent_format = None       # core must neither ask for a VAE nor scale it again
        return self.set_cond_hint(latent, strength, percent_range)

    # -- sampling ---------------------------------------------------------------------------------
    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        check_model(self.info, model)
        self._pending = None

    def _hint(self, x_noisy, batched_number, dtype):
        h, w = x_noisy.shape[-2:]
        if self.cond_hint is None or tuple(self.cond_hint.shape[-2:]) != (h, w):
            self.cond_hint = None
            if self.hint_is_latent:
                hint = self.cond_hint_original
                if tuple(hint.shape[-2:]) != (h, w):
                    hint = comfy.utils.common_upscale(hint, w, h, "bilinear", "center")
            else:
                if self.vae is None:
                    raise ValueError("PixArt ControlNet needs a VAE to encode the hint image: connect the `vae` "
                                     "input of Apply ControlNet (the SD1.5 VAE, as for the PixArt-α MODEL)")
                ratio = self.vae.spacial_compression_encode()
                image = comfy.utils.common_upscale(self.cond_hint_original, w * ratio, h * ratio,
                                                   self.upscale_algorithm, "center")
                loaded = mm.loaded_models(only_currently_used=True)
                hint = self.vae.encode(image.movedim(1, -1)[..., :3])
                mm.load_models_gpu(loaded)
                hint = comfy.latent_formats.SD15().process_in(hint)
            self.cond_hint = hint.to(device=x_noisy.device, dtype=dtype)
        if self.cond_hint.shape[0] not in (1, x_noisy.shape[0]):   # one hint per latent, cond/uncond batched
            return comfy.controlnet.broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        return self.cond_hint

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        if self._pending is not None and not self._pending.used:
            raise RuntimeError(_UNUSED)
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if self.timestep_range is not None and (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]):
            return control_prev
        if self.strength == 0:
            return control_prev
        dtype = self.manual_cast_dtype or self.control_model.dtype or x_noisy.dtype
        run = PixArtControlRun(self.control_model, self._hint(x_noisy, batched_number, dtype), self.strength)
        # a fresh dict for this model call; earlier PixArt ControlNets of the chain already put theirs in it
        opts = cond.get("transformer_options", transformer_options)
        cond["transformer_options"] = {**opts, CONTROL_KEY: [*opts.get(CONTROL_KEY, ()), run]}
        self._pending = run
        return control_prev

    def cleanup(self):
        pending, self._pending = self._pending, None
        super().cleanup()
        if pending is not None and not pending.used:
            raise RuntimeError(_UNUSED)


_UNUSED = ("PixArt ControlNet: the model call did not run the ControlNet branch (the sampler or a model patch "
           "called the PixArt network without ComfyUI's transformer_options). The result would be uncontrolled, "
           "so the run was stopped.")


def check_model(info: ControlNetFile, model) -> list[str]:
    """`model`: a BaseModel (what pre_run gets) or a ModelPatcher. Raises when the ControlNet cannot drive it."""
    base_model = getattr(model, "model", model)
    net = getattr(base_model, "diffusion_model", None)
    if not isinstance(net, PixArt):
        kind = type(net).__module__ + "." + type(net).__name__ if net is not None else type(base_model).__name__
        hint = (" ComfyUI's built-in PixArt model ignores ControlNets; load the file with 'PixArt Checkpoint Loader'."
                if "comfy.ldm.pixart" in kind else " It only works with PixArt MODELs from 'PixArt Checkpoint Loader'.")
        raise ValueError(f"PixArt ControlNet {info.path.name} is attached to a MODEL that is not one of this pack's "
                         f"PixArt models ({kind}).{hint}")
    cfg = dict(hidden_size=net.hidden_size, depth=net.depth, micro_condition=net.micro_conditioning)
    variant = getattr(getattr(base_model, "model_config", None), "pixart_variant", None)
    warnings = check_fit(info, cfg, variant)
    log_warnings(info, warnings)
    return warnings


def load_pixart_controlnet(path, weight_dtype: str = "default", sd: dict | None = None) -> PixArtControlNet:
    info = read_controlnet(path, sd)
    log_warnings(info, info.warnings)
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    dtype = chosen_dtype(weight_dtype, CONTROLNET_WEIGHT_DTYPES)
    if dtype is None:
        dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(info.state_dict),
                              weight_dtype=comfy.utils.weight_dtype(info.state_dict))
    manual_cast = unet_manual_cast(dtype, load_device)   # bf16 on a bf16-capable CPU: computed in bf16
    ops = comfy.ops.pick_operations(dtype, manual_cast, disable_fast_fp8=True)
    branch = PixArtControlNetBranch(info.hidden, info.num_heads, info.copies, dtype=dtype, device=offload_device,
                                    operations=ops, attention=comfy_attention)
    missing, unexpected = assign_weights(branch, info.state_dict)
    if missing or unexpected:  # read_controlnet checked the keys already; this would be a bug
        raise CheckpointError(f"{info.path}: ControlNet weights do not fit the branch: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    logging.info("PixArt ControlNet: %s", info.describe())
    # The CONTROL_NET keeps what the file is, not a second reference to the tensors the branch now owns.
    info = dataclasses.replace(info, state_dict={})
    return PixArtControlNet(branch.eval(), info, load_device=load_device, manual_cast_dtype=manual_cast)
