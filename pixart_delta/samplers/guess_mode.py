"""ControlNet 1.0's guess mode on ComfyUI's CONTROL_NET objects.

lllyasviel/ControlNet gradio_canny2image.py sets `model.control_scales` to strength * 0.825 ** (12 - i) for the
13 control outputs i = 0..12 (the 12 encoder-block zero convolutions, shallowest first, then the middle block's)
and gives the unconditional pass no control (`c_concat` None, so cldm.py calls the UNet with control=None).
For a ControlNet with another number of outputs the same rule holds counted from the deepest: the middle output
gets strength, each shallower one 0.825 times the next deeper one.

ComfyUI's ControlBase.control_merge (comfy/controlnet.py) multiplies every output by one strength (or by
strength ** (n - i) for StrengthType.LINEAR_UP, which gives the middle strength ** 1 and has no separate base), so
the guess-mode copy scales the outputs by 0.825 ** depth before handing them to core's merge, which applies the
strength, the dtype and the chaining to previous ControlNets as usual.
"""
from __future__ import annotations

GUESS_MODE_DECAY = 0.825   # lllyasviel: "Magic number. ... Perhaps because 0.825**12<0.01 but 0.826**12>0.01"


def guess_mode_factors(n_encoder: int, n_middle: int = 1, decay: float = GUESS_MODE_DECAY) -> tuple[list[float], list[float]]:
    """Per-output factors (without the strength) for `n_encoder` encoder outputs (shallowest first) and
    `n_middle` middle outputs: decay ** (distance from the last output)."""
    total = n_encoder + n_middle
    encoder = [decay ** float(total - 1 - i) for i in range(n_encoder)]
    middle = [decay ** float(n_middle - 1 - j) for j in range(n_middle)]
    return encoder, middle


def scale_control(control: dict, decay: float = GUESS_MODE_DECAY) -> dict:
    """A ControlNet's raw outputs ({"output": [encoder outputs], "middle": [middle output]}, as comfy's cldm
    returns them; other keys, e.g. T2I adapters' "input", scaled as their own list) times the guess-mode factors.
    New tensors: core's merge multiplies in place and the outputs may be shared."""
    encoder, middle = guess_mode_factors(len(control.get("output", ())), len(control.get("middle", ())), decay)
    factors = {"output": encoder, "middle": middle}
    out = {}
    for key, values in control.items():
        f = factors.get(key)
        if f is None:
            f = guess_mode_factors(len(values) - 1, 1, decay)[0] + [1.0]
        out[key] = [None if x is None else x * f[i] for i, x in enumerate(values)]
    return out


class GuessModeControl:
    """Mixed in front of a comfy ControlBase subclass (see with_guess_mode): its outputs get the guess-mode
    factors before core's control_merge; copies (the Apply ControlNet nodes copy) keep the mode."""
    guess_mode_decay = GUESS_MODE_DECAY

    def control_merge(self, control, control_prev, output_dtype):
        return super().control_merge(scale_control(control, self.guess_mode_decay), control_prev, output_dtype)

    def copy(self):
        return with_guess_mode(super().copy(), self.guess_mode_decay)


_CLASSES: dict[type, type] = {}


def with_guess_mode(control_net, decay: float = GUESS_MODE_DECAY):
    """`control_net` (a comfy ControlBase, modified in place: pass a copy) in guess mode."""
    cls = type(control_net)
    if not issubclass(cls, GuessModeControl):
        if cls not in _CLASSES:
            _CLASSES[cls] = type(f"GuessMode{cls.__name__}", (GuessModeControl, cls), {})
        control_net.__class__ = _CLASSES[cls]
    control_net.guess_mode_decay = float(decay)
    return control_net
