"""Evaluate a run's checkpoint, a weights file or a pretrained name with the paper's methods.

    python scripts/evaluate.py runs/a --eval dense --eval-scales 32,48
    python scripts/evaluate.py keras:vgg16 --data folder:PATH --eval multi-crop --eval-scales 256,384,512
    python scripts/evaluate.py weights.msgpack --config A --data digits --json

A run is evaluated on its own validation split, with its own pixels and crop
size; a file or a name on `--data` (an ImageFolder's val/ when it has one,
else every image in it; or the digits' held-out 297). Prints top-1 and top-5
error, with a progress bar over the batches on a terminal.
"""

import dataclasses
import json
import sys
from typing import Annotated, Literal, Optional, Union

import tyro

from vgg_jax.cli import WeightsFlags, fail, parse, prog_name
from vgg_jax.training import evaluate as evaluate_lib
from vgg_jax.training import evaluate_model
from vgg_jax.training.data import workers_flag
from vgg_jax.util.options import comma, one, positive

PROG = "evaluate.py"


@dataclasses.dataclass(frozen=True)
class EvaluateCommand:
    """evaluate.py's command line."""

    model: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="MODEL")]
    """a run's workdir, a weights file (.pth, .safetensors, .h5, .msgpack) or a published name (vgg16,
    keras:vgg16)"""
    weights: WeightsFlags = WeightsFlags()
    data: Optional[str] = None
    """digits, synthetic, folder:PATH or packed:PATH: its val split, else all of a folder's or pack's images
    (default: a run's own validation split)"""
    method: Annotated[Literal[evaluate_lib.METHODS], tyro.conf.arg(name="eval")] = "center"
    """the paper's Sec. 3.2 method. Cost per image and test scale, in centre crops: center 1, dense 2 (the
    image and its flip at full size), multi-crop 50 (5x5 crops, each flipped), dense+multi-crop 52; the bar
    counts these views"""
    eval_scales: Annotated[Optional[list[int]], comma("Q[,Q...]", positive, kind=list)] = None
    """test scales Q (default: the crop size)"""
    image_size: Annotated[Optional[int], one("N", positive)] = None
    """the crop the model was trained at (default: the run's, else 224)"""
    batch_size: Annotated[int, one("N", positive)] = 32
    """images per batch"""
    workers: Annotated[Union[str, int], one("auto|N", workers_flag)] = "auto"
    """Grain worker processes: auto (one per usable core, less one, for image folders) or a number"""
    json: bool = False
    """print one JSON object instead of text"""


COMMAND = EvaluateCommand  # what the command line parses (docs checked in tests/test_readme.py)


def main(argv=None) -> int:
    args = parse(EvaluateCommand, argv, PROG, __doc__)
    try:
        target = evaluate_model.open_target(
            args.model, args.weights.config, args.weights.preprocess, args.image_size
        )
        images = evaluate_model.evaluation_images(target, args.data)
        progress = _progress(args)
        try:
            result = evaluate_model.run(
                target, images, args.method, args.eval_scales, args.batch_size, args.workers, progress
            )
        finally:
            progress.stop()
    except (ValueError, OSError) as error:
        return fail(prog_name(PROG), error, config_class=EvaluateCommand)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['model']}: {result['method']} at Q={','.join(map(str, result['scales']))} on "
            f"{result['count']} image{'s' if result['count'] != 1 else ''}: "
            f"top-1 error {result['top1_error']:.2%}, top-5 error {result['top5_error']:.2%}"
        )
    return 0


def _progress(args: EvaluateCommand):
    """A bar counting the views the network has seen (50 per image and scale for multi-crop), on a
    terminal."""

    def start(total: int):
        if args.json or not sys.stderr.isatty():
            return lambda done: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn(f"evaluating ({args.method})"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("views"),
            TimeRemainingColumn(),
            transient=True,
        )
        task = bar.add_task("views", total=total)
        bar.start()
        bars.append(bar)
        return lambda done: bar.update(task, advance=done)

    bars: list = []
    start.stop = lambda: [bar.stop() for bar in bars]
    return start


if __name__ == "__main__":
    sys.exit(main())
