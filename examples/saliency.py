#!/usr/bin/env python
"""A saliency map: the gradient of a class score with respect to the input image.

    pip install -e ".[digits]" && python examples/saliency.py --out examples_out

Trains a small VGG-A for a few steps on scikit-learn's embedded digits (the
`digits` extra), takes a validation digit, and saves the image and
|d score / d pixel| side by side as PNGs. Under a minute on a CPU.
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import vgg_jax
from vgg_jax.training import data, sources
from vgg_jax.training import step as train

vgg_jax.apply_xla_cpu_flags()  # XLA:CPU's faster convolutions, before JAX starts a backend


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="examples_out")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    try:
        train_source, val_source = sources.load_digits(32)
    except ValueError as error:  # scikit-learn missing: say which extra brings it
        parser.exit(2, f"saliency.py: error: {error}\n")
    os.makedirs(args.out, exist_ok=True)
    mean = np.asarray(data.mean_rgb(train_source), np.float32)
    model = vgg_jax.VGG(
        config="A", width_scale=0.25, fc_width=128, num_classes=10, init_scheme="kaiming", dropout_rate=0.0
    )
    optimizer = train.paper_optimizer(1e-2)
    state = train.create_train_state(
        model, optimizer, jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    )
    step = train.single_device_step(model, optimizer)
    rng = np.random.default_rng(0)
    for index in range(args.steps):
        batch = rng.integers(0, len(train_source), 32)
        images = train_source.images[batch].astype(np.float32) - mean
        state, metrics = step(
            state,
            {"image": jnp.asarray(images), "label": jnp.asarray(train_source.labels[batch])},
            jax.random.key(1),
        )
    print(f"trained A for {args.steps} steps: last loss {float(metrics['loss']):.3f}")

    example = val_source[0]
    image = jnp.asarray(example["image"].astype(np.float32) - mean)[None]

    @jax.jit  # one compiled program, not one per operation
    def predict_and_saliency(params, image):
        score = lambda image, label: model.apply({"params": params}, image)[0, label]  # noqa: E731
        predicted = jnp.argmax(model.apply({"params": params}, image)[0])
        return predicted, jnp.abs(jax.grad(score)(image, predicted)).max(axis=-1)[0]

    predicted, saliency = predict_and_saliency(state.params, image)
    predicted = int(predicted)
    saliency = np.asarray(255 * saliency / (saliency.max() + 1e-12), np.uint8)
    big = lambda pixels: Image.fromarray(pixels).resize((128, 128), Image.NEAREST)  # noqa: E731
    big(example["image"]).save(os.path.join(args.out, "digit.png"))
    big(saliency).save(os.path.join(args.out, "digit_saliency.png"))
    print(
        f"label {example['label']}, predicted {predicted}; wrote {args.out}/digit.png and digit_saliency.png"
    )


if __name__ == "__main__":
    main()
