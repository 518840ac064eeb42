"""The custom-gradient convolution matches jax.grad of lax.conv to 1e-5, alone and in the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_images, tiny_vgg
from jax import lax

from vgg_jax import VGG
from vgg_jax.model import conv
from vgg_jax.model.conv import DIMENSIONS, conv_same, flax_conv, kernel_gradient


def reference(inputs, kernel):
    return lax.conv_general_dilated(inputs, kernel, (1, 1), "SAME", dimension_numbers=DIMENSIONS)


def relative(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("shape, kernel_size", [((2, 9, 7, 5), 3), ((1, 8, 8, 6), 1), ((3, 5, 11, 4), 3)])
def test_conv_same_value_and_gradients(shape, kernel_size):
    inputs = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, shape[-1], 7))
    np.testing.assert_allclose(conv_same(inputs, kernel), reference(inputs, kernel), rtol=1e-6, atol=1e-6)
    cotangent = jax.random.normal(jax.random.key(2), shape[:3] + (7,))
    expected = jax.vjp(reference, inputs, kernel)[1](cotangent)
    got = jax.vjp(conv_same, inputs, kernel)[1](cotangent)
    for ours, theirs in zip(got, expected):
        assert relative(ours, theirs) < 1e-5


@pytest.mark.parametrize(
    "shape, window, block_bytes",
    [
        ((2, 13, 11, 5), (3, 3), 2 * 11 * 9 * 5 * 4 * 3),  # 3 rows a block: 5 blocks, the last one short
        ((1, 9, 9, 4), (3, 3), 1),  # one row a block
        ((2, 10, 7, 3), (5, 5), 2 * 7 * 25 * 3 * 4 * 4),
        ((3, 6, 5, 8), (1, 1), 64),
    ],
)
def test_kernel_gradient_in_blocks_of_rows_equals_the_whole(shape, window, block_bytes):
    inputs = jax.random.normal(jax.random.key(0), shape)
    cotangent = jax.random.normal(jax.random.key(1), shape[:3] + (6,))
    kernel = jnp.zeros(window + (shape[-1], 6))
    with jax.default_matmul_precision("highest"):
        expected = jax.vjp(lambda k: reference(inputs, k), kernel)[1](cotangent)[0]
        whole = kernel_gradient(inputs, cotangent, window)
        blocked = jax.jit(kernel_gradient, static_argnums=(2, 3))(inputs, cotangent, window, block_bytes)
    assert "scan" in str(
        jax.make_jaxpr(kernel_gradient, static_argnums=(2, 3))(inputs, cotangent, window, block_bytes)
    )
    assert whole.dtype == blocked.dtype == jnp.float32 and blocked.shape == expected.shape
    assert relative(whole, expected) < 1e-6 and relative(blocked, expected) < 1e-6
    # bfloat16 inputs: products in bfloat16, sums in float32
    low = kernel_gradient(inputs.astype(jnp.bfloat16), cotangent.astype(jnp.bfloat16), window, block_bytes)
    assert low.dtype == jnp.float32 and relative(low, expected) < 1e-2


def test_conv_same_takes_the_blocked_kernel_gradient_past_the_size_limit(monkeypatch):
    inputs = jax.random.normal(jax.random.key(0), (2, 12, 9, 4))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))
    cotangent = jax.random.normal(jax.random.key(2), (2, 12, 9, 5))
    expected = jax.vjp(reference, inputs, kernel)[1](cotangent)
    monkeypatch.setattr(conv, "PATCHES_WHOLE_BYTES", 0)
    monkeypatch.setattr(conv, "PATCHES_BLOCK_BYTES", 2 * 9 * 9 * 4 * 4 * 5)  # 5 rows a block
    vjp = jax.vjp(conv_same, inputs, kernel)[1]
    assert "scan" in str(jax.make_jaxpr(vjp)(cotangent))
    for ours, theirs in zip(vjp(cotangent), expected):
        assert relative(ours, theirs) < 1e-5


def direct_call(conv, inputs, kernel, strides):
    numbers = lax.conv_dimension_numbers(inputs.shape, kernel.shape, DIMENSIONS)
    return conv(inputs, kernel, strides, "SAME", dimension_numbers=numbers)


def test_the_drop_in_falls_back_for_other_convolutions():
    """Strided convolutions go to XLA's direct one; stride-1 'SAME' ones to `conv_same`, equal to it."""
    inputs = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    for strides in ((2, 2), (1, 1)):
        np.testing.assert_allclose(
            direct_call(flax_conv, inputs, kernel, strides),
            direct_call(lax.conv_general_dilated, inputs, kernel, strides),
            rtol=1e-6,
        )


def test_model_gradients_agree_between_conv_impls(tiny_a):
    _, variables = tiny_a
    images, labels = random_images(), jnp.array([1, 2])

    def grads(conv_impl):
        model = tiny_vgg("A", conv_impl=conv_impl)

        def loss(params, images):
            logits = model.apply({"params": params}, images)
            return jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], images)

    xla = grads("xla")
    for conv_impl, bound in (("custom_vjp", 1e-5),):
        for ours, theirs in zip(jax.tree.leaves(grads(conv_impl)), jax.tree.leaves(xla)):
            assert relative(ours, theirs) < bound, conv_impl
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        VGG(conv_impl="winograd")  # measured, slower everywhere, and removed (docs/benchmarks.md)


@pytest.mark.parametrize("kernel_size", [3, 1])
def test_bfloat16_row_dots_equal_the_convolution_and_are_taken_where_the_cpu_has_bf16_units(
    monkeypatch, kernel_size
):
    """`_row_dots` is the same 'SAME' convolution (in float32 it matches `lax.conv` to rounding); a bf16
    `conv_same` on a small map takes it where the CPU has bf16 units, value and input gradient alike, and
    a large map or a CPU without them keeps the convolution."""
    key = jax.random.key(3)
    inputs = jax.random.normal(key, (2, 6, 5, 8))
    kernel = jax.random.normal(jax.random.fold_in(key, 1), (kernel_size, kernel_size, 8, 4))
    reference = lax.conv_general_dilated(inputs, kernel, (1, 1), "SAME", dimension_numbers=DIMENSIONS)
    np.testing.assert_allclose(conv._row_dots(inputs, kernel), reference, rtol=1e-5, atol=1e-5)
    taken = []
    monkeypatch.setattr(conv, "_row_dots", lambda *a, real=conv._row_dots: taken.append(1) or real(*a))
    bf16 = (inputs.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    for units, limit, expected in ((True, 64, 2), (False, 64, 0), (True, 29, 0)):
        taken.clear()
        monkeypatch.setattr(conv, "_bf16_dots", lambda units=units: units)
        monkeypatch.setattr(conv, "BF16_DOT_MAX_PIXELS", limit)
        value, grad = jax.value_and_grad(lambda x: conv_same(x, bf16[1]).astype(jnp.float32).sum())(bf16[0])
        assert len(taken) == expected  # the value, and the input gradient (a forward convolution too)
        np.testing.assert_allclose(np.asarray(value, np.float32), float(reference.sum()), rtol=0.05, atol=1.0)
        assert grad.dtype == jnp.bfloat16 and grad.shape == inputs.shape


def test_a_bfloat16_model_on_a_cpu_with_bf16_units_keeps_its_wide_blocks_in_float32(monkeypatch):
    """`conv.block_dtype`: where bf16 only adds conversions (maps wider than `BF16_DOT_MAX_PIXELS`, on a CPU
    with bf16 units) a bf16 model's block computes in float32; narrower blocks compute in bf16; float32
    models and CPUs without the units are as they were. Same variables either way."""
    monkeypatch.setattr(conv, "BF16_DOT_MAX_PIXELS", 16 * 16)
    model = tiny_vgg("A", dtype=jnp.bfloat16, conv_impl="custom_vjp")
    images = random_images((1, 64, 64, 3))
    variables = jax.jit(model.init)(jax.random.key(0), images)
    for units, first in ((True, jnp.float32), (False, jnp.bfloat16)):
        monkeypatch.setattr(conv, "_bf16_dots", lambda units=units: units)
        shapes = jax.eval_shape(lambda v: model.apply(v, images, method=VGG.features), variables)
        assert shapes["conv1_1"].dtype == first and shapes["conv2_1"].dtype == first  # 64x64, 32x32 maps
        assert shapes["conv3_1"].dtype == jnp.bfloat16  # 16x16: within the limit
        assert jax.eval_shape(model.apply, variables, images).dtype == jnp.float32
    assert conv.block_dtype(jnp.float32, 224, 224) == jnp.float32
