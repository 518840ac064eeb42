"""The paper's coarse-to-fine experiment in miniature, on the embedded digits.

1. Train A from scratch.
2. Train D three ways, same steps, data order and seeds:
   (a) the paper's N(0, 0.01) init from scratch,
   (b) warm-started from A (`layers="paper"`; the rest N(0, 0.01)),
   (c) Glorot from scratch.

`scripts/coarse_to_fine.py` is the command line; `docs/coarse_to_fine.md`
records a run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

from vgg_jax import hardware, loop
from vgg_jax.files import atomic_write, write_text

RUNS = {
    "d_paper": "D, N(0, 0.01) from scratch",
    "d_warm_from_a": "D, warm-started from A",
    "d_glorot": "D, Glorot from scratch",
}


@dataclasses.dataclass
class ExperimentConfig:
    workdir: str = "runs/coarse_to_fine"
    epochs: int = 12
    source_epochs: int = 12
    batch_size: int = 16
    learning_rate: float = 1e-2
    width_scale: float = 0.25
    fc_width: int = 256
    image_size: int = 32
    evals_per_epoch: int = 1
    seed: int = 0


def _read_metrics(workdir: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    losses, accuracies = [], []
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
        for line in file:
            record = json.loads(line)
            if "eval" in record:
                accuracies.append((record["step"], 1 - record["eval"]["top1_error"]))
            else:
                losses.append((record["step"], record["loss"]))
    return losses, accuracies


def plot(curves: dict[str, Any], path: str, title: str) -> None:
    """Training loss and validation accuracy against step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        steps, losses = zip(*curve["loss"])
        loss_axes.plot(steps, losses, label=RUNS.get(name, name), linewidth=1)
        steps, accuracies = zip(*curve["val_top1"])
        accuracy_axes.plot(steps, accuracies, marker="o", markersize=3, label=RUNS.get(name, name))
    loss_axes.set(xlabel="step", ylabel="training loss (cross-entropy)", title="training loss")
    accuracy_axes.set(xlabel="step", ylabel="validation top-1 accuracy", title="validation accuracy (297 digits)", ylim=(0, 1))
    for axes in (loss_axes, accuracy_axes):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))
    plt.close(figure)


def run_experiment(cfg: ExperimentConfig, overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs A, then the three D runs; writes summary.json and coarse_to_fine.png in the workdir."""
    summary_path = os.path.join(cfg.workdir, "summary.json")
    if os.path.exists(summary_path) and not overwrite:
        raise ValueError(f"{cfg.workdir} already holds an experiment; pass --overwrite to replace it")
    os.makedirs(cfg.workdir, exist_ok=True)
    steps_per_epoch = 1500 // cfg.batch_size
    common = dict(
        data="digits",
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        width_scale=cfg.width_scale,
        fc_width=cfg.fc_width,
        seed=cfg.seed,
        eval_every=max(1, steps_per_epoch // cfg.evals_per_epoch),
        log_every=5,
        keep=1,
    )
    runs = {
        "a": dict(config="A", epochs=cfg.source_epochs, init_scheme="glorot"),
        "d_paper": dict(config="D", epochs=cfg.epochs, init_scheme="paper"),
        "d_warm_from_a": dict(config="D", epochs=cfg.epochs, init_scheme="paper", init_from=os.path.join(cfg.workdir, "a")),
        "d_glorot": dict(config="D", epochs=cfg.epochs, init_scheme="glorot"),
    }
    results, curves = {}, {}
    for name, settings in runs.items():
        workdir = os.path.join(cfg.workdir, name)
        log(f"== {name}: {RUNS.get(name, 'A from scratch (Glorot)')}")
        begin = time.perf_counter()
        summary = loop.run(loop.TrainConfig(workdir=workdir, **common, **settings), overwrite=overwrite, log=log)
        losses, accuracies = _read_metrics(workdir)
        curves[name] = {"loss": losses, "val_top1": accuracies}
        results[name] = {
            "description": RUNS.get(name, "A, Glorot from scratch"),
            "steps": summary["steps"],
            "seconds": time.perf_counter() - begin,
            "first_loss": losses[0][1],
            "final_loss": losses[-1][1],
            "final_val_top1": accuracies[-1][1],
            "best_val_top1": max(a for _, a in accuracies),
            "warm_start": summary["warm_start"],
        }
    plot({name: curves[name] for name in RUNS}, os.path.join(cfg.workdir, "coarse_to_fine.png"),
         f"Coarse-to-fine on digits: VGG-D, width x{cfg.width_scale}, fc {cfg.fc_width}, {cfg.epochs} epochs, batch {cfg.batch_size}")
    document = {
        "settings": dataclasses.asdict(cfg),
        "machine": {"cpu": hardware.cpu_name(), "cores": os.cpu_count(), **hardware.versions()},
        "runs": results,
        "curves": curves,
    }
    write_text(summary_path, json.dumps(document, indent=2))
    for name, result in results.items():
        log(f"{name:>14}: loss {result['first_loss']:.3f} -> {result['final_loss']:.3f}, "
            f"val top-1 {result['final_val_top1']:.3f} (best {result['best_val_top1']:.3f}), {result['seconds']:.0f} s")
    return document
