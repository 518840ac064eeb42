"""LocalResponseNorm against the formula and torch's convention; the fusion-friendly ReLU and pooling forms
against the plain ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgg_jax import LocalResponseNorm


def lrn_reference(a: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """b_c = a_c / (k + alpha * sum_{c' = c - size//2}^{c + (size-1)//2} a_c'^2) ** beta."""
    channels = a.shape[-1]
    out = np.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels, c + (size - 1) // 2 + 1)
        window = np.sum(a[..., lo:hi] ** 2, axis=-1)
        out[..., c] = a[..., c] / (k + alpha * window) ** beta
    return out


@pytest.mark.parametrize(
    "size, alpha, beta, k", [(5, 1e-4, 0.75, 2.0), (4, 0.3, 0.5, 1.0), (1, 1.0, 1.0, 1.0)]
)
def test_lrn_matches_the_formula(size, alpha, beta, k):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((2, 5, 4, 11)) * 10).astype(np.float32)
    layer = LocalResponseNorm(size, alpha, beta, k)
    out = layer.apply({}, jnp.asarray(a))
    np.testing.assert_allclose(np.asarray(out), lrn_reference(a, size, alpha, beta, k), rtol=1e-5, atol=1e-6)
    assert layer.init({}, jnp.asarray(a)) == {}  # no parameters


def test_lrn_keeps_bfloat16_and_is_not_identity():
    a = jnp.linspace(-50, 50, 2 * 3 * 3 * 8).reshape(2, 3, 3, 8)
    out = LocalResponseNorm(alpha=1e-2).apply({}, a.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(out, np.float32), lrn_reference(np.asarray(a), 5, 1e-2, 0.75, 2.0), rtol=2e-2
    )
    assert not np.allclose(np.asarray(out, np.float32), np.asarray(a))


def test_lrn_equals_torch_with_alpha_times_size():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((2, 7, 3, 3)) * 20).astype(np.float32)  # NCHW for torch
    ours = LocalResponseNorm(5, 1e-4, 0.75, 2.0).apply({}, jnp.asarray(a.transpose(0, 2, 3, 1)))
    theirs = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_relu_with_the_output_mask_has_relus_values_and_gradients():
    from vgg_jax.model.layers import relu_output_mask

    x = jnp.array([-2.0, -0.0, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(relu_output_mask(x), jax.nn.relu(x))
    np.testing.assert_array_equal(
        jax.grad(lambda v: (relu_output_mask(v) * jnp.arange(5.0)).sum())(x),
        jax.grad(lambda v: (jax.nn.relu(v) * jnp.arange(5.0)).sum())(x),
    )


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 9, 2)])
@pytest.mark.parametrize("form", ["max_pool_2x2", "max_pool_2x2_slices"])
def test_elementwise_poolings_are_max_pool_forward_bit_for_bit_and_in_their_gradient_without_ties(
    shape, form
):
    import flax.linen as nn

    from vgg_jax.model import layers

    max_pool_2x2 = getattr(layers, form)
    x = jax.random.normal(jax.random.key(0), shape)  # continuous values: no ties

    def reference(v):
        return nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")

    np.testing.assert_array_equal(max_pool_2x2(x), reference(x))
    weights = jax.random.normal(jax.random.key(1), reference(x).shape)

    def grad(pool):
        return jax.grad(lambda v: (pool(v) * weights).sum())(x)

    np.testing.assert_array_equal(grad(max_pool_2x2), grad(reference))


def test_the_fusion_friendly_forms_keep_the_models_outputs_and_gradients():
    """relu_impl="output_mask" and pool_impl="reshape" or "slices": the same logits and, in f32 at the highest
    precision, parameter gradients equal to the default's to 1e-5."""
    from conftest import tiny_vgg

    images = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    default = tiny_vgg("D", pool_impl="reduce_window")
    variables = default.init(jax.random.key(3), images)
    for pool_impl in ("reshape", "slices"):
        fast = tiny_vgg("D", relu_impl="output_mask", pool_impl=pool_impl)
        np.testing.assert_array_equal(fast.apply(variables, images), default.apply(variables, images))
        with jax.default_matmul_precision("highest"):
            grads = [
                jax.grad(lambda p, m=m: (m.apply({"params": p}, images) ** 2).sum())(variables["params"])
                for m in (default, fast)
            ]
            saliency = [
                jax.grad(lambda x, m=m: m.apply(variables, x)[:, 3].sum())(images) for m in (default, fast)
            ]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *grads)
        np.testing.assert_allclose(*saliency, rtol=1e-5, atol=1e-7)  # ties after a ReLU: zeros the mask drops
    from vgg_jax.model.vgg import resolve_pool_impl

    assert resolve_pool_impl("auto") == ("slices" if jax.default_backend() == "cpu" else "reduce_window")
    with pytest.raises(ValueError, match="pool_impl must be one of"):
        tiny_vgg("D", pool_impl="avg")
