"""Winograd's minimal filtering F(2x2, 3x3) for VGG's 3x3, stride-1, 'SAME' convolutions (Lavin & Gray, 2015).

Each 2x2 output tile comes from a 4x4 input tile with 16 multiplies per
input-output channel pair instead of 36 (2.25x fewer): the input tiles and
the kernel are transformed (`B^T d B`, `G g G^T`), multiplied elementwise,
which over channels is 16 batched `(tiles x C) @ (C x K)` matrix products,
and transformed back (`A^T m A`). Odd sizes are padded to whole tiles and
cropped. The gradients follow by autodiff through the same products.

A first, plain-jnp form: correct (tests/test_winograd.py holds it to the
direct convolution at float32 precision), not yet wired into `VGG` and not
yet fast; docs/benchmarks.md has its first timings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# F(2x2, 3x3), as in Lavin & Gray (2015), eq. (7).
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def transform_kernel(kernel: jax.Array) -> jax.Array:
    """`G g G^T` of an HWIO 3x3 kernel: (4, 4, C, K). Once per step, shared by every tile."""
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) takes 3x3 kernels, got {kernel.shape[:2]}")
    g = jnp.asarray(G, kernel.dtype)
    return jnp.einsum("ai,ijck,bj->abck", g, kernel, g)


def conv3x3(inputs: jax.Array, kernel: jax.Array) -> jax.Array:
    """NHWC x HWIO 3x3, stride 1, 'SAME': `lax.conv_general_dilated`'s result with F(2x2, 3x3)."""
    batch, height, width, channels = inputs.shape
    tiles_h, tiles_w = -(-height // 2), -(-width // 2)
    # SAME pads 1 on each side; pad the bottom and right further to whole 2x2 output tiles.
    padded = jnp.pad(inputs, ((0, 0), (1, 1 + 2 * tiles_h - height), (1, 1 + 2 * tiles_w - width), (0, 0)))
    # The 4x4 input tile of output tile (i, j) starts at (2i, 2j): d[a, b] = padded[2i + a, 2j + b].
    d = jnp.stack(
        [
            jnp.stack([padded[:, a : a + 2 * tiles_h : 2, b : b + 2 * tiles_w : 2, :] for b in range(4)])
            for a in range(4)
        ]
    )  # (4, 4, N, tiles_h, tiles_w, C)
    b_t = jnp.asarray(B_T, inputs.dtype)
    v = jnp.einsum("ai,ijnhwc,bj->abnhwc", b_t, d, b_t)
    u = transform_kernel(kernel)
    m = jnp.einsum("abnhwc,abck->abnhwk", v, u)  # 16 batched matmuls over the channels
    a_t = jnp.asarray(A_T, inputs.dtype)
    y = jnp.einsum("ia,abnhwk,jb->ijnhwk", a_t, m, a_t)  # (2, 2, N, tiles_h, tiles_w, K)
    y = jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(batch, 2 * tiles_h, 2 * tiles_w, kernel.shape[-1])
    return y[:, :height, :width, :]
