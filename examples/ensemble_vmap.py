#!/usr/bin/env python
"""Parameters are plain pytrees: run an ensemble of VGGs with one `jax.vmap`.

    pip install -e . && python examples/ensemble_vmap.py --members 4 --out examples_out

Initialises N parameter sets at once (vmap over init keys), stacks them on a
leading axis, and evaluates the whole ensemble, and its per-member gradients,
in one vmapped call; checks it against a Python loop, and writes the
ensemble's logits and averaged probabilities to OUT/ensemble.npz. Under a
minute on a CPU.
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

import vgg_jax

vgg_jax.apply_xla_cpu_flags()  # XLA:CPU's faster convolutions, before JAX starts a backend


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--out", default="examples_out", help="folder for ensemble.npz")
    args = parser.parse_args()
    if args.members < 1:
        parser.error(f"--members must be at least 1, got {args.members}")

    model = vgg_jax.VGG(config="B", width_scale=0.125, fc_width=64, num_classes=10)
    images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    labels = jnp.arange(8) % 10
    keys = jax.random.split(jax.random.key(1), args.members)
    ensemble = jax.jit(jax.vmap(lambda key: model.init(key, images[:1])["params"]))(keys)
    print("stacked fc8 kernel:", ensemble["fc8"]["kernel"].shape)

    def logits(params):
        return model.apply({"params": params}, images)

    def loss(params):
        return -jnp.mean(jax.nn.log_softmax(logits(params))[jnp.arange(8), labels])

    all_logits = jax.jit(jax.vmap(logits))(ensemble)  # (members, batch, classes)
    all_grads = jax.jit(jax.vmap(jax.grad(loss)))(ensemble)
    one = jax.jit(logits)  # the same function, one member at a time
    looped = jnp.stack([one(jax.tree.map(lambda leaf, i=i: leaf[i], ensemble)) for i in range(args.members)])
    np.testing.assert_allclose(all_logits, looped, rtol=1e-5, atol=1e-5)
    mean_probs = jax.nn.softmax(all_logits).mean(axis=0)
    print(
        f"ensemble of {args.members}: logits {all_logits.shape}, per-member conv1_1 grads "
        f"{all_grads['conv1_1']['kernel'].shape}"
    )
    print(
        f"ensemble prediction for the first image: class {int(mean_probs[0].argmax())}; vmap matches the loop"
    )
    os.makedirs(args.out, exist_ok=True)
    np.savez(
        os.path.join(args.out, "ensemble.npz"),
        logits=np.asarray(all_logits),
        mean_probs=np.asarray(mean_probs),
    )
    print(f"wrote {os.path.join(args.out, 'ensemble.npz')}")


if __name__ == "__main__":
    main()
