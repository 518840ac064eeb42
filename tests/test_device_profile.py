"""The device-time summary: HLO instructions classified by kind, trace events summed per step."""

import jax
import jax.numpy as jnp

from vgg_jax import device_profile

HLO = """HloModule jit_step, entry_computation_layout={...}

ENTRY %main {
  %custom-call.1 = (f32[8,8]{1,0}, u8[0]{0}) custom-call(f32[8,8]{1,0} %p0, f32[3,3]{1,0} %p1), custom_call_target="__cudnn$convBiasActivationForward"
  %custom-call.2 = (f32[8,8]{1,0}, u8[0]{0}) custom-call(f32[8,8]{1,0} %a, f32[3,3]{1,0} %b), custom_call_target="__cudnn$convBackwardInput"
  %custom-call.3 = (f32[3,3]{1,0}, u8[0]{0}) custom-call(f32[8,8]{1,0} %a, f32[8,8]{1,0} %b), custom_call_target="__cudnn$convBackwardFilter"
  %select-and-scatter.4 = f32[8,8]{1,0} select-and-scatter(f32[8,8]{1,0} %x, f32[4,4]{1,0} %g, f32[] %z)
  %fusion.5 = f32[8,8]{1,0} fusion(f32[8,8]{1,0} %x), kind=kLoop, calls=%fused_computation
  %custom-call.6 = f32[8,8]{1,0} custom-call(f32[8,8]{1,0} %x, f32[8,8]{1,0} %y), custom_call_target="__cublas$gemm"
  ROOT %transpose.7 = f32[8,8]{0,1} transpose(f32[8,8]{1,0} %x), dimensions={1,0}
}
"""


def test_instructions_are_classified_by_what_they_compute():
    kinds = device_profile.classify(HLO)
    assert kinds["custom-call.1"] == "conv forward" and kinds["custom-call.2"] == "conv input-gradient"
    assert kinds["custom-call.3"] == "conv weight-gradient" and kinds["select-and-scatter.4"] == "pooling"
    assert kinds["fusion.5"] == "elementwise fusion" and kinds["custom-call.6"] == "matmul"
    assert kinds["transpose.7"] == "copy/transpose" and device_profile.module_name(HLO) == "jit_step"


def test_events_are_summed_per_step_for_the_step_module_only():
    events = [
        {"ph": "X", "name": "custom-call.1", "dur": 3000, "args": {"hlo_op": "custom-call.1", "hlo_module": "jit_step"}},
        {"ph": "X", "name": "custom-call.1", "dur": 3000, "args": {"hlo_op": "custom-call.1", "hlo_module": "jit_step"}},
        {"ph": "X", "name": "fusion.5", "dur": 2000, "args": {"hlo_op": "fusion.5", "hlo_module": "jit_step"}},
        {"ph": "X", "name": "fusion.5", "dur": 9000, "args": {"hlo_op": "fusion.5", "hlo_module": "jit_other"}},
        {"ph": "X", "name": "Python call", "dur": 9000},
    ]
    rows = device_profile.summarise(events, device_profile.classify(HLO), steps=2, module="jit_step")
    assert rows == [("conv forward", 3.0, 0.75), ("elementwise fusion", 1.0, 0.25)]
    assert "| conv forward | 3.000 | 75.0% |" in device_profile.render(rows)


def test_a_real_trace_of_a_jitted_step(tmp_path):
    step = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    x = jnp.ones((64, 64))
    rows = device_profile.profile(lambda: step(x), step.lower(x).compile().as_text(), str(tmp_path), steps=2)
    assert rows and all(ms >= 0 for _, ms, _ in rows) and abs(sum(share for *_, share in rows) - 1) < 1e-6
