"""Layers that Flax does not provide."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class LocalResponseNorm(nn.Module):
    """Cross-channel local response normalisation, AlexNet's formula.

    b_c = a_c / (k + alpha * sum_{c' in window(c)} a_{c'}^2) ** beta

    where the window holds `size` channels centred on c (size // 2 before,
    (size - 1) // 2 after, clipped at the edges). The defaults are AlexNet's, as
    used by VGG's A-LRN. Conventions elsewhere:

    - TF `tf.nn.local_response_normalization(depth_radius=r, bias=k, alpha=a,
      beta=b)` sums over 2r + 1 channels and does not divide alpha by the
      window: this layer equals it with `size = 2r + 1`, `alpha = a`.
    - torch `nn.LocalResponseNorm(size, alpha, beta, k)` and Caffe divide alpha
      by `size`: this layer equals torch's with `alpha_torch = alpha * size`
      (AlexNet's is `LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)` in torch).

    Inputs are channels-last; the sum is taken in float32 whatever the input
    dtype, and the result is cast back to it. The layer has no parameters.
    """

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        if self.size < 1:
            raise ValueError(f"LocalResponseNorm size must be >= 1, got {self.size}")
        values = inputs.astype(jnp.float32)
        squares = jnp.square(values)
        channels = inputs.shape[-1]
        pad = [(0, 0)] * (inputs.ndim - 1) + [(self.size // 2, (self.size - 1) // 2)]
        padded = jnp.pad(squares, pad)
        window_sum = sum(padded[..., i : i + channels] for i in range(self.size))
        scale = (self.k + self.alpha * window_sum) ** self.beta
        return (values / scale).astype(inputs.dtype)


@jax.custom_vjp
def relu_output_mask(x: jax.Array) -> jax.Array:
    """ReLU whose gradient is masked by its output (`y > 0`), not its input.

    The same values and gradients as `jax.nn.relu` (the derivative at 0 is 0
    in both). Autodiff of `jax.nn.relu` keeps the pre-activation for the
    backward pass, so in training the conv output has two users; this one
    keeps only the ReLU's output, which the next layer needs anyway. On GPUs
    that leaves the conv (+ bias + ReLU) with one user, the pattern XLA's
    cuDNN fusion rewrite requires (docs/benchmarks.md).
    """
    return jnp.maximum(x, 0)


def _relu_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    y = jnp.maximum(x, 0)
    return y, y


def _relu_backward(y: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    return (jnp.where(y > 0, g, jnp.zeros_like(g)),)


relu_output_mask.defvjp(_relu_forward, _relu_backward)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 (floor, as 'VALID') as a reshape and a max, NHWC.

    The forward equals `nn.max_pool(x, (2, 2), strides=(2, 2))` bit for bit.
    Its gradient is elementwise work (a compare with the broadcast max) that
    can fuse with the ReLU mask, where `reduce_window`'s gradient is a
    `select_and_scatter` kernel that fuses with nothing. Ties differ: the
    gradient is shared equally among the maxima of a window, where
    `select_and_scatter` gives it all to the first.
    """
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def max_pool_2x2_slices(x: jax.Array) -> jax.Array:
    """`max_pool_2x2` as the max of the window's four strided slices: one elementwise loop, which
    XLA:CPU vectorises, where the reshape's reduction and `reduce_window` are not (VGG-16's forward
    pass about 6% faster than with the reshape, on a Zen 5, docs/benchmarks.md). The same forward bit
    for bit, and the same gradient without ties (with them, JAX's `maximum` splits it pairwise)."""
    h, w = x.shape[1] - x.shape[1] % 2, x.shape[2] - x.shape[2] % 2
    rows = [x[:, i:h:2, j:w:2] for i in (0, 1) for j in (0, 1)]
    return jnp.maximum(jnp.maximum(rows[0], rows[1]), jnp.maximum(rows[2], rows[3]))
