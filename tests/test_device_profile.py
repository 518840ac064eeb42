"""The device-time summary: HLO instructions classified by kind, trace events summed per step."""

import jax
import jax.numpy as jnp
import pytest

from vgg_jax.benchmark import device_profile

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
        {
            "ph": "X",
            "name": "custom-call.1",
            "dur": 3000,
            "args": {"hlo_op": "custom-call.1", "hlo_module": "jit_step"},
        },
        {
            "ph": "X",
            "name": "custom-call.1",
            "dur": 3000,
            "args": {"hlo_op": "custom-call.1", "hlo_module": "jit_step"},
        },
        {
            "ph": "X",
            "name": "fusion.5",
            "dur": 2000,
            "args": {"hlo_op": "fusion.5", "hlo_module": "jit_step"},
        },
        {
            "ph": "X",
            "name": "fusion.5",
            "dur": 9000,
            "args": {"hlo_op": "fusion.5", "hlo_module": "jit_other"},
        },
        {"ph": "X", "name": "Python call", "dur": 9000},
    ]
    rows = device_profile.summarise(events, device_profile.classify(HLO), steps=2, module="jit_step")
    assert rows == [("conv forward", 3.0, 0.75), ("elementwise fusion", 1.0, 0.25)]
    assert "| conv forward | 3.000 | 75.0% |" in device_profile.render(rows)


def test_a_real_trace_of_a_jitted_step(tmp_path):
    step = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    x = jnp.ones((64, 64))
    rows, _ = device_profile.profile(
        lambda: step(x), step.lower(x).compile().as_text(), str(tmp_path), steps=2
    )
    assert rows and all(ms >= 0 for _, ms, _ in rows) and abs(sum(share for *_, share in rows) - 1) < 1e-6


def test_a_fusion_takes_the_kind_of_what_it_computes():
    hlo = """HloModule jit_step

%fused_conv (p0: f32[1,8,8,3], p1: f32[3,3,3,4]) -> f32[1,8,8,4] {
  %p0 = f32[1,8,8,3]{3,2,1,0} parameter(0)
  %p1 = f32[3,3,3,4]{3,2,1,0} parameter(1)
  ROOT %convolution.1 = f32[1,8,8,4]{3,2,1,0} convolution(f32[1,8,8,3]{3,2,1,0} %p0, f32[3,3,3,4]{3,2,1,0} %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}

%fused_add (p0: f32[4]) -> f32[4] {
  %p0 = f32[4]{0} parameter(0)
  ROOT %add.1 = f32[4]{0} add(f32[4]{0} %p0, f32[4]{0} %p0)
}

ENTRY %main (a: f32[1,8,8,3], b: f32[3,3,3,4]) -> f32[1,8,8,4] {
  %a = f32[1,8,8,3]{3,2,1,0} parameter(0)
  %b = f32[3,3,3,4]{3,2,1,0} parameter(1)
  %fusion.2 = f32[4]{0} fusion(f32[4]{0} %x), kind=kLoop, calls=%fused_add
  ROOT %fusion.1 = f32[1,8,8,4]{3,2,1,0} fusion(f32[1,8,8,3]{3,2,1,0} %a, f32[3,3,3,4]{3,2,1,0} %b), kind=kCustom, calls=%fused_conv
}
"""
    kinds = device_profile.classify(hlo)
    assert kinds["fusion.1"] == "conv forward" and kinds["fusion.2"] == "elementwise fusion"


def test_torch_kernel_and_operator_names_map_to_the_same_kinds():
    kind = device_profile.torch_kind
    assert kind("sm90_xmma_fprop_implicit_gemm_bf16") == "conv forward"
    assert (
        kind("sm90_xmma_dgrad_implicit_gemm") == "conv input-gradient"
        and kind("xmma_wgrad_nhwc") == "conv weight-gradient"
    )
    assert kind("triton_poi_fused_relu_threshold_backward_3") == "elementwise fusion"
    assert kind("aten::max_pool2d_with_indices_backward") == "pooling" and kind("aten::addmm") == "matmul"


def test_a_vgg_steps_time_is_split_by_layer_and_direction(tmp_path, tiny_a):
    model, params = tiny_a
    x = jnp.ones((1, 32, 32, 3))

    @jax.jit
    def step(params, x):
        return jax.grad(lambda p: (model.apply(p, x) ** 2).sum())(params)

    hlo = step.lower(params, x).compile().as_text()
    found = set(device_profile.layers(hlo).values())
    assert {("conv1_1", "forward"), ("conv1_1", "backward"), ("fc8", "forward"), ("fc8", "backward")} <= found
    kinds, by_layer = device_profile.profile(lambda: step(params, x), hlo, str(tmp_path), steps=2)
    assert kinds and {layer for (layer, _), _, _ in by_layer} & {"conv1_1", "conv5_2", "fc6"}
    table = device_profile.render_layers(by_layer)
    assert table.index("| conv1_1 |") < table.index("| conv5_2 |") < table.index("| fc6 |")


def test_the_by_layer_table_sets_a_peer_beside_ours():
    ours = [(("conv1_1", "forward"), 2.0, 0.5), (("conv1_1", "backward"), 2.0, 0.5)]
    peer = [(("conv1_1", "forward"), 3.0, 0.5), (("conv1_1", "backward"), 5.0, 0.5)]
    table = device_profile.render_layers(ours, peer, "torchvision")
    assert "| torchvision forward ms |" in table and "| conv1_1 | 2.0 | 2.0 | 3.0 | 5.0 | 2.00x |" in table
    assert device_profile.records(ours)[0] == {
        "layer": "conv1_1",
        "direction": "forward",
        "ms_per_step": 2.0,
        "share": 0.5,
    }


def test_torchvisions_layers_are_timed_by_ranges_named_as_ours():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.vgg11(weights=None, num_classes=10)
    images = torch.randn(1, 3, 32, 32)

    def step():
        model.zero_grad(set_to_none=True)
        model(images).pow(2).sum().backward()

    _, by_layer = device_profile.profile_torch(step, steps=1, module=model)
    found = {key for key, ms, _ in by_layer if ms > 0}
    assert {
        ("conv1_1", "forward"),
        ("conv1_1", "backward"),
        ("conv5_2", "backward"),
        ("fc8", "forward"),
    } <= found
    assert all(module.inplace for module in model.modules() if isinstance(module, torch.nn.ReLU))
