"""Winograd F(2x2, 3x3) against the direct convolution at the highest float32 precision, with gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vgg_jax.model import winograd


def direct(inputs, kernel):
    return lax.conv_general_dilated(
        inputs, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("shape", [(2, 8, 8, 3, 4), (1, 7, 9, 5, 6), (2, 14, 14, 16, 8), (1, 1, 1, 2, 2)])
def test_f2x2_3x3_equals_the_direct_convolution_and_its_gradients(shape):
    """Even and odd sizes (padded to whole tiles, cropped), VGG's first layer's 3 channels, a 1x1 image."""
    batch, height, width, channels, features = shape
    keys = jax.random.split(jax.random.key(0), 3)
    inputs = jax.random.normal(keys[0], (batch, height, width, channels))
    kernel = jax.random.normal(keys[1], (3, 3, channels, features)) / np.sqrt(9 * channels)
    cotangent = jax.random.normal(keys[2], (batch, height, width, features))
    with jax.default_matmul_precision("highest"):
        ours, theirs = jax.jit(winograd.conv3x3)(inputs, kernel), jax.jit(direct)(inputs, kernel)
        scale = float(jnp.abs(theirs).max())
        assert ours.shape == theirs.shape and float(jnp.abs(ours - theirs).max()) <= 1e-5 * scale
        grads = [jax.jit(jax.vjp(f, inputs, kernel)[1])(cotangent) for f in (winograd.conv3x3, direct)]
        for ours_grad, their_grad in zip(*grads):
            assert float(jnp.abs(ours_grad - their_grad).max()) <= 1e-5 * float(jnp.abs(their_grad).max())


def test_only_3x3_kernels():
    with pytest.raises(ValueError, match="takes 3x3 kernels"):
        winograd.transform_kernel(jnp.zeros((5, 5, 1, 1)))
