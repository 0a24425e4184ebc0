"""PixArt LoRA module names -> the parameters of the original PixArt network (what our MODEL holds), for the
forms ComfyUI's own map lacks. ComfyUI (comfy/lora.py model_lora_keys_unet) already maps the PEFT/diffusers
names (`transformer.` / `base_model.model.` / `unet.base_model.model.` + diffusers module) and
`lora_unet_` + the original module name with dots as underscores. Added here:

- `lora_transformer_` + diffusers module name, dots as underscores (OneTrainer's default "legacy" save:
  Nerogar/OneTrainer modules/util/convert/lora/convert_pixart_lora.py, LoraConversionKeySet("transformer",
  "lora_transformer"); convert_lora_util.py convert_to_legacy_diffusers);
- `lora_unet_` + diffusers module name, dots as underscores (kohya-style trainers on the diffusers model);
- `lycoris_` + diffusers module name, dots as underscores (LyCORIS wrapping the diffusers transformer, as
  SimpleTuner saves it);
- `transformer.` + original module name (OneTrainer's "omi" save, convert_to_omi), where the fused
  `attn.qkv` rows are `attn.qkv.0/1/2` (q, k, v) and the fused `cross_attn.kv_linear` rows are
  `cross_attn.kv_linear.0/1` (k, v).

The adapter kind (LoRA, LoCon, LoHa, LoKr, DoRA) is in the tensor names after the module name and is ComfyUI's
business. No ComfyUI."""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence, Union

from .pixart_keys import BLOCK_MODULES, FUSED_BLOCK_MODULES, TOP_MODULES, count_blocks

# A whole parameter, or (parameter, (dim, offset, rows)): rows of a fused parameter, as ComfyUI's patches take it.
Target = Union[str, tuple[str, tuple[int, int, int]]]

UNDERSCORED_DIFFUSERS_PREFIXES = ("lora_transformer_", "lora_unet_", "lycoris_")
OMI_PREFIX = "transformer."


def module_targets(weight_shapes: Mapping[str, Sequence[int]]) -> Iterator[tuple[str, str, Target]]:
    """(original module name, diffusers module name, target) for every linear/conv module of the network whose
    `.weight` is in `weight_shapes` (original parameter names -> shapes); the rows of a fused module are named
    as OneTrainer names them (`attn.qkv.0` is diffusers' `attn1.to_q`)."""
    for i in range(count_blocks(weight_shapes, "blocks.")):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        for original, parts in FUSED_BLOCK_MODULES:
            weight = f"{src}{original}.weight"
            if weight not in weight_shapes:
                continue
            rows = weight_shapes[weight][0] // len(parts)
            for j, part in enumerate(parts):
                yield f"{src}{original}.{j}", f"{dst}{part}", (weight, (0, j * rows, rows))
        for original, diffusers in BLOCK_MODULES:
            if f"{src}{original}.weight" in weight_shapes:
                yield f"{src}{original}", f"{dst}{diffusers}", f"{src}{original}.weight"
    for original, diffusers in TOP_MODULES:
        if f"{original}.weight" in weight_shapes:
            yield original, diffusers, f"{original}.weight"


def lora_key_map(weight_shapes: Mapping[str, Sequence[int]], prefix: str = "") -> dict[str, Target]:
    """LoRA module name -> target, for the forms listed above; targets carry `prefix` (ComfyUI: the
    `diffusion_model.` of the model's state dict)."""
    def prefixed(target: Target) -> Target:
        return prefix + target if isinstance(target, str) else (prefix + target[0], target[1])

    out: dict[str, Target] = {}
    for original, diffusers, target in module_targets(weight_shapes):
        out[OMI_PREFIX + original] = prefixed(target)
        for lora_prefix in UNDERSCORED_DIFFUSERS_PREFIXES:
            out[lora_prefix + diffusers.replace(".", "_")] = prefixed(target)
    return out


def unmatched_lora_keys(lora_keys: Iterable[str], key_map: Mapping[str, object]) -> list[str]:
    """The LoRA tensors no module name of `key_map` claims. ComfyUI reads `<module name>.<tensor name>` (lora_up,
    hada_w1_a, alpha, ...), so a tensor is claimed when a part of its name before a dot is a module name."""
    def claimed(key: str) -> bool:
        dot = key.find(".")
        while dot != -1:
            if key[:dot] in key_map:
                return True
            dot = key.find(".", dot + 1)
        return False
    return [k for k in lora_keys if not claimed(k)]
