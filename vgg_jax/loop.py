"""The host training loop: data, warm start, checkpoints, evaluation, logs.

`run(TrainConfig(...))` is what `scripts/train.py` calls. A workdir holds
`config.json`, `metrics.jsonl` (one JSON object per logged step, holding the
metrics averaged over the steps since the previous line, and one per
evaluation) and Orbax checkpoints under `checkpoints/` that carry the train
state, the data iterator's position and the learning-rate policy, so that
`resume=True` continues exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from vgg_jax import data as data_lib
from vgg_jax import evaluate as evaluate_lib
from vgg_jax import parallel
from vgg_jax import train as train_lib
from vgg_jax.configs import resolve_config
from vgg_jax.model import COMPUTE_DTYPES, INIT_SCHEMES, VGG
from vgg_jax.report import write_text
from vgg_jax.warm_start import warm_start

DTYPES = COMPUTE_DTYPES


class NonFiniteError(RuntimeError):
    """The loss or the gradients became non-finite; the message names the step and the metric."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only, ...); the last complete one is kept."""


@dataclasses.dataclass
class TrainConfig:
    """One training run; saved as the workdir's config.json."""

    workdir: str
    config: str = "A"
    data: str = "digits"
    image_size: int = 32
    epochs: int = 1
    batch_size: int = 64
    max_steps: Optional[int] = None  # stop earlier than `epochs` (tests, experiments)
    learning_rate: float = 1e-2
    lr_policy: str = "paper"
    plateau_patience: int = 3  # evaluations without improvement before the paper's policy divides the rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dtype: str = "float32"
    width_scale: float = 1.0
    fc_width: int = 4096
    dropout_rate: float = 0.5
    batch_norm: bool = False
    init_scheme: str = "kaiming"  # trains fastest from scratch here; the model's own default is Glorot
    seed: int = 0
    scale: Optional[list[int]] = None  # [S] or [S_min, S_max]; None keeps the image size
    flip: bool = True
    pca_std: float = 0.0
    subtract_mean: bool = True
    mean_rgb: Optional[list[float]] = None  # computed from the training set when None
    eval_method: str = "center"
    eval_scales: Optional[list[int]] = None  # default [image_size]
    eval_every: int = 0  # steps; 0 means once per epoch
    checkpoint_every: int = 0  # steps; 0 means at each evaluation
    keep: int = 3
    log_every: int = 10
    workers: int = 0
    init_from: Optional[str] = None
    warm_start_layers: str = "paper"
    skip_nonfinite: int = 0  # steps with a non-finite loss or gradient that are skipped (and counted) before stopping
    devices: Optional[int] = None  # all devices when None; batch_size is the global batch, split over them
    shard_fc: bool = False  # split the FC kernels and their optimizer state over the devices
    remat: bool = False  # recompute each conv block in the backward pass (less memory, more time)


def _flag(field: str) -> str:
    """The command-line flag of a TrainConfig field, for error messages."""
    return "--" + {"learning_rate": "lr", "dropout_rate": "dropout", "init_scheme": "init", "eval_method": "eval"}.get(
        field, field
    ).replace("_", "-")


def validate(cfg: TrainConfig) -> None:
    """Refuses a config that cannot run, before anything is written; the message names the flag."""
    def integer(field: str, minimum: int, optional: bool = False, maximum: int = 2**31 - 1) -> None:
        value = getattr(cfg, field)
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
            raise ValueError(f"{_flag(field)} must be an integer from {minimum} to {maximum}, got {value!r}")

    def number(field: str, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = True) -> None:
        value = getattr(cfg, field)
        ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise ValueError(f"{_flag(field)} must be a finite number in {interval}, got {value!r}")

    def choice(field: str, options: Sequence[str]) -> None:
        if getattr(cfg, field) not in options:
            raise ValueError(f"{_flag(field)} must be one of {', '.join(options)}, got {getattr(cfg, field)!r}")

    if not isinstance(cfg.workdir, str) or not cfg.workdir.strip():
        raise ValueError(f"--workdir must be a directory path, got {cfg.workdir!r}")
    resolve_config(cfg.config)
    integer("image_size", 32, maximum=8192)
    for field in ("epochs", "batch_size", "plateau_patience", "fc_width", "keep", "log_every"):
        integer(field, 1)
    for field in ("eval_every", "checkpoint_every", "workers", "skip_nonfinite"):
        integer(field, 0)
    integer("seed", 0, maximum=2**32 - 1)
    integer("max_steps", 1, optional=True)
    integer("devices", 1, optional=True)
    number("learning_rate", 0, low_open=True)
    number("momentum", 0, 1)
    number("weight_decay", 0)
    number("width_scale", 0, low_open=True)
    number("dropout_rate", 0, 1)
    number("pca_std", 0)
    choice("lr_policy", train_lib.LR_POLICIES)
    choice("dtype", tuple(DTYPES))
    choice("init_scheme", INIT_SCHEMES)
    choice("eval_method", evaluate_lib.METHODS)
    if cfg.scale is not None:
        scale = list(cfg.scale)
        if not 1 <= len(scale) <= 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < cfg.image_size for s in scale) or scale != sorted(scale):
            raise ValueError(f"--scale must be S or S_min,S_max with {cfg.image_size} (the image size) <= S_min <= S_max, got {cfg.scale!r}")
    if cfg.eval_scales is not None and (
        not cfg.eval_scales or any(isinstance(q, bool) or not isinstance(q, int) or q < cfg.image_size for q in cfg.eval_scales)
    ):
        raise ValueError(f"--eval-scales must be test scales Q of at least the image size {cfg.image_size}, got {cfg.eval_scales!r}")
    if cfg.mean_rgb is not None and (len(cfg.mean_rgb) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in cfg.mean_rgb)):
        raise ValueError(f"mean_rgb must be three finite numbers (0-255), got {cfg.mean_rgb!r}")
    if cfg.init_from is not None and (not isinstance(cfg.init_from, str) or not cfg.init_from.strip()):
        raise ValueError(f"--init-from needs the workdir of a run, got {cfg.init_from!r}")
    if cfg.init_from and not os.path.isfile(os.path.join(cfg.init_from, "config.json")):
        raise ValueError(f"--init-from {cfg.init_from} holds no run (no config.json there); give the workdir of a finished run")
    if not isinstance(cfg.data, str) or not (cfg.data in ("digits", "synthetic") or cfg.data.startswith("folder:")):
        raise ValueError(f"unknown --data {cfg.data!r}; use digits, synthetic or folder:PATH")


def _load_config(workdir: str) -> dict[str, Any]:
    with open(os.path.join(workdir, "config.json")) as file:
        return json.load(file)


def _holds_run(workdir: str) -> bool:
    return any(os.path.exists(os.path.join(workdir, name)) for name in ("config.json", "checkpoints", "metrics.jsonl"))


def prepare_workdir(cfg: TrainConfig, resume: bool, overwrite: bool) -> TrainConfig:
    """Refuses to touch an existing run unless told; on resume the saved config wins (but for epochs and max_steps)."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pick one")
    holds_run = _holds_run(cfg.workdir)
    parallel.barrier("vgg_jax.prepare_workdir.looked")  # every process has looked before process 0 may delete
    if holds_run:
        if resume:
            saved = TrainConfig(**_load_config(cfg.workdir))
            # The length of the run and the hardware may change on resume; the rest is the saved run's.
            return dataclasses.replace(
                saved, workdir=cfg.workdir, epochs=cfg.epochs, max_steps=cfg.max_steps, devices=cfg.devices,
                shard_fc=cfg.shard_fc, remat=cfg.remat,
            )
        if not overwrite:
            raise ValueError(
                f"workdir {cfg.workdir} already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        for name in ("checkpoints", "metrics.jsonl", "config.json"):
            path = os.path.join(cfg.workdir, name)
            if not parallel.is_primary():
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
    elif resume:
        raise ValueError(f"--resume: workdir {cfg.workdir} holds no run to resume")
    try:
        os.makedirs(cfg.workdir, exist_ok=True)
        if parallel.is_primary():
            _check_writable(cfg.workdir)
    except OSError as error:
        raise OSError(f"workdir {cfg.workdir} is not writable: {error.strerror or error}") from None
    parallel.barrier("vgg_jax.prepare_workdir.done")
    return cfg


def _check_writable(directory: str) -> None:
    """Creates and removes a probe file: fails fast on a read-only or full disk."""
    import tempfile

    handle, probe = tempfile.mkstemp(prefix=".vgg_jax_probe.", dir=directory)
    try:
        os.write(handle, b"probe")
    finally:
        os.close(handle)
        os.unlink(probe)


def _checkpoint_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False)
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(), "policy": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options, item_handlers=handlers)


def _on_one_device(manager: ocp.CheckpointManager, step: int) -> Any:
    """A restore target for a checkpoint's state, whole on this process's first device.

    Whatever devices and processes wrote it (a multi-host run, say): Orbax
    refuses to guess a target for another topology.
    """
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = manager.item_metadata(step)["state"]
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), metadata)


def load_params(workdir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The variables of a run's latest checkpoint, and its saved config (for warm starts)."""
    saved = _load_config(workdir)
    cfg = TrainConfig(**saved)
    manager = _checkpoint_manager(workdir, cfg.keep)
    step = manager.latest_step()
    if step is None:
        raise ValueError(f"--init-from {workdir} holds no checkpoint")
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_on_one_device(manager, step))))
    state = restored.state
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    return variables, saved


def _model(cfg: TrainConfig, num_classes: int) -> VGG:
    return VGG(
        config=cfg.config,
        num_classes=num_classes,
        dropout_rate=cfg.dropout_rate,
        batch_norm=cfg.batch_norm,
        fc_width=cfg.fc_width,
        width_scale=cfg.width_scale,
        init_scheme=cfg.init_scheme,
        dtype=DTYPES[cfg.dtype],
        remat=cfg.remat,
    )


class _MetricsLog:
    """metrics.jsonl: one object per line, flushed as written; written by process 0 alone."""

    def __init__(self, path: str, keep_up_to_step: Optional[int]):
        self.path, self.file = path, None
        if not parallel.is_primary():
            return
        if keep_up_to_step is not None and os.path.exists(path):
            # A resumed run repeats the steps after its checkpoint: drop their old lines.
            with open(path) as file:
                lines = [line for line in file if line.strip() and json.loads(line)["step"] <= keep_up_to_step]
            write_text(path, "".join(lines))
        self.file = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def run(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains, evaluates and checkpoints one run; returns the final summary."""
    validate(cfg)  # before anything is written
    cfg = prepare_workdir(cfg, resume, overwrite)
    validate(cfg)  # a resumed run's saved config, with this run's length and devices
    cfg.config = resolve_config(cfg.config)
    train_source, val_source = data_lib.load_data(cfg.data, cfg.image_size, seed=cfg.seed)
    num_classes = train_source.num_classes
    if cfg.subtract_mean and cfg.mean_rgb is None:
        cfg.mean_rgb = list(data_lib.mean_rgb(train_source))
    eval_scales = cfg.eval_scales or [cfg.image_size]
    mesh = parallel.make_mesh(cfg.devices)
    parallel.check_global_batch(cfg.batch_size, mesh)
    local_batch = cfg.batch_size // jax.process_count()  # each process loads its own rows of the global batch
    steps_per_epoch = len(train_source) // jax.process_count() // local_batch
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {cfg.batch_size} is larger than the {len(train_source)} training images")
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    eval_every = cfg.eval_every or steps_per_epoch
    checkpoint_every = cfg.checkpoint_every or eval_every

    model = _model(cfg, num_classes)
    key = jax.random.key(cfg.seed)
    init_key, dropout_key = jax.random.split(key)
    warm_report = None
    if cfg.init_from and not resume:
        source_variables, source_cfg = load_params(cfg.init_from)
        variables, warm_report = warm_start(
            source_variables,
            source_cfg["config"],
            cfg.config,
            init_key,
            layers=cfg.warm_start_layers,
            image_size=cfg.image_size,
            **{name: getattr(model, name) for name in ("num_classes", "dropout_rate", "batch_norm", "fc_width", "width_scale", "init_scheme", "dtype")},
        )
        log(str(warm_report))
    else:
        variables = jax.jit(model.init)(init_key, jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32))
    if parallel.is_primary():  # once the inputs have been read: a failed start leaves no run behind
        write_text(os.path.join(cfg.workdir, "config.json"), json.dumps(dataclasses.asdict(cfg), indent=2))
    schedule = train_lib.learning_rate_schedule(cfg.lr_policy, cfg.learning_rate, total_steps)
    optimizer = train_lib.paper_optimizer(schedule, cfg.momentum, cfg.weight_decay)
    state = parallel.put_state(train_lib.create_train_state(model, optimizer, variables), mesh, cfg.shard_fc)
    shardings = parallel.state_sharding(state, mesh, cfg.shard_fc)
    dropout_key = parallel.put(dropout_key, parallel.replicated(mesh))
    plateau = train_lib.Plateau(patience=cfg.plateau_patience)

    scale = None if cfg.scale is None else (cfg.scale[0] if len(cfg.scale) == 1 else tuple(cfg.scale))
    transform = data_lib.TrainTransform(cfg.image_size, scale, cfg.flip, cfg.pca_std, None if cfg.mean_rgb is None else tuple(cfg.mean_rgb))
    loader = data_lib.make_loader(train_source, transform, local_batch, seed=cfg.seed, shuffle=True, worker_count=cfg.workers)
    iterator = iter(loader)

    manager = _checkpoint_manager(cfg.workdir, cfg.keep)
    start_step, skipped = 0, 0
    if resume and manager.latest_step() is not None:
        restored = manager.restore(
            manager.latest_step(),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(
                    jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
                ),
                data=ocp.args.JsonRestore(),
                policy=ocp.args.JsonRestore(),
            ),
        )
        state = restored.state
        iterator.set_state(_iterator_state(restored.data).encode())
        policy = dict(restored.policy)
        skipped = int(policy.pop("skipped_nonfinite", 0))
        plateau.state = policy.get("plateau", policy)  # earlier checkpoints saved the plateau state alone
        start_step = int(state.step)
        log(f"Resumed {cfg.workdir} at step {start_step}")
    metrics_log = _MetricsLog(os.path.join(cfg.workdir, "metrics.jsonl"), start_step if resume else None)

    train_step = parallel.make_train_step(model, optimizer, mesh, state, cfg.shard_fc)

    def evaluate(method: str) -> dict[str, Any]:
        val_loader = data_lib.make_loader(
            val_source, data_lib.EvalTransform(max(eval_scales), None if cfg.mean_rgb is None else tuple(cfg.mean_rgb)),
            cfg.batch_size, seed=0, shuffle=False, num_epochs=1, drop_remainder=False, worker_count=cfg.workers,
        )
        variables = {"params": state.params, **({"batch_stats": state.batch_stats} if cfg.batch_norm else {})}
        # Each process evaluates its shard of the validation set on one device; the counts are summed.
        return evaluate_lib.evaluate(
            model, parallel.to_local(variables), val_loader, method, eval_scales, cfg.image_size, reduce=parallel.sum_over_processes
        )

    def save(step: int) -> None:
        try:
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave({"iterators": parallel.gather_strings(iterator.get_state().decode())}),
                    policy=ocp.args.JsonSave({"plateau": plateau.state, "skipped_nonfinite": skipped}),
                ),
                force=True,
            )
            manager.wait_until_finished()
        except Exception as error:  # OSError, or Orbax's and tensorstore's wrappers of one
            good = _latest_complete_step(cfg.workdir)
            raise CheckpointWriteError(
                f"could not write the checkpoint of step {step} under {os.path.join(cfg.workdir, 'checkpoints')}: "
                f"{_short(error)}; "
                + (f"the last complete checkpoint, step {good}, is kept. " if good is not None else "no checkpoint was written before. ")
                + "Free space or make the directory writable, then continue with --resume"
            ) from error

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=False,
                        disable=not parallel.is_primary())
    last_eval: Optional[dict[str, Any]] = None
    images_seen, clock = 0, time.perf_counter()
    last: dict[str, float] = {}
    window: list[dict[str, float]] = []  # the steps since the last log line, averaged into it
    try:
        with progress:
            task = progress.add_task(f"train {cfg.config}", total=total_steps, completed=start_step, status="")
            for step in range(start_step, total_steps):
                batch = next(iterator)
                state, metrics = train_step(state, parallel.put_batch({"image": batch["image"], "label": batch["label"]}, mesh), dropout_key)
                last = {name: float(value) for name, value in jax.device_get(metrics).items()}
                if last["nonfinite"]:  # the step changed nothing (train.py's guard)
                    name = next((n for n in ("loss", "grad_norm") if not math.isfinite(last[n])), "loss")
                    skipped += 1
                    if skipped > cfg.skip_nonfinite:
                        good = manager.latest_step()
                        raise NonFiniteError(
                            f"non-finite {name} ({last[name]}) at step {step + 1}; training stopped"
                            + (f" after skipping {skipped - 1} such steps (--skip-nonfinite {cfg.skip_nonfinite})" if cfg.skip_nonfinite else "")
                            + ". "
                            + (f"The last good checkpoint is step {good} in {cfg.workdir}/checkpoints." if good is not None else "No checkpoint was written.")
                        )
                    log(f"step {step + 1}: non-finite {name} ({last[name]}); step skipped ({skipped} of {cfg.skip_nonfinite} allowed)")
                images_seen += cfg.batch_size  # the global batch
                if not last["nonfinite"]:
                    window.append(last)
                done = step + 1
                if done % cfg.log_every == 0 or done == total_steps:
                    rate = images_seen / (time.perf_counter() - clock)
                    mean = {name: float(np.mean([m[name] for m in window])) if window else math.nan for name in last if name != "nonfinite"}
                    metrics_log.write({"step": done, "epoch": done / steps_per_epoch, **mean, "skipped_nonfinite": skipped, "images_per_s": rate})
                    images_seen, clock, window = 0, time.perf_counter(), []
                    progress.update(task, status=f"loss {mean['loss']:.3f} top1 {mean['top1']:.3f} {rate:.0f} img/s")
                if done % eval_every == 0 or done == total_steps:
                    last_eval = evaluate("center")
                    metrics_log.write({"step": done, "epoch": done / steps_per_epoch, "eval": last_eval})
                    if cfg.lr_policy == "paper" and plateau.update(1 - last_eval["top1_error"]):
                        new_rate = float(train_lib.learning_rate(state.opt_state)) / plateau.factor
                        state = parallel.reshard(train_lib.set_learning_rate(state, new_rate), shardings)
                        log(f"step {done}: validation accuracy stopped improving; learning rate now {new_rate:g}")
                if done % checkpoint_every == 0 or done == total_steps:
                    save(done)
                progress.update(task, advance=1)
        final = evaluate(cfg.eval_method) if cfg.eval_method != "center" or last_eval is None else last_eval
        if cfg.eval_method != "center":
            metrics_log.write({"step": total_steps, "epoch": total_steps / steps_per_epoch, "eval": final})
    finally:
        metrics_log.close()
        manager.wait_until_finished()
    summary = {
        "workdir": cfg.workdir,
        "config": cfg.config,
        "steps": total_steps,
        "final_loss": last.get("loss"),
        "skipped_nonfinite": skipped,
        "final_train_top1": last.get("top1"),
        "eval": final,
        "warm_start": None if warm_report is None else dataclasses.asdict(warm_report),
    }
    log(
        f"Done: {cfg.config}, {total_steps} steps; last loss {summary['final_loss']}; {final['method']} eval at Q={final['scales']}: "
        f"top-1 error {final['top1_error']:.2%}, top-5 error {final['top5_error']:.2%} on {final['count']} images"
    )
    return summary


def _latest_complete_step(workdir: str) -> Optional[int]:
    """The newest finished checkpoint on disk (Orbax's temporary directories are unfinished saves)."""
    directory = os.path.join(workdir, "checkpoints")
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()] if os.path.isdir(directory) else []
    return max(steps, default=None)


def _short(error: BaseException) -> str:
    """The first line of an error and of its causes, for one-line messages."""
    while error.__cause__ is not None and not str(error).strip():
        error = error.__cause__
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _iterator_state(saved: dict[str, Any]) -> str:
    """This process's data-iterator state from a checkpoint's `data` item."""
    states = saved.get("iterators") or [saved["iterator"]]  # "iterator": one-process checkpoints of earlier versions
    if len(states) != jax.process_count():
        raise ValueError(
            f"the checkpoint was written by {len(states)} processes and this run has {jax.process_count()}; "
            "resume with the same number of processes (the data order depends on it)"
        )
    return states[jax.process_index()]


def main(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> int:
    """The command line's work: one line on stderr and a non-zero status for bad input or non-finite numbers."""
    import sys

    try:
        run(cfg, resume=resume, overwrite=overwrite)
    except (NonFiniteError, CheckpointWriteError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    return 0
