"""Training curves people can look at: TensorBoard event files as the run goes, and `curves.png` at its end.

Both are made from the records `metrics.jsonl` holds (`rundir.MetricsLog`):
a window's training means (loss, top1_error, learning_rate, ...) or an
evaluation (`{"step", "epoch", "eval": {...}}`). TensorBoard's events go to
`WORKDIR/tensorboard/` through tensorboardX (the `tensorboard` extra);
`curves.png` is drawn with matplotlib (the `plot` extra). Without either
package the run says so in one line and goes on.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from vgg_jax.util.files import atomic_write

TENSORBOARD = "tensorboard"  # under the workdir
CURVES = "curves.png"
SKIPPED = {"step", "epoch", "eval"}  # not scalars of a training window


class TensorBoard:
    """Writes each metrics record as TensorBoard scalars (`train/loss`, `eval/top1_error`, ...).

    On resume, `purge_step` drops the events a stopped run wrote past its
    checkpoint, as `metrics.jsonl` drops its lines.
    """

    def __init__(self, workdir: str, purge_step: Optional[int], log: Callable[[str], None]):
        self.writer, self.log = None, log
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            log("TensorBoard curves: pip install 'vgg_jax[tensorboard]' (tensorboardX) to write them")
            return
        self.writer = SummaryWriter(os.path.join(workdir, TENSORBOARD), purge_step=purge_step, flush_secs=10)

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        if "eval" in record:
            scalars = {f"eval/{name}": value for name, value in record["eval"].items()}
        else:
            scalars = {f"train/{name}": value for name, value in record.items() if name not in SKIPPED}
        for name, value in scalars.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, record["step"])

    def flush(self) -> None:
        """Writes the pending events: at every checkpoint, so that a kill loses none that the checkpoint kept
        (the writer flushes on its own only every 10 s)."""
        self._guarded(lambda writer: writer.flush())

    def close(self) -> None:
        self._guarded(lambda writer: writer.close())
        self.writer = None

    def _guarded(self, act: Callable[[Any], None]) -> None:
        """Runs `act` on the writer; an OSError (a full disk) ends the events with one line, not a traceback.

        tensorboardX would retry its close at exit and trace the same error
        again from its writer thread, so its event writer is stopped and marked
        closed here (metrics.jsonl keeps every record).
        """
        if self.writer is None:
            return
        try:
            act(self.writer)
        except OSError as error:
            events = getattr(self.writer.file_writer, "event_writer", None)
            worker = getattr(events, "_worker", None)
            if worker is not None:
                worker.stop()
            if events is not None:
                events._closed = True
            self.writer = None
            self.log(
                f"TensorBoard events: stopped writing them ({error.strerror or error}); "
                "metrics.jsonl has every "
                "record"
            )


def plot_curves(records: list[dict[str, Any]], path: str) -> None:
    """Draws loss, top-1 error (training windows and evaluations) and learning rate against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [record for record in records if "loss" in record]
    evals = [record for record in records if "eval" in record]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    panels = (
        (axes[0], "loss", "training loss (window mean)"),
        (axes[1], "top1_error", "top-1 error"),
        (axes[2], "learning_rate", "learning rate"),
    )
    for axis, name, title in panels:
        # markers: a run that logged one window shows its point (a line needs two)
        steps, values = [r["step"] for r in train], [r.get(name, float("nan")) for r in train]
        axis.plot(steps, values, marker="o", ms=3, label="training")
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    if evals:
        axes[1].plot(
            [r["step"] for r in evals],
            [r["eval"]["top1_error"] for r in evals],
            "o-",
            ms=3,
            label="evaluation",
        )
    axes[1].legend()
    axes[2].set_yscale("log")
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    plt.close(figure)


def write_curves(workdir: str, records: list[dict[str, Any]], log: Callable[[str], None]) -> None:
    """`WORKDIR/curves.png` from the run's records, or one line saying what is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log(f"{CURVES}: pip install 'vgg_jax[plot]' (matplotlib) to draw it; metrics.jsonl has the numbers")
        return
    path = os.path.join(workdir, CURVES)
    plot_curves(records, path)
    log(f"Curves: {path}")
