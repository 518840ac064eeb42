"""The host training loop: data, warm start, checkpoints, evaluation, logs.

`run(TrainConfig(...))` is what `scripts/train.py` calls. A workdir holds
`config.json`, `metrics.jsonl` (one JSON object per logged step, holding the
metrics averaged over the steps since the previous line, and one per
evaluation) and Orbax checkpoints under `checkpoints/` that carry the train
state, the data iterator's position and the learning-rate policy, so that
`resume=True` continues exactly. `vgg_jax.training.rundir` keeps that directory whole
through kills; SIGINT and SIGTERM stop the run after a checkpoint.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import json
import math
import os
import signal
import time
import warnings
from typing import Any, Callable, Collection, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from vgg_jax.model.configs import resolve_config
from vgg_jax.model.vgg import VGG, ModelConfig, model_from
from vgg_jax.research.warm_start import LayerShapeError, warm_start
from vgg_jax.training import curves, interrupt, parallel, rundir
from vgg_jax.training import data as data_lib
from vgg_jax.training import evaluate as evaluate_lib
from vgg_jax.training import step as train_lib
from vgg_jax.training.config import (
    TrainConfig,
    make_train_step,
    read_config,
    validate,
)
from vgg_jax.training.interrupt import StopRequested
from vgg_jax.util.files import write_text
from vgg_jax.util.images import NORMALIZE_MODES
from vgg_jax.util.options import flag, shown
from vgg_jax.weights import resolve, runs

WIDTHS = ("width_scale", "fc_width")  # ModelConfig fields that default to the --init-from source's


class NonFiniteError(RuntimeError):
    """The loss or the gradients became non-finite; the message names the step and the metric."""


class RunWarning(UserWarning):
    """Something in a workdir was repaired or skipped on resume (a torn log line, a damaged checkpoint)."""


# What a resumed run may change: the fields declared `resumable` (its length, evaluation and logging, the
# hardware). Everything else defines the run; a flag that changes it on --resume is refused.
# A run's settings by name, as its flags give them: TrainConfig's fields, and its model's in their place.
FIELDS = {
    field.name: field
    for field in (*dataclasses.fields(TrainConfig), *dataclasses.fields(ModelConfig))
    if field.name != "model"
}
RESUME_MAY_CHANGE = tuple(name for name, field in FIELDS.items() if field.metadata.get("resumable"))


def settings(cfg: TrainConfig) -> dict[str, Any]:
    """A run's settings by name (`FIELDS`): its model's beside its own."""
    return {
        name: getattr(cfg.model if name not in cfg.__dataclass_fields__ else cfg, name) for name in FIELDS
    }


def with_settings(cfg: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """`cfg` with settings changed by name (`FIELDS`), each in its place: the model's in `model`."""
    own = {name: value for name, value in changes.items() if name in cfg.__dataclass_fields__}
    model = {name: value for name, value in changes.items() if name not in own}
    return dataclasses.replace(cfg, **own, model=dataclasses.replace(cfg.model, **model))


def set_fields(cfg: TrainConfig) -> set[str]:
    """The settings of a TrainConfig built in code that differ from their defaults (what a library caller
    set)."""
    values = settings(cfg)
    return {
        name
        for name, field in FIELDS.items()
        if field.default is dataclasses.MISSING or values[name] != field.default
    }


def resumed_config(
    cfg: TrainConfig, given: Optional[Collection[str]] = None, saved: Optional[TrainConfig] = None
) -> TrainConfig:
    """The saved run's config (`saved`, else read from the workdir), with the fields the user gave on
    --resume (`given`; default: those set away from their defaults).

    A field the user did not give comes from the run, never from a default.
    A given field that defines the run (config, data, model, optimiser, ...)
    and differs from the run's is refused in one line naming both values.
    """
    saved = read_config(cfg.workdir) if saved is None else saved
    given = set(set_fields(cfg) if given is None else given) - {"workdir"}

    ours, theirs = settings(cfg), settings(saved)

    def same(field: str) -> bool:
        if field == "config":
            return resolve_config(ours[field]) == resolve_config(theirs[field])
        mine, run = ours[field], theirs[field]
        return mine == run or (isinstance(mine, (list, tuple)) and list(mine) == list(run or []))

    for field in sorted(given - set(RESUME_MAY_CHANGE)):
        if not same(field):
            raise ValueError(
                f"--resume: {flag(TrainConfig, field)} {shown(ours[field])} differs from the run's "
                f"{shown(theirs[field])} ({os.path.join(cfg.workdir, 'config.json')}); a resumed run keeps "
                f"its settings: drop {flag(TrainConfig, field)}, or start a new run with --overwrite or "
                "another --workdir"
            )
    changes = {field: ours[field] for field in given & set(RESUME_MAY_CHANGE)}
    return with_settings(dataclasses.replace(saved, workdir=cfg.workdir), changes)


def _check_writable(workdir: str) -> None:
    """Fails fast, with the true reason, on a workdir that cannot be written, before inputs are read.

    A probe file is created and removed in the workdir, or, for a new one
    (made only once the run's inputs are read), in its nearest existing
    parent; so the refusal gives the system's own reason: a read-only file
    system, a parent that is a file, no permission, a full disk.
    """
    import tempfile

    existing = os.path.abspath(workdir)
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise OSError(errno.ENOTDIR, f"{os.strerror(errno.ENOTDIR)} ({existing} is a file)")
        handle, probe = tempfile.mkstemp(prefix=".vgg_jax_probe.", dir=existing)
        try:
            os.write(handle, b"probe")
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as error:
        raise OSError(f"--workdir {workdir} is not writable: {error.strerror or error}") from None


def _make_workdir(workdir: str, log: Callable[[str], None]) -> None:
    """Makes the workdir; one line names the parent folders it makes too, so that a typo in a path shows."""
    missing = os.path.abspath(workdir)
    while not os.path.isdir(os.path.dirname(missing)):
        missing = os.path.dirname(missing)
    if missing != os.path.abspath(workdir):
        log(f"--workdir {workdir}: {missing} did not exist; made it and the folders below it")
    os.makedirs(workdir, exist_ok=True)


def load_params(workdir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The variables of a run's newest finished checkpoint, and its saved config (for warm starts).

    One-line errors name the file and the step when they cannot be read.
    """
    saved = read_config(workdir, "--init-from")
    _, state = runs.restore_state(workdir, "--init-from")
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    return variables, dataclasses.asdict(saved)


def build_model(cfg: TrainConfig, num_classes: int) -> VGG:
    """The VGG a run with this config trains (`model_from` its `model`)."""
    return model_from(cfg.model, config=cfg.config, num_classes=num_classes, dtype=cfg.dtype)


@contextlib.contextmanager
def _phase(log: Callable[[str], None], doing: str, say: bool = True) -> Iterator[None]:
    """Says what the run is doing before its first step, and how long that took (when `say`)."""
    if not say:
        yield
        return
    log(f"{doing} ...")
    begin = time.perf_counter()
    yield
    log(f"{doing}: {time.perf_counter() - begin:.1f} s")


def due(step: int, every: int, total: int) -> bool:
    """Whether something done every `every` steps (and at the last one) is due after `step` steps."""
    return step % every == 0 or step == total


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a run reads before it writes anything: its config, data, model, schedule and initial variables."""

    cfg: TrainConfig
    train_source: Any
    val_source: Any
    model: VGG
    variables: Any
    warm_report: Any
    local_batch: int
    steps_per_epoch: int
    schedule_steps: int  # `epochs` x steps per epoch: what the learning-rate schedule spans
    total_steps: int  # where the run stops: `max_steps`, when it comes first
    eval_every: int
    checkpoint_every: int
    eval_scales: list[int]
    workers: int  # --workers resolved ("auto": one per usable core, less one, for image folders)


def _warm_start(
    cfg: TrainConfig, source: Any, model: VGG, init_key: jax.Array, log: Callable[[str], None]
) -> tuple[Any, Any]:
    """The run's first variables from --init-from (`source`, resolved): a run (coarse-to-fine), a weights file
    or a name.

    From the same config every layer is copied (`matching`). fc8 is left out,
    and initialised anew, when the class counts differ, and fc6 when the
    source was built for another image size. Any other layer whose shapes
    differ is an error that names it, and so is copying nothing.
    """
    source_variables, source_config, what = source.variables, source.config, source.description
    source_params = source_variables["params"]
    if any(name.endswith("_bn") for name in source_params) and not cfg.model.batch_norm:
        raise ValueError(
            f"--init-from {what} has batch norm; set --batch-norm so that its BN layers are used"
        )
    source_classes = source_params["fc8"]["kernel"].shape[-1] if "fc8" in source_params else None
    exclude, notes = [], []
    if source_classes not in (None, model.num_classes):
        exclude.append("fc8")
        notes.append(f"fc8: the source has {source_classes} classes, this run {model.num_classes}")
    if "fc6" in source_params and source.image_size != cfg.image_size:
        exclude.append("fc6")
        notes.append(
            f"fc6: the source was built for {source.image_size} px images, this run {cfg.image_size}"
        )
    layers = "matching" if resolve_config(source_config) == cfg.config else cfg.warm_start_layers
    try:
        variables, report = warm_start(
            source_variables,
            source_config,
            cfg.config,
            init_key,
            layers=layers,
            exclude=exclude,
            image_size=cfg.image_size,
            **{
                field.name: getattr(model, field.name)
                for field in dataclasses.fields(model)
                if field.name not in ("config", "parent", "name")  # VGG's settings, the config aside
            },
        )
    except LayerShapeError as error:
        raise ValueError(
            f"--init-from {what}: layer {error.layer} has shapes {error.source_shapes} there but "
            f"{error.target_shapes} in this run; leave out --width-scale and --fc-width (they default to "
            "the source's) or give the source's"
        ) from None
    except ValueError as error:
        raise ValueError(f"--init-from {what}: {error}") from None
    log(f"--init-from {what}\n{report}")
    for note in notes:
        log(f"{note}: initialised anew")
    return variables, report


def _model_widths(cfg: TrainConfig, source: Any) -> TrainConfig:
    """`cfg` with --width-scale and --fc-width filled in: the --init-from weights' where not given, else
    `VGG`'s defaults."""
    defaults = {name: getattr(source.model if source is not None else VGG, name) for name in WIDTHS}
    widths = {name: defaults[name] for name in WIDTHS if getattr(cfg.model, name) is None}
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **widths))


def _which_stops(cfg: TrainConfig, steps_per_epoch: int) -> str:
    """One line for a `max_steps` that disagrees with `epochs`: which of the two stops the run."""
    length = cfg.epochs * steps_per_epoch
    epochs = f"--epochs {cfg.epochs} ({length} steps, {steps_per_epoch} per epoch)"
    if cfg.max_steps > length:
        return f"--max-steps {cfg.max_steps} is past the end of {epochs}: the run stops at step {length}"
    return (
        f"--max-steps {cfg.max_steps} stops the run before the end of {epochs}; the learning rate follows "
        f"the {length} steps of --epochs"
    )


def _plan(cfg: TrainConfig, resume: bool, log: Callable[[str], None]) -> _Plan:
    """Reads every input of a run (data, warm-start source) and builds its model; writes nothing."""
    largest = max(cfg.scale) if cfg.scale else cfg.image_size  # the training short side S never exceeds it
    with _phase(log, f"reading --data {cfg.data}"):
        train_source, val_source = data_lib.load_data(
            cfg.data, cfg.image_size, seed=cfg.seed, draft_short_side=largest
        )
    source = None
    if cfg.init_from and not resume:
        # a run is checked whole, as on --resume (one written by a newer version is refused), and its
        # config.json, read once, handed on
        run = None
        if resolve.describe(cfg.init_from) == "run":
            run = dataclasses.asdict(read_config(runs.run_of(cfg.init_from)[0], "--init-from"))
        source = resolve.resolve(cfg.init_from, cfg.config, argument="--init-from", run_config=run)
    if (
        cfg.preprocess is None
        and source is not None
        and source.kind != "run"
        and source.preprocess in NORMALIZE_MODES
    ):
        cfg = dataclasses.replace(cfg, preprocess=source.preprocess)
        log(f"--init-from {cfg.init_from}: pixels as those weights expect (--preprocess {cfg.preprocess})")
    plain = cfg.mean_rgb is not None or not cfg.subtract_mean or cfg.preprocess is not None
    mean = cfg.mean_rgb if plain else list(data_lib.mean_rgb(train_source))
    cfg = dataclasses.replace(_model_widths(cfg, source), config=resolve_config(cfg.config), mean_rgb=mean)
    parallel.check_global_batch(cfg.batch_size, parallel.make_mesh(cfg.devices))
    local_batch = cfg.batch_size // jax.process_count()  # each process loads its own rows of the global batch
    steps_per_epoch = len(train_source) // jax.process_count() // local_batch
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch size {cfg.batch_size} is larger than the {len(train_source)} training images"
        )
    schedule_steps = cfg.epochs * steps_per_epoch  # the run's length: the learning-rate schedule spans it
    total_steps = schedule_steps if cfg.max_steps is None else min(cfg.max_steps, schedule_steps)
    if cfg.max_steps is not None and cfg.max_steps != schedule_steps:
        log(_which_stops(cfg, steps_per_epoch))
    eval_every = cfg.eval_every or steps_per_epoch
    model = build_model(cfg, train_source.num_classes)
    init_key = jax.random.split(jax.random.key(cfg.seed))[0]
    warm_report = None
    with _phase(log, "initialising the model"):
        if source is not None:
            variables, warm_report = _warm_start(cfg, source, model, init_key, log)
        else:
            variables = jax.jit(model.init)(
                init_key, jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
            )
    workers = data_lib.auto_workers(cfg.workers, train_source)
    if workers:
        log(f"input: {workers} worker processes (--workers {cfg.workers})")
    return _Plan(
        cfg,
        train_source,
        val_source,
        model,
        variables,
        warm_report,
        local_batch,
        steps_per_epoch,
        schedule_steps,
        total_steps,
        eval_every,
        cfg.checkpoint_every or eval_every,
        cfg.eval_scales or [cfg.image_size],
        workers,
    )


def _start(
    cfg: TrainConfig,
    resume: bool,
    overwrite: bool,
    log: Callable[[str], None],
    lock: rundir.WorkdirLock,
    given: Optional[Collection[str]] = None,
    saved: Optional[TrainConfig] = None,
) -> tuple[_Plan, bool]:
    """Validates, reads every input, and only then writes: the workdir, --overwrite's removal of the old run,
    config.json (on resume: once a checkpoint restored, in `_prepare`).

    A start that fails leaves nothing behind (or only what an earlier run had).
    `lock` is taken before anything in the workdir is read for resuming or
    changed: at once for a folder holding a run, else when the folder is
    made. Returns the plan and whether the run resumes: `resume` on a workdir
    that holds no run yet starts it (one command serves a scheduler's first
    start and every restart); on resume the saved config wins but for the
    fields given (`resumed_config`).
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pick one")
    holds_run = rundir.holds_run(cfg.workdir)
    if holds_run and parallel.is_primary():
        lock.acquire()  # a run still writing the folder is refused before anything here reads or changes it
    if resume and not holds_run:
        log(f"--resume: {cfg.workdir} holds no run yet, so it starts now")
        resume = False
    if holds_run and not resume and not overwrite:
        raise ValueError(
            f"--workdir {cfg.workdir} already holds a run; pass --resume to continue it or --overwrite to "
            "replace it"
        )
    if resume:  # the saved config (read_config checks the file), with the fields given anew
        saved = read_config(cfg.workdir) if saved is None else saved
        cfg = resumed_config(cfg, given, saved)
    validate(cfg)  # the run's config, once, as it will run
    if not resume and cfg.init_from and resolve.describe(cfg.init_from) is None:
        raise resolve.unknown_spec(cfg.init_from, "--init-from")
    if parallel.is_primary():
        _check_writable(cfg.workdir)
    plan = _plan(cfg, resume, log)
    if resume:
        _check_resumed_length(plan, saved, set(set_fields(cfg) if given is None else given), log)
    parallel.barrier("vgg_jax.start.read")  # every process has read its inputs before process 0 deletes
    if parallel.is_primary():
        if not lock.held:
            _make_workdir(cfg.workdir, log)
            lock.acquire()
            if rundir.holds_run(cfg.workdir) and not overwrite:  # another start got here first
                raise ValueError(
                    f"--workdir {cfg.workdir} now holds a run, started while this one read its inputs"
                )
        if overwrite:
            rundir.remove_run(cfg.workdir)
    os.makedirs(cfg.workdir, exist_ok=True)
    if not resume:
        _write_config(plan)
    parallel.barrier("vgg_jax.start.written")
    return plan, resume


def _check_resumed_length(
    plan: _Plan, saved: TrainConfig, given: set[str], log: Callable[[str], None]
) -> None:
    """A resume's new length: a stop at or before the run's newest checkpoint is refused (nothing changed);
    another `epochs` is said in one line, with the learning rate before and after (the schedule spans it)."""
    cfg, steps = plan.cfg, runs.finished_steps(plan.cfg.workdir)
    newest = steps[-1] if steps else 0
    if newest and plan.total_steps <= newest and given & {"max_steps", "epochs"}:
        stops = {"max_steps": cfg.max_steps or plan.schedule_steps, "epochs": plan.schedule_steps}
        field = min((name for name in stops if stops[name] <= newest), key=lambda name: name not in given)
        limit = f"{flag(TrainConfig, field)} {getattr(cfg, field)}" + (
            f" (step {plan.schedule_steps})" if field == "epochs" else ""
        )
        if field not in given:
            limit = f"the run's {limit} (in its config.json)"
        raise ValueError(
            f"--resume: {limit} is at or before step {newest}, the run's newest checkpoint, where it goes on "
            f"from: give a later {flag(TrainConfig, field)} (nothing was changed)"
        )
    if cfg.epochs == saved.epochs:
        return
    old_length = saved.epochs * plan.steps_per_epoch
    line = (
        f"--resume: --epochs {saved.epochs} -> {cfg.epochs}: the run is {plan.schedule_steps} steps long, "
        f"was {old_length}; "
    )
    before, after = (_rate_at(cfg, length, newest) for length in (old_length, plan.schedule_steps))
    if before is None:
        log(line + f"the learning rate does not depend on the length (--lr-policy {cfg.lr_policy})")
    else:
        log(
            line + f"the learning rate at step {newest} is now {after:.4g}, was {before:.4g} (--lr-policy "
            f"{cfg.lr_policy} spans the whole run); config.json records the new length"
        )


def _rate_at(cfg: TrainConfig, length: int, step: int) -> Optional[float]:
    """The scheduled learning rate after `step` steps of a run `length` steps long; None when constant."""
    schedule = train_lib.learning_rate_schedule(cfg.lr_policy, cfg.learning_rate, length // cfg.accumulate)
    return float(schedule(step // cfg.accumulate)) if callable(schedule) else None


def _write_config(plan: _Plan) -> None:
    """config.json (process 0): the run's settings as it runs them; and its class names."""
    if parallel.is_primary():
        path = os.path.join(plan.cfg.workdir, "config.json")
        write_text(path, json.dumps(dataclasses.asdict(plan.cfg), indent=2))
        rundir.write_classes(plan.cfg.workdir, getattr(plan.train_source, "classes", None))


def restore(
    manager: Any,
    workdir: str,
    state: Any,
    shardings: Any,
    iterator: Any,
    plateau: train_lib.Plateau,
    warn: Callable[[str], None],
) -> tuple[Any, int, int]:
    """The newest checkpoint that restores, into (state, step, skipped); the iterator and plateau are set
    in place."""
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
    # Checkpoints written before the state held `ema_params` lack the field: restored as a dict of the rest.
    before_ema = {name: getattr(target, name) for name in ("step", "params", "batch_stats", "opt_state")}

    def args_for(step: int) -> Any:
        saved = manager.item_metadata(step)["state"]
        rundir.check_shapes(saved["params"], target.params, workdir, step)
        legacy = state.ema_params is None and "ema_params" not in saved
        return ocp.args.Composite(
            state=ocp.args.StandardRestore(before_ema if legacy else target),
            data=ocp.args.JsonRestore(),
            policy=ocp.args.JsonRestore(),
        )

    step, restored = rundir.restore_newest(manager, workdir, args_for, warn)
    if step is None:
        return state, 0, 0
    iterator.set_state(_iterator_state(restored.data).encode())
    plateau.state = restored.policy["plateau"]
    restored_state = restored.state
    if isinstance(restored_state, dict):
        restored_state = train_lib.TrainState(**restored_state)
    return restored_state, int(restored_state.step), int(restored.policy["skipped_nonfinite"])


def checkpoint(
    manager: Any,
    workdir: str,
    step: int,
    state: Any,
    position: bytes,
    plateau: train_lib.Plateau,
    skipped: int,
) -> None:
    """Checkpoint `step`: the train state, every process's data-iterator position (`position`: the iterator's
    state after the batch of `step`, not after the batches prefetched since) and the policy state."""
    data = {"iterators": parallel.gather_strings(position.decode())}
    rundir.save(manager, workdir, step, state, data, {"plateau": plateau.state, "skipped_nonfinite": skipped})


def nonfinite_policy(
    metrics: dict[str, float], step: int, skipped: int, allowed: int, workdir: str, log: Callable[[str], None]
) -> int:
    """Counts a step that the train step's guard skipped; `NonFiniteError` once more than `allowed` were."""
    name = next((n for n in ("loss", "grad_norm") if not math.isfinite(metrics[n])), "loss")
    skipped += 1
    if skipped > allowed:
        good = (runs.finished_steps(workdir) or [None])[-1]
        raise NonFiniteError(
            f"non-finite {name} ({metrics[name]}) at step {step}; training stopped"
            + (f" after skipping {skipped - 1} such steps (--skip-nonfinite {allowed})" if allowed else "")
            + ". "
            + (
                f"The last good checkpoint is step {good} in {workdir}/checkpoints."
                if good is not None
                else "No checkpoint was written."
            )
        )
    log(f"step {step}: non-finite {name} ({metrics[name]}); step skipped ({skipped} of {allowed} allowed)")
    return skipped


def evaluate_state(plan: _Plan, state: Any, method: str) -> dict[str, Any]:
    """Evaluates the state's variables: each process its shard of the validation set on one device, counts
    summed.

    In this process by default (the loader's reading threads): worker processes would start afresh, jax
    imported and all, at every periodic evaluation.
    """
    mean = None if plan.cfg.mean_rgb is None else tuple(plan.cfg.mean_rgb)
    val_loader = data_lib.make_loader(
        plan.val_source,
        data_lib.EvalTransform(max(plan.eval_scales), mean, plan.cfg.preprocess),
        plan.cfg.batch_size,
        seed=0,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        worker_count=0,
    )
    variables = {
        "params": state.eval_params,  # the EMA with --ema-decay
        **({"batch_stats": state.batch_stats} if plan.cfg.model.batch_norm else {}),
    }
    return evaluate_lib.evaluate(
        plan.model,
        parallel.to_local(variables),
        val_loader,
        method,
        plan.eval_scales,
        plan.cfg.image_size,
        reduce=parallel.sum_over_processes,
    )


class _Window:
    """The metrics of the steps since the last log line, and the images per second over them."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.images, self.clock = 0, time.perf_counter()

    def add(self, metrics: dict[str, float], images: int) -> None:
        self.images += images
        if not metrics["nonfinite"]:
            self.metrics.append(metrics)

    def flush(self, names: Sequence[str]) -> dict[str, float]:
        """The window's means (NaN when every step in it was skipped) and its rate; starts a new window."""
        mean = {
            n: float(np.mean([m[n] for m in self.metrics])) if self.metrics else math.nan
            for n in names
            if n != "nonfinite"
        }
        mean["images_per_s"] = self.images / (time.perf_counter() - self.clock)
        self.__init__()
        return mean


def _progress(total: int, completed: int, name: str) -> tuple[Progress, Any, bool]:
    """A progress bar on a terminal (process 0); `plain` is True where log lines must stand in for it."""
    console = Console()
    plain = parallel.is_primary() and not console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=False,
        console=console,
        disable=plain or not parallel.is_primary(),
    )
    return progress, progress.add_task(f"train {name}", total=total, completed=completed, status=""), plain


def run(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    warn: Optional[Callable[[str], None]] = None,
    given: Optional[Collection[str]] = None,
    saved: Optional[TrainConfig] = None,
) -> dict[str, Any]:
    """Trains, evaluates and checkpoints one run; returns the final summary.

    `given` names the fields the user gave on `--resume` (the command line's
    flags; default: those set away from their defaults); the rest come from
    the saved run (`saved`, where the caller has read it; else read here).
    `resume=True` on a workdir that holds no run yet starts it, so that one
    command serves a first start and every restart. `warn`
    gets one line per repair on resume (default: a `RunWarning`). The first
    SIGINT or SIGTERM stops the run after the current step and a checkpoint,
    raising `StopRequested`.
    """
    warn = warn or (lambda message: warnings.warn(message, RunWarning, stacklevel=3))
    lock = rundir.WorkdirLock(cfg.workdir)
    try:
        return _train(*_start(cfg, resume, overwrite, log, lock, given, saved), log, warn)
    finally:
        lock.release()


def _train(
    plan: _Plan, resume: bool, log: Callable[[str], None], warn: Callable[[str], None]
) -> dict[str, Any]:
    """The steps of a started run (`_start`), to its summary."""
    cfg, total = plan.cfg, plan.total_steps
    session = _prepare(plan, resume, log, warn)
    state, start, skipped, iterator = session.state, session.start, session.skipped, session.iterator
    metrics_log, board = session.metrics_log, session.board
    progress, task, plain = _progress(total, start, cfg.config)
    last, last_eval, window, logged = {}, None, _Window(), {}
    try:
        with interrupt.StopRequest(again=lambda: _saved(cfg.workdir)) as stop, progress:
            batches, pending = _prefetch(iterator, session.mesh), []
            first = f"starting {plan.workers} input workers" if plan.workers else "reading the first batch"
            for step in range(start, total):
                with _phase(log, first, step == start):
                    batch, position = next(batches)
                with _phase(log, "compiling the train step", step == start):
                    state, metrics = session.train_step(state, batch, session.dropout_key)
                done = step + 1
                # on the device: fetched once per window, so the host never waits within one
                pending.append((done, metrics))
                if due(done, cfg.log_every, total) or due(done, plan.eval_every, total):
                    drained, skipped = _drain(pending, window, skipped, cfg, log)
                    last = drained or last
                if due(done, cfg.log_every, total):
                    logged = window.flush(list(last))
                    _log_window(
                        metrics_log,
                        dict(logged),
                        done,
                        plan,
                        skipped,
                        getattr(iterator, "skipped", 0),
                        progress,
                        task,
                        log if plain else None,
                    )
                if due(done, plan.eval_every, total):
                    state, last_eval = _evaluate_and_adapt(
                        plan, state, session.shardings, session.plateau, metrics_log, done, log
                    )
                stopping = _agreed_stop(stop, done, cfg, plan)
                if due(done, plan.checkpoint_every, total) or stopping:
                    # nothing is saved past a step that stops the run
                    drained, skipped = _drain(pending, window, skipped, cfg, log)
                    last = drained or last
                    if (
                        board is not None
                    ):  # first: a kill once the checkpoint is whole finds its steps' events
                        board.flush()  # on disk (those past a checkpoint are purged on resume)
                    checkpoint(session.manager, cfg.workdir, done, state, position, session.plateau, skipped)
                if stopping:
                    raise StopRequested(
                        _stopped_message(stop.name or "another process's stop request", done, cfg.workdir),
                        stop.signum or signal.SIGTERM,
                    )
                progress.update(task, advance=1)
        final = _final_evaluation(plan, state, last_eval, metrics_log)
    finally:
        if hasattr(iterator, "close"):  # stops the input workers and frees their shared memory
            iterator.close()
        metrics_log.close()
        if board is not None:
            board.close()
        session.manager.wait_until_finished()
    if parallel.is_primary():
        curves.write_curves(cfg.workdir, rundir.read_metrics(metrics_log.path, warn), log)
    return _summary(plan, logged, skipped, final, log)


def _final_evaluation(
    plan: _Plan, state: Any, last_eval: Optional[dict[str, Any]], metrics_log: rundir.MetricsLog
) -> dict[str, Any]:
    """The run's final evaluation: the last periodic one, unless --eval asks for another method."""
    cfg = plan.cfg
    if cfg.eval_method == "center" and last_eval is not None:
        return last_eval
    final = evaluate_state(plan, state, cfg.eval_method)
    if cfg.eval_method != "center":
        metrics_log.write(
            {"step": plan.total_steps, "epoch": plan.total_steps / plan.steps_per_epoch, "eval": final}
        )
    return final


@dataclasses.dataclass
class _Session:
    """What a run's steps work with once its state is built, or restored on resume."""

    mesh: Any
    state: Any
    shardings: Any
    dropout_key: jax.Array
    plateau: train_lib.Plateau
    iterator: Any
    manager: Any
    train_step: Callable
    start: int
    skipped: int
    metrics_log: rundir.MetricsLog
    board: Optional[curves.TensorBoard]


def _prepare(plan: _Plan, resume: bool, log: Callable[[str], None], warn: Callable[[str], None]) -> _Session:
    """The mesh, the train state (restored on resume), the data iterator, the jitted step and the logs."""
    cfg = plan.cfg
    mesh = parallel.make_mesh(cfg.devices)
    optimizer, step_function = make_train_step(cfg, plan.model, plan.schedule_steps)
    state = parallel.put_state(
        train_lib.create_train_state(plan.model, optimizer, plan.variables, ema=cfg.ema_decay is not None),
        mesh,
        cfg.shard_fc,
    )
    shardings = parallel.state_sharding(state, mesh, cfg.shard_fc)
    dropout_key = parallel.put(jax.random.split(jax.random.key(cfg.seed))[1], parallel.replicated(mesh))
    plateau = train_lib.Plateau(patience=cfg.plateau_patience)
    iterator = _train_iterator(plan)
    if resume:
        rundir.tidy(cfg.workdir, warn)
    manager = runs.manager(cfg.workdir, cfg.keep)
    state, start, skipped = (
        restore(manager, cfg.workdir, state, shardings, iterator, plateau, warn) if resume else (state, 0, 0)
    )
    if resume:
        _write_config(plan)  # a checkpoint restored (or there was none): the run's length may have changed
        log(
            f"Resumed {cfg.workdir} at step {start}"
            if start
            else f"Resuming {cfg.workdir}: it holds no finished checkpoint yet, so training starts at step 0"
        )
    if cfg.ema_decay is not None:
        log(f"--ema-decay {cfg.ema_decay}: evaluations and exports use the parameters' moving average")
    train_step = parallel.jit_train_step(step_function, mesh, state, cfg.shard_fc)
    board = (
        curves.TensorBoard(cfg.workdir, start + 1 if resume else None, log) if parallel.is_primary() else None
    )
    metrics_log = rundir.MetricsLog(
        os.path.join(cfg.workdir, "metrics.jsonl"), start if resume else None, warn, board and board.write
    )
    return _Session(
        mesh,
        state,
        shardings,
        dropout_key,
        plateau,
        iterator,
        manager,
        train_step,
        start,
        skipped,
        metrics_log,
        board,
    )


def _agreed_stop(stop: interrupt.StopRequest, done: int, cfg: TrainConfig, plan: _Plan) -> bool:
    """Whether every process stops after step `done`: any process's stop request counts.

    With several processes that agreement is a collective, so it is reached
    only where the loop syncs anyway (log windows, evaluations, checkpoints)
    and the host never waits on the steps between them. One process stops
    after the step it was asked during.
    """
    if jax.process_count() == 1:
        return stop.requested
    boundary = any(
        due(done, every, plan.total_steps)
        for every in (cfg.log_every, plan.eval_every, plan.checkpoint_every)
    )
    return boundary and parallel.any_process(stop.requested)


# batches put on the devices ahead of the step that uses them, as Flax's and big_vision's loops do
PREFETCH = 2


def _prefetch(
    iterator: Any, mesh: Any, depth: int = PREFETCH
) -> Iterator[tuple[dict[str, jax.Array], bytes]]:
    """`(batch on the devices, the iterator's state after it)`, `depth` batches ahead.

    The host reads and transfers the next batches while the device runs the
    current step (the transfer is asynchronous). Each batch carries the
    iterator's position right after it, so a checkpoint records the batches
    consumed, not the ones prefetched: a resume continues the exact stream.
    """
    queue: collections.deque = collections.deque()
    while True:
        while len(queue) < depth:
            batch = next(iterator)
            queue.append((parallel.put_batch(batch, mesh), iterator.get_state()))
        yield queue.popleft()


def _drain(
    pending: list, window: "_Window", skipped: int, cfg: TrainConfig, log: Callable[[str], None]
) -> tuple[Optional[dict[str, float]], int]:
    """Fetches the metrics of the steps since the last fetch in one transfer, and applies the per-step rules
    in order.

    A non-finite step changed nothing on the device (the step's guard); here
    it is counted, and `NonFiniteError` names the first step past
    `--skip-nonfinite`, as before. The caller drains before every log line,
    evaluation and checkpoint, so nothing is saved past a step that stops
    the run. Returns the last step's metrics (None when nothing was
    pending) and the count of skipped steps.
    """
    if not pending:
        return None, skipped
    fetched = jax.device_get([metrics for _, metrics in pending])
    last = None
    for (done, _), metrics in zip(pending, fetched):
        last = {name: float(value) for name, value in metrics.items()}
        if last["nonfinite"]:
            skipped = nonfinite_policy(last, done, skipped, cfg.skip_nonfinite, cfg.workdir, log)
        window.add(last, cfg.batch_size)
    pending.clear()
    return last, skipped


def _train_iterator(plan: _Plan) -> Iterator[dict[str, np.ndarray]]:
    cfg = plan.cfg
    scale = None if cfg.scale is None else (cfg.scale[0] if len(cfg.scale) == 1 else tuple(cfg.scale))
    mean = None if cfg.mean_rgb is None else tuple(cfg.mean_rgb)
    # uint8 over the wire
    transform = data_lib.TrainTransform(
        cfg.image_size, scale, cfg.flip, cfg.pca_std, mean, cfg.preprocess, on_device=True
    )
    return iter(
        data_lib.make_loader(
            plan.train_source,
            transform,
            plan.local_batch,
            seed=cfg.seed,
            shuffle=True,
            worker_count=plan.workers,
        )
    )


def _log_window(
    metrics_log: rundir.MetricsLog,
    mean: dict[str, float],
    done: int,
    plan: _Plan,
    skipped: int,
    unreadable: int,
    progress: Progress,
    task: Any,
    plain_log: Optional[Callable[[str], None]],
) -> None:
    """One metrics.jsonl line for the window; the progress bar's status, or a plain line where there is no
    terminal."""
    rate = mean.pop("images_per_s")
    metrics_log.write(
        {
            "step": done,
            "epoch": done / plan.steps_per_epoch,
            **mean,
            "skipped_nonfinite": skipped,
            "skipped_images": unreadable,  # unreadable files passed over since this process started reading
            "images_per_s": rate,
        }
    )
    status = f"loss {mean['loss']:.3f} top1_error {mean['top1_error']:.3f} {rate:.0f} img/s"
    progress.update(task, status=status)
    if plain_log is not None:
        plain_log(f"step {done}/{plan.total_steps}: {status}")


def _evaluate_and_adapt(
    plan: _Plan,
    state: Any,
    shardings: Any,
    plateau: train_lib.Plateau,
    metrics_log: rundir.MetricsLog,
    done: int,
    log: Callable[[str], None],
) -> tuple[Any, dict[str, Any]]:
    """The periodic centre-crop evaluation, logged; the paper's policy divides the rate when accuracy
    stalls."""
    result = evaluate_state(plan, state, "center")
    metrics_log.write({"step": done, "epoch": done / plan.steps_per_epoch, "eval": result})
    if plan.cfg.lr_policy == "paper" and plateau.update(1 - result["top1_error"]):
        new_rate = float(train_lib.learning_rate(state.opt_state)) / plateau.factor
        state = parallel.reshard(train_lib.set_learning_rate(state, new_rate), shardings)
        log(f"step {done}: validation accuracy stopped improving; learning rate now {new_rate:g}")
    return state, result


def _saved(workdir: str) -> str:
    """What a run stopped at once leaves, for the last line it prints."""
    steps = runs.finished_steps(workdir)
    if not steps:
        return f"no checkpoint was written; {workdir} starts from step 0 when resumed"
    return (
        f"the step in progress is not saved; the newest checkpoint is step {steps[-1]} in "
        f"{runs.checkpoint_dir(workdir)}, where resuming continues"
    )


def _stopped_message(signal_name: str, step: int, workdir: str) -> str:
    return f"stopped by {signal_name} after step {step}; its checkpoint is in {runs.checkpoint_dir(workdir)}"


def _summary(
    plan: _Plan, logged: dict[str, float], skipped: int, final: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    """The run's summary, and its `Done:` line: the last log window's training means, as the last progress
    line shows them, and the final evaluation."""
    summary = {
        "workdir": plan.cfg.workdir,
        "config": plan.cfg.config,
        "steps": plan.total_steps,
        "final_loss": logged.get("loss"),
        "skipped_nonfinite": skipped,
        "final_train_top1_error": logged.get("top1_error"),
        "eval": final,
        "warm_start": None if plan.warm_report is None else dataclasses.asdict(plan.warm_report),
    }
    log(
        f"Done: {plan.cfg.config}, {plan.total_steps} steps; training loss "
        f"{_shown_float(summary['final_loss'])} and top-1 error "
        f"{_shown_float(summary['final_train_top1_error'])} (the last log window's means); "
        f"{final['method']} eval at Q={final['scales']}: "
        f"top-1 error {final['top1_error']:.2%}, top-5 error {final['top5_error']:.2%} on {final['count']} "
        f"image{'s' if final['count'] != 1 else ''}"
    )
    return summary


def _shown_float(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _iterator_state(saved: dict[str, Any]) -> str:
    """This process's data-iterator state from a checkpoint's `data` item."""
    states = saved["iterators"]
    if len(states) != jax.process_count():
        raise ValueError(
            f"the checkpoint was written by {len(states)} processes and this run has {jax.process_count()}; "
            "resume with the same number of processes (the data order depends on it)"
        )
    return states[jax.process_index()]
