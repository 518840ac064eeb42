"""Convolution implementations for the model's `conv_impl` switch.

XLA:CPU runs convolutions through Eigen unless its YNNPACK path takes them,
and that path accepts forward-shaped convolutions but not the gradient forms
`jax.grad` of `lax.conv_general_dilated` produces. `conv_same` is a 'SAME',
stride-1 convolution with a custom VJP whose backward pass is written in forms
the fast path accepts: the input gradient is a forward convolution of the
output gradient with the flipped, transposed kernel, and the kernel gradient
is image patches times the output gradient, a matrix product (`kernel_gradient`,
in blocks of image rows for large inputs).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


# bfloat16 on a CPU with bfloat16 units: XLA:CPU's YNN dot multiplies bfloat16 into float32 about 2.5x faster
# than float32 (docs/benchmarks.md), where its convolution has no such kernel. So a bfloat16 convolution on a
# map of at most this many pixels per image is three dots (`_row_dots`); on larger maps the copies of the
# input cost more than the dots save.
BF16_DOT_MAX_PIXELS = 56 * 56


def _forward(inputs: jax.Array, kernel: jax.Array) -> jax.Array:
    pixels = inputs.shape[1] * inputs.shape[2]
    if inputs.dtype == jnp.bfloat16 and pixels <= BF16_DOT_MAX_PIXELS and _bf16_dots():
        return _row_dots(inputs, kernel)
    return lax.conv_general_dilated(inputs, kernel, (1, 1), "SAME", dimension_numbers=DIMENSIONS)


# bfloat16 on a CPU with bf16 units: a block on maps larger than BF16_DOT_MAX_PIXELS computes in float32
# (docs/benchmarks.md): XLA:CPU has no fast bf16 convolution, so there bf16 only adds conversions.
BF16_WIDE_MAPS_IN_FLOAT32 = True


def block_dtype(dtype: Any, height: int, width: int) -> Any:
    """The dtype a conv block on `height` x `width` maps computes in, for a model of compute `dtype`."""
    wide = height * width > BF16_DOT_MAX_PIXELS
    if dtype == jnp.bfloat16 and wide and BF16_WIDE_MAPS_IN_FLOAT32 and _bf16_dots():
        return jnp.float32
    return dtype


def _bf16_dots() -> bool:
    """Whether bfloat16 convolutions go through dots here: on the CPU backend, on a CPU with bf16 units."""
    from vgg_jax.util.xla_flags import has_bf16_units

    return jax.default_backend() == "cpu" and has_bf16_units()


def _row_dots(inputs: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 'SAME' convolution as one dot per kernel row, accumulated in float32: the input's
    column-shifted copies side by side (N, H + kh - 1, W, kw * C) times that row's (kw * C, K) kernel."""
    kh, kw, channels, features = kernel.shape
    height, width = inputs.shape[1:3]
    padded = jnp.pad(inputs, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    wide = jnp.concatenate([padded[:, :, j : j + width, :] for j in range(kw)], axis=-1)
    total = None
    for i in range(kh):
        row = lax.dot_general(
            wide[:, i : i + height],
            kernel[i].reshape(kw * channels, features),
            (((3,), (0,)), ((), ())),
            preferred_element_type=jnp.float32,
        )
        total = row if total is None else total + row
    return total.astype(inputs.dtype)


@jax.custom_vjp
def conv_same(inputs: jax.Array, kernel: jax.Array) -> jax.Array:
    """NHWC x HWIO, stride 1, 'SAME' padding (odd kernels), with a fast-path-friendly gradient."""
    return _forward(inputs, kernel)


def _conv_same_fwd(inputs, kernel):
    return _forward(inputs, kernel), (inputs, kernel)


def _conv_same_bwd(residuals, grad_out):
    inputs, kernel = residuals
    # d inputs: the output gradient convolved with the kernel flipped in space, in/out swapped.
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    grad_in = _forward(grad_out.astype(kernel.dtype), flipped).astype(inputs.dtype)
    return grad_in, kernel_gradient(inputs, grad_out, kernel.shape[:2]).astype(kernel.dtype)


# The patches matrix is written whole up to this size; past it, in blocks of image rows of at most
# PATCHES_BLOCK_BYTES, each block's product summed into the gradient (docs/benchmarks.md: writing a 9x
# copy of a large input to fresh memory cost more than the product itself on 2 Zen 4 cores).
PATCHES_WHOLE_BYTES = 16 << 20
PATCHES_BLOCK_BYTES = 1 << 20


def _patch_rows(padded: jax.Array, height: int, width: int, kh: int, kw: int) -> jax.Array:
    """(N, height + kh - 1, width + kw - 1, C) padded input -> (N * height * width, kh * kw * C) patches."""
    patches = jnp.stack(
        [padded[:, i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)], axis=3
    )
    return patches.reshape(-1, kh * kw * padded.shape[-1])


def kernel_gradient(
    inputs: jax.Array, grad_out: jax.Array, window: tuple[int, int], block_bytes: Optional[int] = None
) -> jax.Array:
    """The kernel gradient of a stride-1 'SAME' convolution, `(kh, kw, C, K)` in float32: image patches
    times the output gradient, one matrix product.

    A large input's patches (a kh*kw-fold copy) are made and multiplied a block of image rows at a time
    under `lax.scan`, so that they stay in cache: measured 1.4-3.0x faster at VGG-16's layers from 56x56
    up and 1.0-1.4x at 28x28, batch 4 (docs/benchmarks.md). `block_bytes` overrides the block size (tests).
    """
    kh, kw = window
    batch, height, width, channels = inputs.shape
    features = grad_out.shape[-1]
    grad_out = grad_out.astype(inputs.dtype)
    contract = (((0,), (0,)), ((), ()))
    row_bytes = batch * width * kh * kw * channels * inputs.dtype.itemsize
    whole = block_bytes is None and row_bytes * height <= PATCHES_WHOLE_BYTES
    rows = height if whole else max(1, min(height, (block_bytes or PATCHES_BLOCK_BYTES) // row_bytes))
    blocks = -(-height // rows)
    extra = blocks * rows - height  # zero rows past the bottom edge: they add nothing to the sum
    padded = jnp.pad(inputs, ((0, 0), (kh // 2, kh // 2 + extra), (kw // 2, kw // 2), (0, 0)))
    if blocks == 1:
        grad = lax.dot_general(
            _patch_rows(padded, height, width, kh, kw),
            grad_out.reshape(-1, features),
            contract,
            preferred_element_type=jnp.float32,
        )
        return grad.reshape(kh, kw, channels, features)
    grad_out = jnp.pad(grad_out, ((0, 0), (0, extra), (0, 0), (0, 0)))

    def block(total, index):
        start = index * rows
        patches = _patch_rows(
            lax.dynamic_slice_in_dim(padded, start, rows + kh - 1, axis=1), rows, width, kh, kw
        )
        out = lax.dynamic_slice_in_dim(grad_out, start, rows, axis=1).reshape(-1, features)
        return total + lax.dot_general(patches, out, contract, preferred_element_type=jnp.float32), None

    zero = jnp.zeros((kh * kw * channels, features), jnp.float32)
    grad, _ = lax.scan(block, zero, jnp.arange(blocks))
    return grad.reshape(kh, kw, channels, features)


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def _drop_in(same: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """A drop-in for `lax.conv_general_dilated` (`flax.linen.Conv`'s `conv_general_dilated`) that
    calls `same(lhs, rhs)` for NHWC 'SAME' stride-1 convolutions with odd kernels, and XLA's for the
    rest."""

    def conv(
        lhs: jax.Array,
        rhs: jax.Array,
        window_strides: Any,
        padding: Any,
        lhs_dilation: Any = None,
        rhs_dilation: Any = None,
        dimension_numbers: Any = None,
        feature_group_count: int = 1,
        batch_group_count: int = 1,
        precision: Any = None,
        preferred_element_type: Any = None,
    ) -> jax.Array:
        groups = (feature_group_count, batch_group_count)
        layout = dimension_numbers is None or tuple(getattr(dimension_numbers, "lhs_spec", ())) in (
            (0, 3, 1, 2),
            (),
        )
        if (
            layout
            and groups == (1, 1)
            and tuple(window_strides) == (1, 1)
            and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
            and rhs.shape[0] % 2 == 1
            and rhs.shape[1] % 2 == 1
            and _is_same(padding, rhs.shape)
        ):
            return same(lhs, rhs)
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )

    return conv


flax_conv = _drop_in(conv_same)
flax_conv.__doc__ = "`lax.conv_general_dilated` for `flax.linen.Conv`, by `conv_same` where it applies."


def _is_same(padding: Any, kernel_shape: tuple) -> bool:
    if isinstance(padding, str):
        return padding.upper() == "SAME"
    pads = [tuple(p) for p in padding]
    return pads == [
        (kernel_shape[0] // 2, kernel_shape[0] // 2),
        (kernel_shape[1] // 2, kernel_shape[1] // 2),
    ]
