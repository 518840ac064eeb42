"""Winograd F(2x2, 3x3) and F(4x4, 3x3) against the direct convolution at the highest float32 precision,
with gradients, at every VGG layer's channel counts.

The bounds are relative to the largest magnitude of the direct result: F(2x2)
within 1e-5; F(4x4) within 1e-4 (its transforms have coefficients up to 8,
so rounding grows: measured up to 1.8e-5 at VGG-16's layers, inputs N(0, 1)
and kernels scaled by 1/sqrt(9 C)). The sizes here are small
spatially, with the layers' true channel counts, which set the accumulation
length; `-m slow` runs VGG-16's true sizes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vgg_jax.model import winograd

BOUNDS = {"F2x2": 1e-5, "F4x4": 1e-4}
# (input channels, output channels) of VGG's 3x3 layers, conv1_1 .. conv5_x.
VGG_CHANNELS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
# VGG-16's layers at their true sizes: (size, input channels, output channels).
VGG16_LAYERS = [(224, 3, 64), (224, 64, 64), (112, 64, 128), (112, 128, 128), (56, 128, 256)]
VGG16_LAYERS += [(56, 256, 256), (28, 256, 512), (28, 512, 512), (14, 512, 512)]


def direct(inputs, kernel):
    return lax.conv_general_dilated(
        inputs, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)  # no eager XLA compiles
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def check(algorithm, batch, height, width, channels, features, gradients=True, block_rows=None):
    keys = jax.random.split(jax.random.key(0), 3)
    inputs = jax.random.normal(keys[0], (batch, height, width, channels))
    kernel = jax.random.normal(keys[1], (3, 3, channels, features)) / np.sqrt(9 * channels)
    cotangent = jax.random.normal(keys[2], (batch, height, width, features))

    def ours(x, k):
        return winograd.conv3x3(x, k, winograd.ALGORITHMS[algorithm], block_rows)

    def with_gradients(f):  # the output and both gradients from one compiled function
        def run(x, k, ct):
            out, vjp = jax.vjp(f, x, k)
            return (out, *vjp(ct)) if gradients else (out,)

        return jax.jit(run)

    with jax.default_matmul_precision("highest"):
        results = [with_gradients(f)(inputs, kernel, cotangent) for f in (ours, direct)]
    errors = [relative_error(mine, theirs) for mine, theirs in zip(*results)]
    assert max(errors) <= BOUNDS[algorithm], errors
    return errors


@pytest.mark.parametrize("algorithm", sorted(BOUNDS))
@pytest.mark.parametrize("shape", [(2, 8, 8, 3, 4), (1, 7, 9, 5, 6), (2, 14, 14, 16, 8), (1, 1, 1, 2, 2)])
def test_equals_the_direct_convolution_and_its_gradients(algorithm, shape):
    """Even and odd sizes (padded to whole tiles, cropped), VGG's first layer's 3 channels, a 1x1 image."""
    check(algorithm, *shape)


@pytest.mark.parametrize("algorithm", sorted(BOUNDS))
@pytest.mark.parametrize("block_rows", [2, 5])
def test_blocks_of_tile_rows_change_nothing_but_the_order_of_work(algorithm, block_rows):
    """Blocks that do and do not divide the tile rows (13 rows: 7 tiles of F(2x2), 4 of F(4x4))."""
    check(algorithm, 2, 13, 10, 6, 5, block_rows=block_rows)


@pytest.mark.parametrize("algorithm", sorted(BOUNDS))
@pytest.mark.parametrize("channels", VGG_CHANNELS, ids=lambda pair: f"{pair[0]}to{pair[1]}")
def test_every_vgg_layers_channel_counts(algorithm, channels):
    check(algorithm, 1, 12, 12, *channels)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(BOUNDS))
@pytest.mark.parametrize("layer", VGG16_LAYERS, ids=lambda layer: "x".join(map(str, layer)))
def test_vgg16_layers_at_their_true_size(algorithm, layer):
    size, channels, features = layer
    check(algorithm, 2, size, size, channels, features, gradients=size <= 56)


def test_bad_shapes_name_the_problem():
    with pytest.raises(ValueError, match="takes HWIO 3x3 kernels"):
        winograd.transform_kernel(jnp.zeros((5, 5, 1, 1)))
    with pytest.raises(ValueError, match="matching channels"):
        winograd.conv3x3(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 1)))
