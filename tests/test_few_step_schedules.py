"""Few-step timesteps against diffusers' LCMScheduler, PixArt-δ's published schedule and hand values
(docs/facts/pixart.md §6). No ComfyUI."""
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, LCMScheduler

from pixart_delta.samplers import schedules as S


def _lcm_scheduler():
    return LCMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        original_inference_steps=50, timestep_scaling=10.0)


@pytest.mark.parametrize("steps", list(range(1, 51)))
def test_diffusers_spacing_matches_lcmscheduler(steps):
    sched = _lcm_scheduler()
    sched.set_timesteps(steps)
    assert S.lcm_timesteps(steps, "diffusers") == [int(t) for t in sched.timesteps]


def test_hand_values():
    assert S.lcm_timesteps(4, "diffusers") == [999, 759, 499, 259]
    assert S.lcm_timesteps(4, "pixart") == [999, 759, 519, 279]
    # PixArt-δ's scheduler: every (50 // steps)-th of 19, 39, ..., 999, counted from 999
    assert S.lcm_timesteps(1, "pixart") == [999]
    assert S.lcm_timesteps(2, "pixart") == [999, 499]
    assert S.lcm_timesteps(8, "pixart") == [999, 879, 759, 639, 519, 399, 279, 159]
    assert list(S.lcm_origin_timesteps()) == list(range(19, 1000, 20))
    assert S.few_step_timesteps("dmd") == [400]
    assert S.few_step_timesteps("dmd", timestep=250) == [250]
    assert S.few_step_timesteps("yoso") == [999]
    assert S.few_step_timesteps("custom", custom="999, 500 ,100") == [999, 500, 100]


def test_alpha_bar_and_sigma_match_published_values():
    ab = S.alphas_cumprod()
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear").alphas_cumprod
    np.testing.assert_allclose(ab.numpy(), ref.double().numpy(), rtol=1e-5)
    table = {0: 0.99990, 259: 0.49761, 279: 0.44593, 400: 0.19357, 499: 0.078587, 519: 0.063954,
             759: 0.0028768, 999: 4.0358e-5}
    for t, v in table.items():
        assert float(ab[t]) == pytest.approx(v, rel=1e-4)
    assert S.sigma_of(400) == pytest.approx(2.0411, rel=1e-4)
    assert S.sigma_of(999) == pytest.approx(157.407, rel=1e-5)


@pytest.mark.parametrize("bad", [0, 9, -1])
def test_lcm_steps_out_of_range(bad):
    with pytest.raises(ValueError, match="LCM steps must be from 1 to 8"):
        S.few_step_timesteps("lcm", steps=bad)


@pytest.mark.parametrize("text, msg", [
    ("", "empty"), ("999, abc", "not a number"), ("999, 1000", "outside"), ("500, 700", "decreasing"),
    ("999, 499.5", "not an integer"), ("-1", "outside"),
])
def test_custom_timesteps_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        S.few_step_timesteps("custom", custom=text)


def test_other_errors():
    with pytest.raises(ValueError, match="DMD timestep"):
        S.few_step_timesteps("dmd", timestep=1000)
    with pytest.raises(ValueError, match="unknown few-step mode"):
        S.few_step_timesteps("euler")
    with pytest.raises(ValueError, match="spacing"):
        S.lcm_timesteps(4, "karras")
    with pytest.raises(ValueError, match="1 to 50"):
        S.lcm_timesteps(51)
