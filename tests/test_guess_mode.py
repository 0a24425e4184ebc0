"""ControlNet 1.0 guess mode against a restatement of lllyasviel/ControlNet gradio_canny2image.py:
control_scales = [strength * 0.825 ** (12 - i) for i in range(13)] (encoder outputs 0..11, middle 12), applied by
core's control_merge on a core ControlNet; the negative side gets no control."""
from __future__ import annotations

import pytest
import torch

from pixart_delta.samplers.guess_mode import guess_mode_factors


def reference_scales(strength: float, guess_mode: bool) -> list[float]:
    return [strength * (0.825 ** float(12 - i)) for i in range(13)] if guess_mode else [strength] * 13


def test_factors_are_controlnet_1_0_scales_for_sd15():
    encoder, middle = guess_mode_factors(12, 1)
    assert encoder + middle == pytest.approx(reference_scales(1.0, True), rel=1e-12)
    assert encoder[0] == pytest.approx(0.825 ** 12) and middle == [1.0]


def test_other_output_counts_count_from_the_deepest():
    encoder, middle = guess_mode_factors(6, 1)          # SDXS ControlNet: 6 encoder outputs + middle
    assert encoder == pytest.approx([0.825 ** 6, 0.825 ** 5, 0.825 ** 4, 0.825 ** 3, 0.825 ** 2, 0.825])
    assert middle == [1.0]


def bare_controlnet():
    """A core ControlNet without a network (the merge is what is tested)."""
    import comfy.controlnet
    cn = comfy.controlnet.ControlNet(None)
    cn.control_model_wrapped = None
    return cn


def synthetic_control(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"output": [torch.randn(1, 4, 8, 8, generator=g) for _ in range(12)],
            "middle": [torch.randn(1, 4, 2, 2, generator=g)]}


@pytest.mark.comfyui
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_merge_scales_outputs(comfy, strength):
    import comfy.controlnet
    from pixart_delta.nodes.sd15_control import guess_mode_copy
    base = bare_controlnet()
    guessed = guess_mode_copy(base, 0.825).copy()                  # the Apply nodes copy: the mode must stay
    guessed.set_cond_hint(torch.zeros(1, 3, 8, 8), strength)
    raw = synthetic_control()
    unscaled = [t.clone() for t in raw["output"] + raw["middle"]]
    out = guessed.control_merge(raw, None, None)
    got = out["output"] + out["middle"]
    for i, (g, u, s) in enumerate(zip(got, unscaled, reference_scales(strength, True))):
        assert torch.allclose(g, u * s, rtol=1e-6, atol=0), f"output {i}"
    plain = base.copy()
    plain.set_cond_hint(torch.zeros(1, 3, 8, 8), strength)
    out = plain.control_merge(synthetic_control(), None, None)   # the original is not in guess mode
    for g, u, s in zip(out["output"] + out["middle"], unscaled, reference_scales(strength, False)):
        assert torch.allclose(g, u * s)


@pytest.mark.comfyui
def test_chained_controlnet_is_added_unscaled(comfy):
    import comfy.controlnet
    from pixart_delta.nodes.sd15_control import guess_mode_copy
    guessed = guess_mode_copy(bare_controlnet(), 0.825)
    guessed.set_cond_hint(torch.zeros(1, 3, 8, 8), 1.0)
    prev = {"input": [], **synthetic_control(1)}      # a merged output, as previous ControlNets return
    want = [p + c * s for p, c, s in zip(prev["output"] + prev["middle"],
                                         synthetic_control(0)["output"] + synthetic_control(0)["middle"],
                                         reference_scales(1.0, True))]
    out = guessed.control_merge(synthetic_control(0), prev, None)
    for g, w in zip(out["output"] + out["middle"], want):
        assert torch.allclose(g, w, atol=1e-6)


@pytest.mark.comfyui
@pytest.mark.parametrize("guess_mode", [False, True])
def test_apply_node_controls_negative_only_without_guess_mode(comfy, guess_mode):
    import comfy.controlnet
    from pixart_delta.nodes.sd15_control import PixArtControlNetApplyGuessMode
    from pixart_delta.samplers.guess_mode import GuessModeControl
    positive = [[torch.zeros(1, 77, 768), {"pooled_output": None}]]
    negative = [[torch.ones(1, 77, 768), {"pooled_output": None}]]
    cn = bare_controlnet()
    out = PixArtControlNetApplyGuessMode.execute(positive, negative, cn, torch.zeros(1, 64, 64, 3), 0.8,
                                                 guess_mode=guess_mode)
    pos, neg = out.args
    control = pos[0][1]["control"]
    assert control.strength == 0.8 and isinstance(control, GuessModeControl) == guess_mode
    if guess_mode:
        assert neg is negative and "control" not in neg[0][1]    # the unconditional pass has no control
    else:
        assert isinstance(neg[0][1]["control"], comfy.controlnet.ControlNet)
        assert not isinstance(neg[0][1]["control"], GuessModeControl)
    assert "control" not in positive[0][1]                        # inputs are not modified
