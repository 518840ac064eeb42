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
import time
from typing import Any, Callable, Optional

from vgg_jax.util.files import atomic_write

TENSORBOARD = "tensorboard"  # under the workdir
CURVES = "curves.png"
SKIPPED = {"step", "epoch", "eval"}  # not scalars of a training window


class TensorBoard:
    """Writes each metrics record as TensorBoard scalars (`train/loss`, `eval/top1_error`, ...).

    Written in this thread with tensorboardX's `EventsWriter`, not its
    `SummaryWriter`, whose events wait in a queue for a thread of its own:
    there `flush()` leaves the queued ones unwritten, and a full disk ends in
    tracebacks at exit. Here `flush` (before every checkpoint) puts every event
    so far on disk, so a kill loses none that a checkpoint keeps. On resume,
    `purge_step` starts the new file with TensorBoard's restart marker, which
    drops the events a stopped run wrote past its checkpoint, as
    `metrics.jsonl` drops its lines.
    """

    def __init__(self, workdir: str, purge_step: Optional[int], log: Callable[[str], None]):
        self.writer, self.log = None, log
        try:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto import event_pb2, summary_pb2
        except ImportError:
            log("TensorBoard curves: pip install 'vgg_jax[tensorboard]' (tensorboardX) to write them")
            return
        self.event_pb2, self.summary_pb2 = event_pb2, summary_pb2
        folder = os.path.join(workdir, TENSORBOARD)
        os.makedirs(folder, exist_ok=True)
        # the nanoseconds order two files of one second (a kill and a resume) as TensorBoard reads them
        try:
            self.writer = EventsWriter(os.path.join(folder, "events"), f".{time.time_ns()}")
        except OSError as error:
            self._stopped(error)
            return
        if purge_step is not None:
            restart = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._write(event_pb2.Event(step=purge_step, wall_time=time.time(), session_log=restart))

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        if "eval" in record:
            scalars = {f"eval/{name}": value for name, value in record["eval"].items()}
        else:
            scalars = {f"train/{name}": value for name, value in record.items() if name not in SKIPPED}
        values = [
            self.summary_pb2.Summary.Value(tag=name, simple_value=float(value))
            for name, value in scalars.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        summary = self.summary_pb2.Summary(value=values)
        self._write(self.event_pb2.Event(step=record["step"], wall_time=time.time(), summary=summary))

    def flush(self) -> None:
        """Puts every event so far on disk: before every checkpoint, so that a kill loses none it keeps."""
        self._guarded(lambda: self.writer.flush())

    def close(self) -> None:
        self._guarded(lambda: self.writer.close())
        self.writer = None

    def _write(self, event: Any) -> None:
        self._guarded(lambda: self.writer.write_event(event))

    def _guarded(self, act: Callable[[], None]) -> None:
        """Runs `act` on the writer; an OSError (a full disk) ends the events with one line."""
        if self.writer is None:
            return
        try:
            act()
        except OSError as error:
            self._stopped(error)

    def _stopped(self, error: OSError) -> None:
        self.writer = None
        self.log(
            f"TensorBoard events: stopped writing them ({error.strerror or error}); metrics.jsonl has every "
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
