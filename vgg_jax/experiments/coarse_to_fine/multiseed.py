"""Many small training runs at once: one model, several instances (seeds or settings) under `jax.vmap`.

The coarse-to-fine experiment trains every arm for several seeds, and its
recipe sweep trains A under many settings. On small images one run leaves
an accelerator (or two CPU cores) mostly idle, so the instances of one
model are stacked on a leading axis and stepped together: one compile per
model, one dispatch per chunk of steps (`lax.scan`), and each instance still
its own run. Instance i has its own parameters, data order, augmentation,
dropout stream and learning-rate table, all functions of its seed, so an arm
that reuses a seed sees exactly the data another arm saw with it.

The step is `vgg_jax.training.step.train_step`, the project's one train step; the
learning rate is set from a host-computed table before each step (linear
warm-up, then cosine decay), so instances with different peak rates share
one compiled function.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vgg_jax.model.vgg import VGG
from vgg_jax.training import step as train


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How every run of the experiment trains: SGD with momentum, warm-up then cosine decay.

    Attributes:
        learning_rate: peak learning rate, reached after the warm-up.
        warmup_steps: linear warm-up from 0 (0: start at the peak).
        batch_size: images per step, per instance.
        weight_decay: L2 penalty on kernels (added to the gradient, as in the paper).
        momentum: SGD momentum (the paper's 0.9).
        dropout_rate: dropout after fc6 and fc7 (the paper's 0.5).
        shift: random translation of each training image by up to this many
            pixels in each direction (zero padding); 0 turns it off.
    """

    learning_rate: float = 0.02
    warmup_steps: int = 50
    batch_size: int = 32
    weight_decay: float = 5e-4
    momentum: float = 0.9
    dropout_rate: float = 0.5
    shift: int = 2

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        for name in ("warmup_steps", "shift"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")


@dataclasses.dataclass(frozen=True)
class Data:
    """Images in memory, standardised (zero mean, unit std over the training images), NHWC float32."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray

    @classmethod
    def from_uint8(
        cls,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        val_images: np.ndarray,
        val_labels: np.ndarray,
    ) -> "Data":
        """Standardises with the training images' mean and std (one number each: the digits are grey)."""
        mean, std = float(train_images.mean()), float(train_images.std())

        def standardise(images: np.ndarray) -> np.ndarray:
            return ((images.astype(np.float32) - mean) / std).astype(np.float32)

        return cls(
            standardise(train_images),
            train_labels.astype(np.int32),
            standardise(val_images),
            val_labels.astype(np.int32),
        )


def learning_rates(recipe: Recipe, steps: int) -> np.ndarray:
    """The rate of each of `steps` steps: linear warm-up to the peak, then cosine decay to 0 at `steps`."""
    step = np.arange(steps, dtype=np.float64)
    warmup = max(1, recipe.warmup_steps)
    ramp = np.minimum(1.0, (step + 1) / warmup) if recipe.warmup_steps else np.ones(steps)
    decay_steps = max(1, steps - recipe.warmup_steps)
    progress = np.clip((step - recipe.warmup_steps) / decay_steps, 0.0, 1.0)
    return (recipe.learning_rate * ramp * 0.5 * (1 + np.cos(np.pi * progress))).astype(np.float32)


def data_order(seed: int, num_examples: int, batch_size: int, steps: int) -> np.ndarray:
    """(steps, batch_size) training indices: a fresh permutation per epoch, a function of the seed only."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // num_examples)
    order = np.concatenate([rng.permutation(num_examples) for _ in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def optimizer(momentum: float) -> optax.GradientTransformation:
    """The paper's SGD (`train.paper_optimizer`) with the rate and the decay as per-instance state."""

    def sgd(learning_rate, weight_decay):
        return train.paper_sgd(learning_rate, weight_decay, momentum)

    return optax.inject_hyperparams(sgd)(learning_rate=0.0, weight_decay=0.0)


def _shift_images(images: jax.Array, key: jax.Array, shift: int) -> jax.Array:
    """Each image moved by its own random offset of up to `shift` pixels (zero padding)."""
    if shift == 0:
        return images
    size = images.shape[1]
    padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * shift + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (size, size, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


@functools.lru_cache(maxsize=None)
def _chunk(model: VGG, momentum: float, shift: int):
    """A jitted `(states, images, labels, order, rates, keys) -> (states, losses)` over instances and steps.

    `order` is (K, S, B) indices, `rates` (K, S), `keys` (S,) per-instance base
    keys. Cached per model and recipe settings, so every arm with the same
    model shape shares one compiled chunk.
    """
    step = train.train_step(model, optimizer(momentum))

    def one(state, images, labels, indices, rate, key):
        state = train.set_learning_rate(state, rate)
        data_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
        batch = {"image": _shift_images(images[indices], data_key, shift), "label": labels[indices]}
        return step(state, batch, dropout_key)

    def chunk(states, images, labels, order, rates, keys):
        def body(states, xs):
            indices, rate = xs
            states, metrics = jax.vmap(one, in_axes=(0, None, None, 0, 0, 0))(
                states, images, labels, indices, rate, keys
            )
            return states, (metrics["loss"], metrics["nonfinite"])

        return jax.lax.scan(body, states, (order, rates))

    return jax.jit(chunk, donate_argnums=0)


@functools.lru_cache(maxsize=None)
def _evaluate(model: VGG):
    """A jitted `(params, batch_stats, images, labels) -> (S,) top-1 accuracy`, over instances."""

    def accuracy(params, batch_stats, images, labels):
        variables = {"params": params, **({"batch_stats": batch_stats} if model.batch_norm else {})}
        logits = model.apply(variables, images, train=False)
        return jnp.mean(jnp.argmax(logits, -1) == labels)

    return jax.jit(jax.vmap(accuracy, in_axes=(0, 0, None, None)))


def stack(trees: Sequence[Any]) -> Any:
    """Stacks per-instance pytrees on a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, index: int) -> Any:
    """Instance `index` of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def init_states(
    model: VGG, variables: Any, momentum: float, weight_decay: Sequence[float]
) -> train.TrainState:
    """Stacked train states from stacked variables, each instance with its own weight decay."""
    opt = optimizer(momentum)
    states = jax.vmap(lambda v: train.create_train_state(model, opt, v))(variables)
    hyperparams = dict(states.opt_state.hyperparams, weight_decay=jnp.asarray(weight_decay, jnp.float32))
    return states.replace(opt_state=states.opt_state._replace(hyperparams=hyperparams))


def train_instances(
    model: VGG,
    variables: Any,
    data: Data,
    seeds: Sequence[int],
    steps: int,
    eval_every: int,
    recipes: Sequence[Recipe],
    log: Optional[Any] = None,
) -> tuple[Any, dict[str, Any]]:
    """Trains stacked instances of `model` for `steps` steps; evaluates every `eval_every`.

    Args:
        model: the model shared by every instance (its dropout rate is used as is).
        variables: stacked initial variables ({"params", maybe "batch_stats"}), one per instance.
        data: training and validation images.
        seeds: one per instance: data order, augmentation and dropout follow it.
        steps: steps per instance; a multiple of `eval_every`.
        eval_every: steps between validation evaluations (also at step 0).
        recipes: one per instance; they must share batch size, momentum and shift.
        log: called with a line after each evaluation, if given.

    Returns:
        (final stacked variables, curves): "step" (E,), "val_top1" (E, S) and
        "loss" (E, S): the mean training loss over the steps before each
        evaluation (NaN at step 0), and "nonfinite_steps" (S,).
    """
    if steps % eval_every:
        raise ValueError(f"steps ({steps}) must be a multiple of eval_every ({eval_every})")
    # the init does not change the step: one compile per model shape
    model = model.clone(init_scheme="glorot")
    first = recipes[0]
    if len(recipes) != len(seeds) or any(
        (r.batch_size, r.momentum, r.shift) != (first.batch_size, first.momentum, first.shift)
        for r in recipes
    ):
        raise ValueError("one recipe per seed, all with the same batch_size, momentum and shift")
    states = init_states(model, variables, first.momentum, [r.weight_decay for r in recipes])
    order = np.stack(
        [data_order(seed, len(data.train_labels), first.batch_size, steps) for seed in seeds], axis=1
    )
    rates = np.stack([learning_rates(r, steps) for r in recipes], axis=1)
    keys = jnp.stack([jax.random.key_data(jax.random.key(seed)) for seed in seeds])
    keys = jax.vmap(jax.random.wrap_key_data)(keys)
    chunk, evaluate = _chunk(model, first.momentum, first.shift), _evaluate(model)
    train_images, train_labels = jnp.asarray(data.train_images), jnp.asarray(data.train_labels)
    val_images, val_labels = jnp.asarray(data.val_images), jnp.asarray(data.val_labels)
    curves = {"step": [], "val_top1": [], "loss": []}
    nonfinite = np.zeros(len(seeds))
    for start in range(0, steps + 1, eval_every):
        if start:
            window = slice(start - eval_every, start)
            states, (losses, bad) = chunk(
                states, train_images, train_labels, order[window], rates[window], keys
            )
            curves["loss"].append(np.asarray(losses).mean(axis=0))
            nonfinite += np.asarray(bad).sum(axis=0)
        else:
            curves["loss"].append(np.full(len(seeds), np.nan))
        accuracy = np.asarray(evaluate(states.params, states.batch_stats, val_images, val_labels))
        curves["step"].append(start)
        curves["val_top1"].append(accuracy)
        if log is not None:
            log(f"step {start:>5}: val top-1 {' '.join(f'{a:.3f}' for a in accuracy)}")
    final = {"params": states.params, **({"batch_stats": states.batch_stats} if model.batch_norm else {})}
    result = {key: np.asarray(value) for key, value in curves.items()}
    result["nonfinite_steps"] = nonfinite
    return final, result
