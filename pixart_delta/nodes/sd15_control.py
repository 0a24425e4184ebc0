"""SD1.5-family control nodes: ControlNet 1.0 guess mode (scales and a negative side without control), the SDXS
sketch ControlNet loader (diffusers ControlNets with reduced blocks), and an SD1.5 LoRA loader that reads the YOSO
LoRA and the PEFT / diffusers key forms core's map lacks."""
from __future__ import annotations

import folder_paths
import comfy.controlnet
from comfy_api.latest import io

from ..loaders.files import CheckpointError
from ..loaders.sd15_lora_comfy import apply_sd15_lora
from ..loaders.sdxs_controlnet_comfy import FOLDER as CONTROLNET_FOLDER, cached_sdxs_controlnet
from ..samplers.guess_mode import GUESS_MODE_DECAY, with_guess_mode

_DECAY_TOOLTIP = ("Per-output decay: output i of n (the middle last) gets strength x decay^(n-1-i); "
                  "0.825 is ControlNet 1.0's value (SD1.5: 13 outputs, the shallowest x 0.825^12 = 0.099). "
                  "1 = every output at full strength, as without guess mode.")


def guess_mode_copy(control_net, decay: float):
    """A guess-mode copy of a core (UNet) ControlNet / T2I adapter; the PixArt-δ branch is refused."""
    from ..models.pixart import PixArtBranchControl
    if not isinstance(control_net, comfy.controlnet.ControlBase):
        raise CheckpointError(f"guess mode needs a CONTROL_NET from a ControlNet loader, got {type(control_net).__name__}")
    if isinstance(control_net, PixArtBranchControl):
        raise CheckpointError("guess mode is ControlNet 1.0's per-output scaling of a UNet ControlNet's 13 outputs; "
                              "the PixArt-δ ControlNet-Transformer has no such outputs (use it without guess mode)")
    return with_guess_mode(control_net.copy(), decay)


class PixArtControlNetGuessMode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtControlNetGuessMode",
            display_name="PixArt ControlNet Guess Mode",
            category="PixArt/controlnet",
            description="ControlNet 1.0 guess mode (lllyasviel/ControlNet gradio_canny2image.py): a copy of the "
                        "ControlNet whose 13 SD1.5 outputs are scaled by strength x 0.825^(12-i), i = 0..11 the "
                        "encoder blocks, 12 the middle block. The strength is the Apply node's. In guess mode the "
                        "negative prompt gets no control at all: apply this ControlNet to the positive conditioning "
                        "only (PixArt Apply ControlNet (Guess Mode) does both steps).",
            inputs=[
                io.ControlNet.Input("control_net", tooltip="A UNet ControlNet (core Load ControlNet Model, PixArt "
                                                           "SDXS ControlNet Loader)."),
                io.Float.Input("decay", default=GUESS_MODE_DECAY, min=0.0, max=1.0, step=0.001,
                               tooltip=_DECAY_TOOLTIP),
            ],
            outputs=[io.ControlNet.Output(display_name="control_net")],
        )

    @classmethod
    def execute(cls, control_net, decay=GUESS_MODE_DECAY) -> io.NodeOutput:
        return io.NodeOutput(guess_mode_copy(control_net, decay))


class PixArtControlNetApplyGuessMode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtControlNetApplyGuessMode",
            display_name="PixArt Apply ControlNet (Guess Mode)",
            category="PixArt/controlnet",
            description="Apply ControlNet with ControlNet 1.0's guess-mode switch. Off: core 'Apply ControlNet "
                        "(Advanced)' (both sides, every output x strength). On: the outputs are scaled by "
                        "strength x 0.825^(12-i) and only the positive conditioning gets the control; the negative "
                        "passes through unchanged, as lllyasviel's demo runs the unconditional pass without a hint.",
            inputs=[
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.ControlNet.Input("control_net", tooltip="A UNet ControlNet, e.g. control_sd15_canny.pth."),
                io.Image.Input("image", tooltip="The hint in pixels, e.g. a Canny edge map (white on black)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Control strength (the demo's 'Control Strength', default 1)."),
                io.Boolean.Input("guess_mode", default=False,
                                 tooltip="ControlNet 1.0's 'Guess Mode': decaying output scales, no control on the "
                                         "negative side (the demo then suggests an empty prompt)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the control starts."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the control ends."),
                io.Vae.Input("vae", optional=True, tooltip="Only for ControlNets that take a latent hint."),
                io.Float.Input("decay", default=GUESS_MODE_DECAY, min=0.0, max=1.0, step=0.001,
                               tooltip=_DECAY_TOOLTIP),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, control_net, image, strength=1.0, guess_mode=False, start_percent=0.0,
                end_percent=1.0, vae=None, decay=GUESS_MODE_DECAY) -> io.NodeOutput:
        import nodes
        apply = nodes.ControlNetApplyAdvanced().apply_controlnet
        if not guess_mode:
            return io.NodeOutput(*apply(positive, negative, control_net, image, strength, start_percent,
                                        end_percent, vae=vae))
        guessed = guess_mode_copy(control_net, decay)
        controlled, _ = apply(positive, [], guessed, image, strength, start_percent, end_percent, vae=vae)
        return io.NodeOutput(controlled, negative)


class PixArtSDXSControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtSDXSControlNetLoader",
            display_name="PixArt SDXS ControlNet Loader",
            category="PixArt/controlnet",
            description="Loads a diffusers ControlNetModel built for a UNet with reduced blocks, such as the SDXS-512-"
                        "DreamShaper sketch ControlNet (IDKiro/sdxs-512-dreamshaper-sketch), with the mid block the "
                        "file has. Core 'Load ControlNet Model' takes the SDXS UNet's missing middle block for the "
                        "ControlNet too and drops the file's mid-block transformer and second resnet (only logged), "
                        "so the middle residual is wrong. Every tensor of the file is placed here, or the load fails "
                        "naming them. Use the CONTROL_NET with core Apply ControlNet nodes.",
            inputs=[
                io.Combo.Input("control_net_name", options=folder_paths.get_filename_list(CONTROLNET_FOLDER),
                               tooltip="The ControlNet file in models/controlnet, e.g. the sketch model's "
                                       "diffusion_pytorch_model.bin saved as sdxs-512-dreamshaper-sketch.bin "
                                       "(a torch pickle, read with weights_only) or a .safetensors copy."),
            ],
            outputs=[io.ControlNet.Output(display_name="control_net")],
        )

    @classmethod
    def execute(cls, control_net_name) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(CONTROLNET_FOLDER, control_net_name)
        return io.NodeOutput(cached_sdxs_controlnet(path))


class PixArtSD15LoRALoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtSD15LoRALoader",
            display_name="PixArt SD1.5 LoRA Loader (YOSO)",
            category="PixArt/loaders",
            description="Applies an SD1.5 UNet LoRA to the MODEL through ComfyUI's LoRA code, in kohya form (the YOSO "
                        "SD1.5 LoRA) and the PEFT (lora_A/lora_B, unet. / base_model.model. prefixes) and diffusers "
                        "(lora.down/up) forms core's key map lacks. Files are read pickle-safely; the published "
                        "yoso_lora.safetensors is a pickle under a safetensors name and is refused with the fix "
                        "(rename it to .pt). Tensors that match no UNet weight are listed on the node.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5-family MODEL (e.g. Stable Diffusion 1.5 or Realistic "
                                                "Vision for YOSO)."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A LoRA in models/loras, e.g. yoso_sd15_lora.pt."),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="LoRA strength on the UNet (1 = as trained)."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength_model=1.0) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        if strength_model == 0:
            return io.NodeOutput(model)
        patched, report = apply_sd15_lora(model, path, strength_model)
        return io.NodeOutput(patched, ui={"text": [report or "every LoRA tensor landed on a UNet weight"]})


NODES = [PixArtControlNetGuessMode, PixArtControlNetApplyGuessMode, PixArtSDXSControlNetLoader, PixArtSD15LoRALoader]
