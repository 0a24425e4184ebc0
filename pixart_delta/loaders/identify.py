"""What is this state dict? One answer for every loader's "this is not a ... file" error: the model family its
key names (and, where they tell, shapes) belong to, said in words, and the node that loads it.

Works on key names alone, so a state dict, a safetensors header or T5's key -> (shape, dtype) table all do.
No ComfyUI; the node names below are the display names of this pack's nodes and of ComfyUI's core loaders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

# Our loader nodes (display names, as in pixart_delta/nodes) and the models folder each reads.
PIXART_LOADER = ("PixArt Checkpoint Loader", "diffusion_models")
CONTROLNET_LOADER = ("PixArt ControlNet Loader", "controlnet")
T5_LOADER = ("PixArt T5 Loader", "text_encoders")
HED_NODE = ("PixArt HED Edge Detector", "hed")
LINEART_NODE = ("PixArt Lineart", "lineart")
TINY_VAE_LOADER = ("PixArt Tiny VAE Loader (SDXS / TAESD)", "vae_approx")

# Wrappers that other tools put in front of the key names.
_CONTAINERS = ("module.", "model.diffusion_model.", "diffusion_model.", "unet.", "model.")


@dataclass(frozen=True)
class Identity:
    family: str               # e.g. "sd_unet", "t5", "unknown"
    description: str          # "a Stable Diffusion UNet (SD 1.x)"
    node: str | None          # the pack's node that takes it, if any
    advice: str               # "load it with PixArt T5 Loader, from models/text_encoders", or "" when none is known
    count: int                # number of keys
    examples: tuple[str, ...]  # a few of its keys

    @property
    def known(self) -> bool:
        return self.family not in ("unknown", "empty")

    def found(self) -> str:
        """'12 tensors, e.g. a, b, c, d'"""
        if not self.count:
            return "no tensors"
        return f"{self.count} tensor{'s' if self.count != 1 else ''}, e.g. " + ", ".join(self.examples)

    def not_(self, expected: str, own_node: str | None = None) -> str:
        """'this is <description>, not <expected> (<advice>)', for a loader expecting `expected`. When the file
        looks like what `own_node` reads after all, it says the file lacks what that loader needs instead."""
        if self.family == "empty":
            return f"this is not {expected} (no tensors in it)"
        if not self.known:
            return f"this is not {expected} (nor any other model this pack recognises)"
        if own_node is not None and self.node == own_node:
            return self.looks_like(own_node)
        return f"this is {self.description}, not {expected}" + (f" ({self.advice})" if self.advice else "")

    def looks_like(self, own_node: str | None = None) -> str:
        """'this looks like <description>; <advice>', or "" when the keys say nothing."""
        if not self.known:
            return ""
        if own_node is not None and self.node == own_node:
            return f"this looks like {self.description}, but tensors {own_node} needs are missing"
        return f"this looks like {self.description}" + (f"; {self.advice}" if self.advice else "")


def _ours(node: tuple[str, str], verb: str = "load it with") -> tuple[str, str]:
    return node[0], f"{verb} {node[0]}, from models/{node[1]}"


def _core(node: str, folder: str) -> tuple[None, str]:
    return None, f"load it with ComfyUI's core '{node}' node, from models/{folder}"


class _Keys:
    """Key lookups: `has` matches a fragment at the start of any key or after a dot (so prefixes like
    `first_stage_model.` do not hide it), `root` only at the start (after the usual container prefixes)."""

    def __init__(self, keys: list[str]):
        self.roots = []
        for k in keys:
            for p in _CONTAINERS:
                if k.startswith(p):
                    k = k[len(p):]
                    break
            self.roots.append(k)
        self._text = "\n" + "\n".join("." + k for k in keys) + "\n"
        self._root_set = set(self.roots)

    def has(self, *fragments: str) -> bool:
        return any("." + f in self._text for f in fragments)

    def root(self, *prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in self.roots)

    def exact(self, *names: str) -> bool:
        return all(n in self._root_set for n in names)

    def contains(self, *parts: str) -> bool:
        return any(p in self._text for p in parts)


def _shape_of(value) -> tuple | None:
    """The shape of a tensor, of T5's (shape, dtype) entries, or of a safetensors header entry."""
    if hasattr(value, "shape"):
        return tuple(value.shape)
    if isinstance(value, dict) and "shape" in value:
        return tuple(value["shape"])
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return value[0]
    return None


def _sd_generation(sd: Mapping | None, k: _Keys) -> str:
    """SD 1.x / 2.x / XL from SDXL's extra embeddings, else from the cross-attention width (768 / 1024 / 2048)."""
    if k.root("label_emb.", "add_embedding.") or k.has("conditioner.embedders.1."):
        return "SDXL"
    if sd is not None:
        for key, value in sd.items():
            if key.endswith("attn2.to_k.weight"):
                shape = _shape_of(value)
                if shape and len(shape) == 2:
                    return {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}.get(shape[1], "SD 1.x / 2.x")
    return "SD 1.x / 2.x"


def _family(k: _Keys, sd: Mapping | None) -> tuple[str, str, str | None, str]:
    """(family, description, node, advice); the order matters: files that bundle several parts (a checkpoint
    with its VAE, a ControlNet with its base) are named by their main part first."""
    if k.contains("lora_up", "lora_down", "lora_A.", "lora_B.", "lora_unet_", "lora_te", ".lora.up.", "lokr_w",
                  "hada_w"):
        return ("lora", "a LoRA (weight changes for another model, not a model of its own)",
                None, "apply it to the loaded MODEL with ComfyUI's core 'LoraLoaderModelOnly' or 'Load LoRA' node")

    # PixArt and its ControlNets
    if k.has("base_model.blocks.0.attn.qkv.weight") and k.has("controlnet.0.copied_block."):
        return ("pixart_controlnet_full", "a PixArt-δ ControlNet file (base model and ControlNet branch)",
                *_ours(CONTROLNET_LOADER))
    if k.has("controlnet.0.copied_block."):
        return ("pixart_controlnet_branch", "a PixArt-δ ControlNet branch without base weights",
                *_ours(CONTROLNET_LOADER))
    if k.has("controlnet_blocks.0.transformer_block."):
        return ("pixart_controlnet_adapter",
                "a PixArt-δ ControlNet adapter (diffusers PixArtControlNetAdapterModel, no base weights)",
                *_ours(CONTROLNET_LOADER))
    if k.root("blocks.0.attn.qkv.weight") and k.root("blocks.0.cross_attn.", "y_embedder.y_proj.", "x_embedder.proj."):
        return "pixart", "a PixArt transformer (original layout)", *_ours(PIXART_LOADER)
    if k.root("transformer_blocks.0.attn1.to_q.weight") and k.root("adaln_single.", "caption_projection."):
        return "pixart_diffusers", "a PixArt transformer (diffusers layout)", *_ours(PIXART_LOADER)

    # other diffusion models and their ControlNets
    if k.has("controlnet_x_embedder.", "pos_embed_input.") or k.root("controlnet_blocks.") or \
            (k.has("double_blocks.") and k.has("input_hint_block.")):
        return ("transformer_controlnet", "a ControlNet for another transformer (SD3 / Flux / HunyuanDiT)",
                None, "PixArt cannot use it")
    if k.has("input_hint_block.", "control_model.", "controlnet_cond_embedding.", "zero_convs."):
        return ("sd_controlnet", "a Stable Diffusion (UNet) ControlNet",
                *_core("Load ControlNet Model", "controlnet"))
    if k.has("double_blocks.", "single_blocks.") or k.root("single_transformer_blocks."):
        return "flux", "a Flux transformer", *_core("Load Diffusion Model", "diffusion_models")
    if k.has("joint_blocks.") or (k.root("context_embedder.") and k.root("transformer_blocks.0.attn.add_q_proj.")):
        return "sd3", "an SD3 transformer (MMDiT)", *_core("Load Diffusion Model", "diffusion_models")
    if k.root("input_blocks.", "middle_block.") or (k.root("down_blocks.") and k.root("time_embedding.")):
        generation = _sd_generation(sd, k)
        layout = "" if k.root("input_blocks.", "middle_block.") else ", diffusers layout"
        if k.has("first_stage_model.", "cond_stage_model.", "conditioner."):
            return ("sd_checkpoint", f"a Stable Diffusion UNet ({generation}{layout}) in a checkpoint with its VAE "
                    f"and text encoder", *_core("Load Checkpoint", "checkpoints"))
        return ("sd_unet", f"a Stable Diffusion UNet ({generation}{layout})",
                *_core("Load Diffusion Model", "diffusion_models"))

    # text encoders
    if k.has("encoder.block.0.layer.0.SelfAttention.", "shared.weight") and k.has("encoder.block."):
        return "t5", "a T5 text encoder", *_ours(T5_LOADER)
    if k.has("text_model.encoder.layers.", "cond_stage_model.", "conditioner.embedders.") or \
            k.root("transformer.resblocks.", "text_projection"):
        return "clip", "a CLIP text encoder (Stable Diffusion)", *_core("Load CLIP", "text_encoders")

    # VAEs, the HED detector
    if k.root("taesd_decoder.", "taesd_encoder."):
        return "tiny_vae", "a tiny VAE (ComfyUI TAESD layout)", *_ours(TINY_VAE_LOADER)
    if k.root("decoder.layers.", "encoder.layers."):
        return "tiny_vae", "a tiny VAE (diffusers AutoencoderTiny)", *_ours(TINY_VAE_LOADER)
    if k.exact("1.weight", "3.conv.0.weight"):
        return "tiny_vae", "a tiny VAE (TAESD decoder)", *_ours(TINY_VAE_LOADER)
    if k.exact("0.weight", "1.conv.0.weight"):
        return "tiny_vae", "a tiny VAE (TAESD encoder)", *_ours(TINY_VAE_LOADER)
    if k.has("decoder.up_blocks.", "decoder.up.", "decoder.mid_block.", "decoder.mid.", "decoder.conv_in.",
             "encoder.down_blocks.", "encoder.down.", "first_stage_model.", "post_quant_conv."):
        return "sd_vae", "a full VAE (AutoencoderKL, as Stable Diffusion uses)", *_core("Load VAE", "vae")
    if k.exact("norm") and k.root("block1.convs."):
        return "hed", "the HED edge model (ControlNetHED.pth)", *_ours(HED_NODE, "use it with")
    if k.exact("model0.1.weight") and k.root("model4.1.", "model2.0.conv_block."):
        return ("lineart", "a lineart line-drawing model (sk_model.pth / sk_model2.pth)",
                *_ours(LINEART_NODE, "use it with"))
    return "unknown", "", None, ""


def identify(sd: Mapping | Iterable[str]) -> Identity:
    """What `sd` (a state dict, a safetensors header, or just its key names) holds."""
    mapping = sd if isinstance(sd, Mapping) else None
    keys = [str(k) for k in sd if k != "__metadata__"]
    if not keys:
        return Identity("empty", "", None, "", 0, ())
    family, description, node, advice = _family(_Keys(keys), mapping)
    return Identity(family, description, node, advice, len(keys), tuple(keys[:4]))
