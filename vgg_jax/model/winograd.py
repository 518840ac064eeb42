"""Winograd's minimal filtering for VGG's 3x3, stride-1, 'SAME' convolutions (Lavin & Gray, 2015).

F(m x m, 3x3) makes each m x m output tile from an (m + 2) x (m + 2) input
tile with (m + 2)^2 multiplies per input-output channel pair instead of
9 m^2: 2.25x fewer for F(2x2, 3x3), 4x fewer for F(4x4, 3x3). The input tiles
and the kernel are transformed (`B^T d B`, `G g G^T`), multiplied
elementwise, which over the channels is (m + 2)^2 batched
`(tiles x C) @ (C x K)` matrix products, and transformed back (`A^T M A`).

How it is laid out for XLA:CPU, from measurements (docs/benchmarks.md):

- The tiles are strided slices, and each transform is one broadcast product
  and one sum over a length-(m + 2) axis, never a dot: XLA fuses them into
  loops over contiguous channels. (Writing each coefficient as its own add
  ran no faster and compiled up to 10x slower.)
- The products are channel-major, `(alpha^2, tiles, C) @ (alpha^2, C, K)`.
- The image is cut into blocks of tile rows (`lax.map`), each block's
  transformed input a few MiB: transforming a whole batch at once writes
  (m + 2)^2 / m^2 times the input to fresh memory, and on the machines
  measured writing fresh memory ran at 2-3 GB/s, which cost more than the
  multiplies saved.

Odd sizes are padded to whole tiles and cropped. The gradients follow by
autodiff through the same slices and products: the input gradient and the
kernel gradient are then products in the Winograd domain as well, with the
same multiply count as the forward pass, and the kernel transform is done
once per step and shared by all three.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclasses.dataclass(frozen=True, eq=False)
class Algorithm:
    """F(m x m, 3x3): its output tile size `m` and its three transform matrices (float64, exact)."""

    name: str
    m: int
    B_T: np.ndarray  # (alpha, alpha): the input transform, alpha = m + 2
    G: np.ndarray  # (alpha, 3): the kernel transform
    A_T: np.ndarray  # (m, alpha): the output transform

    @property
    def alpha(self) -> int:
        return self.m + 2


# Lavin & Gray (2015), eq. (7).
F2x2 = Algorithm(
    "F(2x2, 3x3)",
    2,
    np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
    np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
    np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
)
# Lavin & Gray (2015), Sec. 4.2: interpolation points 0, +-1, +-2 and infinity.
F4x4 = Algorithm(
    "F(4x4, 3x3)",
    4,
    np.array(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        np.float64,
    ),
    np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        np.float64,
    ),
    np.array(
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64
    ),
)
ALGORITHMS = {"F2x2": F2x2, "F4x4": F4x4}

# The transformed input of one block: at most this many bytes (see the module docstring).
BLOCK_BYTES = 3 << 20


def transform_kernel(kernel: jax.Array, algorithm: Algorithm = F2x2) -> jax.Array:
    """`G g G^T` of an HWIO 3x3 kernel: (alpha, alpha, C, K). Once per step, shared by every tile."""
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd {algorithm.name} takes HWIO 3x3 kernels, got shape {kernel.shape}")
    g = jnp.asarray(algorithm.G, kernel.dtype)
    return jnp.einsum("ai,ijck,bj->abck", g, kernel, g, precision=lax.Precision.HIGHEST)


def _apply(matrix: np.ndarray, x: jax.Array, axis: int) -> jax.Array:
    """`sum_a matrix[:, a] * x[..., a, ...]` along `axis`: one broadcast product and one sum, which XLA
    fuses into one loop (a few ops, so compiling stays fast; multiplying by the zeros costs nothing that
    matters next to the memory traffic)."""
    shape = [1] * (x.ndim + 1)
    shape[axis], shape[axis + 1] = matrix.shape
    return (jnp.asarray(matrix, x.dtype).reshape(shape) * jnp.expand_dims(x, axis)).sum(axis + 1)


def _tiles(x: jax.Array, axis: int, m: int, count: int, alpha: int) -> jax.Array:
    """`(alpha, ...)`: view a holds element a of each of `count` tiles along `axis` (tile stride m), by
    strided slices."""
    views = []
    for a in range(alpha):
        start, limit, strides = [0] * x.ndim, list(x.shape), [1] * x.ndim
        start[axis], limit[axis], strides[axis] = a, a + m * (count - 1) + 1, m
        views.append(lax.slice(x, start, limit, strides))
    return jnp.stack(views)


class Blocking(NamedTuple):
    """How `conv3x3` cuts a layer: tile rows per block, blocks per image, blocks per step of the loop."""

    block_rows: int
    blocks_per_image: int
    group: int


def blocking(
    shape: tuple[int, ...], algorithm: Algorithm, itemsize: int = 4, block_rows: Optional[int] = None
) -> Blocking:
    """The blocks for an (N, H, W, C) input: each step's transformed input at most `BLOCK_BYTES` (several
    small images' blocks in one step, so that the products stay large)."""
    batch, height, width, channels = shape
    m, alpha = algorithm.m, algorithm.alpha
    tiles_h, tiles_w = -(-height // m), -(-width // m)
    row_bytes = alpha * alpha * tiles_w * channels * itemsize
    if block_rows is None:
        block_rows = max(1, min(tiles_h, BLOCK_BYTES // row_bytes))
    blocks_per_image = -(-tiles_h // block_rows)
    units = batch * blocks_per_image
    group = max(1, min(units, BLOCK_BYTES // (row_bytes * block_rows)))
    while units % group:
        group -= 1
    return Blocking(block_rows, blocks_per_image, group)


def input_transform(x: jax.Array, algorithm: Algorithm, tiles_w: int) -> jax.Array:
    """`B^T d B` of a block, `(G, m * rows + 2, m * tiles_w + 2, C)` padded input -> `(alpha^2, G * rows *
    tiles_w, C)`: along the rows, then along the columns."""
    m, alpha = algorithm.m, algorithm.alpha
    rows = (x.shape[1] - 2) // m
    by_row = _apply(algorithm.B_T, _tiles(x, 1, m, rows, alpha), 0)
    v = _apply(algorithm.B_T, jnp.moveaxis(_tiles(by_row, 3, m, tiles_w, alpha), 0, 1), 1)
    return v.reshape(alpha * alpha, -1, x.shape[-1])


def output_transform(
    products: jax.Array, algorithm: Algorithm, group: int, rows: int, tiles_w: int
) -> jax.Array:
    """`A^T M A` of a block's `(alpha^2, G * rows * tiles_w, K)` products, the m x m output tiles
    interleaved into rows and columns: `(G, m * rows, m * tiles_w, K)`."""
    m, alpha = algorithm.m, algorithm.alpha
    features = products.shape[-1]
    y = products.reshape(alpha, alpha, group, rows, tiles_w, features)
    y = _apply(algorithm.A_T, _apply(algorithm.A_T, y, 0), 1)  # (m, m, G, rows, tiles_w, K)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(group, rows * m, tiles_w * m, features)


def _block(x: jax.Array, u: jax.Array, algorithm: Algorithm, tiles_w: int) -> jax.Array:
    """One block: `(G, m * rows + 2, m * tiles_w + 2, C)` padded input -> `(G, m * rows, m * tiles_w, K)`."""
    products = jnp.einsum("tpc,tck->tpk", input_transform(x, algorithm, tiles_w), u)
    return output_transform(products, algorithm, x.shape[0], (x.shape[1] - 2) // algorithm.m, tiles_w)


def conv3x3(
    inputs: jax.Array,
    kernel: jax.Array,
    algorithm: Algorithm = F2x2,
    block_rows: Optional[int] = None,
) -> jax.Array:
    """NHWC x HWIO 3x3, stride 1, 'SAME': `lax.conv_general_dilated`'s result, by Winograd.

    Args:
        inputs: (N, H, W, C).
        kernel: (3, 3, C, K).
        algorithm: `F2x2` (within 1e-5 relative of the direct convolution in
            float32) or `F4x4` (fewer multiplies, a looser bound: see
            tests/test_winograd.py).
        block_rows: tile rows per block; None sizes blocks to `BLOCK_BYTES`.
    """
    if inputs.ndim != 4 or kernel.ndim != 4 or inputs.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"Winograd takes NHWC inputs and an HWIO kernel with matching channels, got {inputs.shape} and "
            f"{kernel.shape}"
        )
    batch, height, width, channels = inputs.shape
    m, alpha = algorithm.m, algorithm.alpha
    tiles_w = -(-width // m)
    block_rows, blocks_per_image, group = blocking(
        inputs.shape, algorithm, jnp.dtype(inputs.dtype).itemsize, block_rows
    )
    rows = blocks_per_image * block_rows
    # SAME pads 1 on each side; the bottom and right further, to whole blocks and tiles.
    padded = jnp.pad(inputs, ((0, 0), (1, m * rows + 1 - height), (1, m * tiles_w + 1 - width), (0, 0)))
    span = m * block_rows
    blocks = jnp.stack(
        [padded[:, span * b : span * b + span + 2] for b in range(blocks_per_image)], axis=1
    ).reshape(batch * blocks_per_image // group, group, span + 2, m * tiles_w + 2, channels)
    u = transform_kernel(kernel, algorithm).reshape(alpha * alpha, channels, kernel.shape[-1])
    y = lax.map(lambda block: _block(block, u, algorithm, tiles_w), blocks)
    y = y.reshape(batch, rows * m, tiles_w * m, kernel.shape[-1])
    if (rows * m, tiles_w * m) != (height, width):
        y = y[:, :height, :width]
    return y
