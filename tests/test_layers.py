"""LocalResponseNorm against the formula in NumPy, and against torch's convention."""

import numpy as np
import pytest
import jax.numpy as jnp

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


@pytest.mark.parametrize("size, alpha, beta, k", [(5, 1e-4, 0.75, 2.0), (4, 0.3, 0.5, 1.0), (1, 1.0, 1.0, 1.0)])
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
