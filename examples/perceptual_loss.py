#!/usr/bin/env python
"""Perceptual loss: make an image match another's VGG features by gradient descent on its pixels.

    pip install -e . && python examples/perceptual_loss.py --out examples_out

Uses `vgg_jax.perceptual_loss` (relu1_2, relu2_2, relu3_3, relu4_3, as in
style-transfer and LPIPS-like code) and `jax.grad` with respect to the image.
With no `--weights` the VGG is random (nothing is downloaded); pass a
torchvision .pth or Keras .h5 to use trained weights. Writes target.png,
start.png and result.png, and prints the loss as it falls. Under a minute on a CPU.
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import vgg_jax

vgg_jax.apply_xla_cpu_flags()  # XLA:CPU's faster convolutions, before JAX starts a backend


def save_png(image: jax.Array, path: str) -> None:
    Image.fromarray(np.asarray(jnp.clip(image * 255, 0, 255), np.uint8)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="examples_out")
    parser.add_argument("--weights", default=None, help="a torchvision .pth / Keras .h5 for config D")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    if args.weights:
        variables = vgg_jax.load(args.weights, "D")
    else:
        model = vgg_jax.VGG(config="D", width_scale=0.25, fc_width=64, num_classes=10)
        variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, args.size, args.size, 3)))
    # A target with structure: stripes and a disc; the start is noise.
    grid = jnp.linspace(-1, 1, args.size)
    yy, xx = jnp.meshgrid(grid, grid, indexing="ij")
    target = jnp.stack(
        [0.5 + 0.5 * jnp.sin(8 * xx), (xx**2 + yy**2 < 0.4).astype(jnp.float32), 0.5 + 0.5 * jnp.cos(6 * yy)],
        -1,
    )[None]
    image = jax.random.uniform(jax.random.key(1), target.shape)

    def loss(image):
        return vgg_jax.perceptual_loss(
            variables, vgg_jax.preprocess(image, "torch"), vgg_jax.preprocess(target, "torch")
        )

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    save_png(target[0], os.path.join(args.out, "target.png"))
    save_png(image[0], os.path.join(args.out, "start.png"))
    first = None
    for step in range(args.steps):
        value, grads = value_and_grad(image)
        first = float(value) if first is None else first
        # normalised steps
        image = jnp.clip(image - 0.5 * grads / (jnp.abs(grads).mean() + 1e-12) * 0.01, 0.0, 1.0)
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:3d}: perceptual loss {float(value):.4f}")
    save_png(image[0], os.path.join(args.out, "result.png"))
    print(f"loss {first:.4f} -> {float(value):.4f}; wrote {args.out}/target.png, start.png, result.png")


if __name__ == "__main__":
    main()
