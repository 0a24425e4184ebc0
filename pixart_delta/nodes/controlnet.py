"""PixArt ControlNet Loader and PixArt ControlNet Apply (PixArt-δ ControlNet-Transformer)."""
from __future__ import annotations

import folder_paths
import comfy.model_management as mm
import comfy.utils
import comfy.latent_formats
from comfy_api.latest import io

from ..loaders.dtypes import CONTROLNET_WEIGHT_DTYPES
from ..loaders.files import CheckpointError
from ..loaders.pixart_controlnet_comfy import PixArtControlNet, check_model, load_pixart_controlnet
from ..preprocessors.controlnet_hint import fit_hint, hint_batch


class PixArtControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtControlNetLoader",
            display_name="PixArt ControlNet Loader",
            category="PixArt/controlnet",
            description="Loads a PixArt-δ ControlNet-Transformer (PixArt-XL-2-512/1024-ControlNet.pth, or the diffusers "
                        "adapter layout) as a CONTROL_NET for 'PixArt ControlNet Apply' or core 'Apply ControlNet "
                        "(Advanced)'. The branch runs inside the PixArt MODEL, starting from the MODEL's own first "
                        "block, so it works with any fitting PixArt-α MODEL (also PixArt-LCM-1024).",
            inputs=[
                io.Combo.Input("control_net_name", options=folder_paths.get_filename_list("controlnet"),
                               tooltip="A file in models/controlnet: PixArt-XL-2-1024-ControlNet.pth / "
                                       "PixArt-XL-2-512-ControlNet.pth (original, full model) or a diffusers "
                                       "PixArtControlNetAdapterModel file."),
                io.Model.Input("model", optional=True,
                               tooltip="The PixArt MODEL to control. Checked here (hidden size, depth, 512 vs 1024 "
                                       "base) and passed through. Leave it empty to get the ControlNet file's own "
                                       "base model as the MODEL output (the reference setup; full files only)."),
                io.Combo.Input("weight_dtype", options=list(CONTROLNET_WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the ControlNet weights; default lets ComfyUI choose "
                                       "(--bf16-unet applies). bf16 on a CPU with bf16 instructions (avx512_bf16, "
                                       "AMX) also computes the branch in bf16, as the MODEL's bf16 does."),
            ],
            outputs=[io.Model.Output(display_name="model"), io.ControlNet.Output(display_name="control_net")],
        )

    @classmethod
    def execute(cls, control_net_name, model=None, weight_dtype="default") -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("controlnet", control_net_name)
        control = load_pixart_controlnet(path, weight_dtype)
        if model is None:
            if not control.info.has_base:
                raise CheckpointError(f"{control.info.describe()} has no base weights: connect the PixArt MODEL it "
                                      f"should control to the `model` input")
            from ..loaders.pixart_comfy import load_pixart_model
            model = load_pixart_model(path)
        check_model(control.info, model)
        return io.NodeOutput(model, control)


class PixArtControlNetApply(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtControlNetApply",
            display_name="PixArt ControlNet Apply",
            category="PixArt/controlnet",
            description="Applies a PixArt-δ ControlNet to positive and negative conditioning as the reference does: "
                        "the hint image is scaled to cover the latent and centre-cropped, VAE-encoded once here "
                        "(SD1 scale 0.18215), and its residuals are multiplied by strength between start and end "
                        "percent. Chains with other ControlNets.",
            inputs=[
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.ControlNet.Input("control_net", tooltip="From PixArt ControlNet Loader."),
                io.Image.Input("image", tooltip="The hint, e.g. a HED edge map (white edges on black). One image for "
                                                "the whole batch or one per latent; any size or aspect ratio (scaled "
                                                "to cover the latent, then centre-cropped)."),
                io.Vae.Input("vae", tooltip="The SD1.5 VAE (PixArt-α latent space) that encodes the hint."),
                io.Latent.Input("latent", tooltip="The latent to be sampled (e.g. Empty Latent Image): gives the "
                                                  "hint's size and the batch size."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Multiplies the ControlNet residuals; 1 = the reference, 0 = no control."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the control starts."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the control stops."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, control_net, image, vae, latent, strength=1.0, start_percent=0.0,
                end_percent=1.0) -> io.NodeOutput:
        if not isinstance(control_net, PixArtControlNet):
            raise ValueError(f"this CONTROL_NET is a {type(control_net).__name__}, not a PixArt-δ ControlNet; load "
                             f"it with 'PixArt ControlNet Loader' (other ControlNets go through core 'Apply "
                             f"ControlNet')")
        if start_percent > end_percent:
            raise ValueError(f"start_percent {start_percent} is after end_percent {end_percent}")
        if vae is None:
            raise ValueError("connect a VAE (the SD1.5 VAE) to encode the hint image")
        samples = latent["samples"]
        if samples.ndim != 4:
            raise ValueError(f"expected an image latent [batch, 4, h, w], got {tuple(samples.shape)}")
        if strength == 0:
            return io.NodeOutput(positive, negative)
        b, _, h, w = samples.shape
        hint_batch(image.shape[0], b)
        ratio = vae.spacial_compression_encode()
        pixels = fit_hint(image, h * ratio, w * ratio)
        pbar = comfy.utils.ProgressBar(1)
        hint = comfy.latent_formats.SD15().process_in(vae.encode(pixels))
        pbar.update(1)
        if tuple(hint.shape[-2:]) != (h, w):
            raise ValueError(f"the VAE gave a {tuple(hint.shape[-2:])} latent for a {h}x{w} latent; use the SD1.5 "
                             f"VAE (8x compression)")
        hint = hint.to(mm.intermediate_device())

        cnets = {}
        out = []
        for conditioning in (positive, negative):
            c = []
            for t in conditioning:
                d = t[1].copy()
                prev = d.get("control", None)
                if prev not in cnets:
                    cnet = control_net.copy().set_latent_hint(hint, strength, (start_percent, end_percent))
                    cnet.set_previous_controlnet(prev)
                    cnets[prev] = cnet
                d["control"] = cnets[prev]
                d["control_apply_to_uncond"] = False
                c.append([t[0], d])
            out.append(c)
        return io.NodeOutput(out[0], out[1])


NODES = [PixArtControlNetLoader, PixArtControlNetApply]
