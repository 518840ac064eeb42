"""Training: the train state, the pure jitted step, the paper's optimiser and learning-rate policies.

The step is `(state, batch, rng) -> (state, metrics)`, jitted with the state
donated; the dropout rng is folded with the step, so a run is a function of
its seed. The host loop that drives it (checkpoints, evaluation, logs) is in
`vgg_jax.training.loop`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from vgg_jax.model.vgg import VGG

LR_POLICIES = ("paper", "step", "cosine")


@flax.struct.dataclass
class TrainState:
    """Everything a step changes: the step count, parameters, BN statistics and optimiser state."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any = None  # the parameters' exponential moving average, with --ema-decay (else None)

    @property
    def eval_params(self) -> Any:
        """The parameters to evaluate and export: their EMA where one is kept, else the parameters."""
        return self.params if self.ema_params is None else self.ema_params


def create_train_state(
    model: VGG, optimizer: optax.GradientTransformation, variables: dict[str, Any], ema: bool = False
) -> TrainState:
    """A state at step 0 from initialised (or warm-started, or loaded) variables; `ema` keeps an
    exponential moving average of the parameters too, starting from them.

    The arrays are copied: the train step donates its state, and the caller's
    variables must survive that. One jitted call: run eagerly, every copy and
    every optimiser-state zero array would compile a program of its own.
    """

    @jax.jit
    def build(variables: dict[str, Any]) -> TrainState:
        params = jax.tree.map(jnp.copy, variables["params"])
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=jax.tree.map(jnp.copy, variables.get("batch_stats", {})),
            opt_state=optimizer.init(params),
            ema_params=jax.tree.map(jnp.copy, variables["params"]) if ema else None,
        )

    return build(variables)


def kernel_mask(params: Any) -> Any:
    """True for conv and FC kernels, False for biases and BN parameters."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(
    name: str = "sgd",
    learning_rate: float | optax.Schedule = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    param_labels: Optional[Callable[[Any], Any]] = None,
    accumulate: int = 1,
) -> optax.GradientTransformation:
    """The paper's SGD (`paper_sgd`) or AdamW, with the rate injected and, optionally, accumulation.

    - "sgd": momentum, and L2 decay added to the gradient (Sec. 3.1);
    - "adamw": Adam (b1 0.9, b2 0.999) with decoupled weight decay, as timm's and Keras's AdamW.

    Either way the decay applies to kernels only. The learning rate lives in
    the optimiser state (`inject_hyperparams`), so it is reported each step
    and the host can lower it on a plateau. `param_labels` (params -> a tree
    of "train" / "frozen", as `vgg_jax.training.finetune.param_labels`
    makes) freezes layers: theirs get no update and no optimiser state.
    `accumulate` N > 1 averages the gradients of N steps into one update
    (`optax.MultiSteps`), so that a batch of N x the step's fits.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")

    def update(learning_rate: Any) -> optax.GradientTransformation:
        if name == "sgd":
            return paper_sgd(learning_rate, weight_decay, momentum, param_labels=param_labels)
        return _frozen(optax.adamw(learning_rate, weight_decay=weight_decay, mask=kernel_mask), param_labels)

    optimizer = optax.inject_hyperparams(update)(learning_rate=learning_rate)
    return optimizer if accumulate == 1 else optax.MultiSteps(optimizer, every_k_schedule=accumulate)


def paper_optimizer(
    learning_rate: float | optax.Schedule = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decay_biases: bool = False,
    param_labels: Optional[Callable[[Any], Any]] = None,
) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay, as Sec. 3.1 (batch 256, lr 1e-2, momentum 0.9, decay 5e-4).

    The decay is added to the gradient before momentum (Caffe's and the
    paper's L2 penalty, not decoupled AdamW-style decay). By default it applies
    to conv and FC kernels only, the usual reading of the Caffe release (biases
    had decay_mult 0); `decay_biases=True` decays biases and BN parameters too.
    The rate is injected and `param_labels` freezes layers, as in `make_optimizer`.
    """

    def sgd(learning_rate):
        return paper_sgd(learning_rate, weight_decay, momentum, decay_biases, param_labels)

    return optax.inject_hyperparams(sgd)(learning_rate=learning_rate)


def paper_sgd(
    learning_rate: Any,
    weight_decay: Any = 5e-4,
    momentum: float = 0.9,
    decay_biases: bool = False,
    param_labels: Optional[Callable[[Any], Any]] = None,
) -> optax.GradientTransformation:
    """The update `paper_optimizer` injects its rate into: L2 decay added to the gradient, then SGD with
    momentum.

    For callers that inject more hyperparameters (`vgg_jax.experiments.coarse_to_fine.multiseed` injects
    the weight decay too, one per run).
    """
    trainable = optax.chain(
        optax.add_decayed_weights(weight_decay, mask=None if decay_biases else kernel_mask),
        optax.sgd(learning_rate, momentum=momentum),
    )
    return _frozen(trainable, param_labels)


def _frozen(
    trainable: optax.GradientTransformation, param_labels: Optional[Callable[[Any], Any]]
) -> optax.GradientTransformation:
    """`trainable` for the "train" layers; the "frozen" ones get no update and no optimiser state."""
    if param_labels is None:
        return trainable
    return optax.multi_transform({"train": trainable, "frozen": optax.set_to_zero()}, param_labels)


def learning_rate_schedule(
    policy: str, base: float, total_steps: int, step_every: Optional[int] = None, gamma: float = 0.1
) -> float | optax.Schedule:
    """The learning rate for a policy.

    - "paper": constant; the host divides it by 10 when validation accuracy
      stops improving (`Plateau`);
    - "step": multiplied by `gamma` every `step_every` steps (default: a third of the run);
    - "cosine": cosine decay from `base` to 0 over `total_steps`.
    """
    if policy == "paper":
        return base
    if policy == "step":
        every = step_every or max(1, total_steps // 3)
        return optax.exponential_decay(base, transition_steps=every, decay_rate=gamma, staircase=True)
    if policy == "cosine":
        return optax.cosine_decay_schedule(base, max(1, total_steps))
    raise ValueError(f"unknown learning-rate policy {policy!r}; choose from {', '.join(LR_POLICIES)}")


class Plateau:
    """The paper's policy: divide the learning rate by `factor` when validation accuracy stops improving.

    Driven from the host after each evaluation; at most `max_reductions` times
    (the paper: 3). Its state is a small dict, saved with checkpoints.
    """

    def __init__(
        self, factor: float = 10.0, patience: int = 3, max_reductions: int = 3, min_delta: float = 0.0
    ):
        self.factor, self.patience, self.max_reductions, self.min_delta = (
            factor,
            patience,
            max_reductions,
            min_delta,
        )
        self.state = {"best": None, "bad_evals": 0, "reductions": 0}

    def update(self, accuracy: float) -> bool:
        """Records an evaluation; True when the learning rate should now be divided."""
        state = self.state
        if state["best"] is None or accuracy > state["best"] + self.min_delta:
            state["best"], state["bad_evals"] = accuracy, 0
            return False
        state["bad_evals"] += 1
        if state["bad_evals"] >= self.patience and state["reductions"] < self.max_reductions:
            state["bad_evals"], state["reductions"] = 0, state["reductions"] + 1
            return True
        return False


def _injected(opt_state: Any) -> Any:
    """The `inject_hyperparams` state inside an optimiser state (under `optax.MultiSteps` when
    accumulating)."""
    return opt_state.inner_opt_state if isinstance(opt_state, optax.MultiStepsState) else opt_state


def learning_rate(opt_state: Any) -> jax.Array:
    """The learning rate held by an `inject_hyperparams` optimiser state (NaN if there is none)."""
    hyperparams = getattr(_injected(opt_state), "hyperparams", None)
    if hyperparams is None or "learning_rate" not in hyperparams:
        return jnp.asarray(jnp.nan, jnp.float32)
    return jnp.asarray(hyperparams["learning_rate"], jnp.float32)


def set_learning_rate(state: TrainState, value: float) -> TrainState:
    """A state whose injected learning rate is `value` (for host-driven policies)."""
    injected = _injected(state.opt_state)
    hyperparams = dict(injected.hyperparams)
    hyperparams["learning_rate"] = jnp.asarray(value, jnp.asarray(hyperparams["learning_rate"]).dtype)
    injected = injected._replace(hyperparams=hyperparams)
    if isinstance(state.opt_state, optax.MultiStepsState):
        return state.replace(opt_state=state.opt_state._replace(inner_opt_state=injected))
    return state.replace(opt_state=injected)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """The mean cross-entropy; `label_smoothing` eps spreads eps of each target over all classes
    (`optax.smooth_labels`)."""
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    targets = optax.smooth_labels(
        jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32), label_smoothing
    )
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def topk_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.mean(jnp.any(top == labels[:, None], axis=-1))


def train_step(
    model: VGG,
    optimizer: optax.GradientTransformation,
    pixels: Optional[Callable[[Any], jax.Array]] = None,
    label_smoothing: float = 0.0,
    ema_decay: Optional[float] = None,
) -> Callable:
    """The train step: a pure `(state, batch, rng) -> (state, metrics)`, not yet jitted.

    `batch` is `{"image": (N, H, W, 3) float, "label": (N,) int}`, or what
    `pixels(batch)` turns into float images on the device (uint8 crops and
    their colour shift: `vgg_jax.training.data.device_pixels`). The dropout
    rng is `fold_in(rng, state.step)`. Metrics: loss, top1_error, top5_error (as the evaluation's),
    grad_norm (global L2 norm), learning_rate, and nonfinite (1.0 when the loss
    or the gradients were NaN or Inf: then the step left params, BN statistics
    and optimizer state as they were and only counted the step).
    `label_smoothing` smooths the targets of the loss; `ema_decay` D updates
    the state's `ema_params` to d x EMA + (1 - d) x params after each update
    of the parameters, d = `ema_warmup(D, updates so far)` (a state made with
    `create_train_state(..., ema=True)`).

    This is the one step: `single_device_step` jits it for one device, the loop
    and `vgg_jax.training.parallel.jit_train_step` for a mesh, and the benchmark's
    train-step mode lowers it ahead of time.
    """

    def step(
        state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        dropout_rng = jax.random.fold_in(rng, state.step)
        images = batch["image"] if pixels is None else pixels(batch)

        def loss_fn(params):
            variables = {"params": params}
            if model.batch_norm:
                variables["batch_stats"] = state.batch_stats
                logits, updates = model.apply(
                    variables, images, train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"]
                )
                loss = cross_entropy(logits, batch["label"], label_smoothing)
                return loss, (logits, updates["batch_stats"])
            logits = model.apply(variables, images, train=True, rngs={"dropout": dropout_rng})
            return cross_entropy(logits, batch["label"], label_smoothing), (logits, state.batch_stats)

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        grad_norm = _global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        metrics = {
            "loss": loss,
            "top1_error": 1.0 - topk_accuracy(logits, batch["label"], 1),
            "top5_error": 1.0 - topk_accuracy(logits, batch["label"], 5),
            "grad_norm": grad_norm,
            "learning_rate": learning_rate(opt_state),  # the rate this step used
            "nonfinite": jnp.logical_not(finite).astype(jnp.float32),
        }
        # A step whose loss or gradients are not finite changes nothing but the step count:
        # the host decides whether to stop or to go on (`--skip-nonfinite`).
        new_params = optax.apply_updates(state.params, updates)
        ema_params = _ema_update(state, opt_state, new_params, ema_decay)
        updated = (new_params, batch_stats, opt_state, ema_params)
        kept = (state.params, state.batch_stats, state.opt_state, state.ema_params)
        params, batch_stats, opt_state, ema_params = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), updated, kept
        )
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            ema_params=ema_params,
        )
        return new_state, metrics

    return step


def _ema_update(state: TrainState, opt_state: Any, new_params: Any, decay: Optional[float]) -> Any:
    """The state's parameter EMA after this step (None without one): moved only by a step that updated
    the parameters, with `ema_warmup`'s decay."""
    if state.ema_params is None:
        return None
    if isinstance(opt_state, optax.MultiStepsState):
        # with accumulation, only the step that ends a group updates the parameters
        updated_now = (opt_state.mini_step == 0) & (opt_state.gradient_step > 0)
        updates_done = opt_state.gradient_step
    else:
        updated_now, updates_done = jnp.asarray(True), state.step + 1
    rate = jnp.where(updated_now, ema_warmup(decay, updates_done), 1.0)
    return jax.tree.map(lambda ema, new: rate * ema + (1 - rate) * new, state.ema_params, new_params)


def ema_warmup(decay: float, updates: jax.Array) -> jax.Array:
    """The EMA's decay after `updates` updates: min(decay, (1 + n) / (10 + n)), timm's warm-up, so that
    an average of a short run (or of its first evaluations) is not still its initialisation."""
    updates = jnp.asarray(updates, jnp.float32)
    return jnp.minimum(decay, (1.0 + updates) / (10.0 + updates))


def single_device_step(model: VGG, optimizer: optax.GradientTransformation) -> Callable:
    """`train_step` jitted for one device, with the state donated (research code; a run's own step is
    `vgg_jax.training.config.make_train_step`'s, jitted for its devices by `parallel.jit_train_step`)."""
    return jax.jit(train_step(model, optimizer), donate_argnums=0)


def _global_norm(tree: Any) -> jax.Array:
    """Global L2 norm (optax.tree.norm where this optax has it, else the older global_norm)."""
    norm = getattr(getattr(optax, "tree", None), "norm", None)
    return norm(tree) if norm is not None else optax.global_norm(tree)
