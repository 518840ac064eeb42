"""The training loop against the benchmark's train step, and where the loop's host time goes.

    python benchmarks/loop_overhead.py [ROUNDS [TREE ...]]

At one model (config A, 32 px, width 0.25, fc 256, batch 64, 10 classes), each round runs
`bench.py --mode train-step` and `train.py --data synthetic` (320 steps of 10 epochs of 32, a log line
every 20, evaluations and checkpoints out of the way; one epoch of the synthetic set is 32 steps at
batch 64, so `--max-steps` alone stops at 32), and the loop again on a pack of 2,048
40x40 JPEGs at short side 32 (`--data packed:`) in fresh processes, one after the other. The loop's rate
is the median of its logged windows after the first; the ratio is loop / step; and the train loader
alone, its CPU time per batch (all its threads, 600 batches). Then one loop runs in
this process with its host work timed by part (the input, the transfer, the step's dispatch, the wait
for the metrics, the rest): on a CPU every millisecond the host spends is taken from the step's
threads. Prints the medians over the rounds (docs/benchmarks.md).

With TREEs (checkouts of vgg_jax, a `git worktree` of an older commit, say), each round runs the
bench and the loop of each tree in turn (PYTHONPATH=TREE), for a before/after in one run.
"""

import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = [
    "--config",
    "A",
    "--image-size",
    "32",
    "--width-scale",
    "0.25",
    "--fc-width",
    "256",
    "--batch-size",
    "64",
]
STEPS, LOG_EVERY = 320, 20


def bench_rate(folder: str, tree: str) -> float:
    out = os.path.join(folder, f"bench{time.monotonic_ns()}.json")
    subprocess.run(
        [sys.executable, os.path.join(tree, "scripts", "bench.py"), *MODEL, "--mode", "train-step", "--steps",
         "80", "--warmup", "5", "--num-classes", "10", "--json", out],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": tree},
    )  # fmt: skip
    (record,) = json.load(open(out))
    return record["results"]["train_step"]["images_per_s"]


def loop_rate(folder: str, tree: str, data: str = "synthetic") -> float:
    workdir = os.path.join(folder, f"run{time.monotonic_ns()}")
    subprocess.run(
        [sys.executable, os.path.join(tree, "scripts", "train.py"), *MODEL, "--data", data,
         "--epochs", "10", "--max-steps", str(STEPS), "--log-every", str(LOG_EVERY), "--eval-every",
         "100000", "--checkpoint-every", "100000", "--workdir", workdir],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": tree},
    )  # fmt: skip
    rates = [
        r["images_per_s"]
        for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
        if "loss" in r
    ]
    return statistics.median(rates[1:])


LOADER_CPU = """
import resource, sys
from vgg_jax.training import data, sources
loader = data.make_loader(sources.SyntheticSource(2048, 32, 10, 0),
    data.TrainTransform(32, None, True, 0.0, None, None, on_device=True), 64, seed=0, shuffle=True,
    shard_index=0, shard_count=1)
batches = iter(loader)
for _ in range(20):
    next(batches)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
begin = cpu()
for _ in range(600):
    next(batches)
print((cpu() - begin) * 1e3 / 600)
"""


def loader_cpu(tree: str) -> float:
    """The train loader's CPU time (all its threads) per batch of 64 at the loop's settings, ms."""
    out = subprocess.run(
        [sys.executable, "-c", LOADER_CPU], check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": tree}, cwd=tree,  # -c puts the working folder first on the path
    )  # fmt: skip
    return float(out.stdout.split()[-1])


def host_split(folder: str) -> dict[str, float]:
    """Milliseconds of host time per step, by part, in one loop run in this process (after its first
    window)."""
    import jax

    from vgg_jax.model.vgg import ModelConfig
    from vgg_jax.training import loop, parallel
    from vgg_jax.training.config import TrainConfig

    spent: dict[str, float] = collections.defaultdict(float)
    counting = [False]

    def timed(name, function):
        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if counting[0]:
                    spent[name] += time.perf_counter() - begin

        return wrapper

    class Timed:
        def __init__(self, iterator):
            self.iterator = iterator

        def __iter__(self):
            return self

        def __next__(self):
            return timed("input (next batch)", self.iterator.__next__)()

        def __getattr__(self, name):
            return getattr(self.iterator, name)

    train_iterator, jit_step, drain = loop._train_iterator, parallel.jit_train_step, loop._drain
    loop._train_iterator = lambda plan: Timed(train_iterator(plan))
    parallel.put_batch = timed("transfer (put_batch)", parallel.put_batch)
    parallel.jit_train_step = lambda *a, **k: timed("step dispatch", jit_step(*a, **k))
    loop._drain = timed("wait for metrics", drain)
    marks = []

    def log(line: str) -> None:
        if line.startswith("step "):
            marks.append(time.perf_counter())
            counting[0] = True  # from the end of the first window

    args = dict(zip(MODEL[::2], MODEL[1::2]))
    cfg = TrainConfig(
        workdir=os.path.join(folder, "inprocess"), config="A", data="synthetic", image_size=32,
        model=ModelConfig(width_scale=0.25, fc_width=256), batch_size=64, epochs=10, max_steps=STEPS,
        log_every=LOG_EVERY,
        eval_every=100000, checkpoint_every=100000,
    )  # fmt: skip
    assert args["--batch-size"] == "64"
    import rich.console

    rich.console.Console.is_terminal = property(lambda self: False)  # plain lines, as in a pipe
    loop.run(cfg, log=log)
    steps = STEPS - LOG_EVERY
    wall = (marks[-1] - marks[0]) * 1e3 / steps
    split = {name: seconds * 1e3 / steps for name, seconds in spent.items()}
    split["wall per step"] = wall
    split["the rest (host)"] = wall - sum(v for k, v in split.items() if k != "wall per step")
    jax.clear_caches()
    return split


def packed_folder(folder: str) -> str:
    """2,048 JPEGs of 40x40 in 10 classes (the synthetic set's size), packed at short side 32."""
    from vgg_jax.benchmark.data_bench import write_jpeg_folder

    jpegs = write_jpeg_folder(os.path.join(folder, "jpegs"), 2048, size=(40, 40), classes=10)
    packed = os.path.join(folder, "packed")
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "pack_images.py"), jpegs, packed, "--short-side",
         "32"],
        check=True, capture_output=True,
    )  # fmt: skip
    return f"packed:{packed}"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    trees = [os.path.abspath(tree) for tree in sys.argv[2:]] or [ROOT]
    with tempfile.TemporaryDirectory() as folder:
        packed = packed_folder(folder)
        steps, loops = collections.defaultdict(list), collections.defaultdict(list)
        for _ in range(rounds):
            for tree in trees:
                steps[tree].append(bench_rate(folder, tree))
                loops[tree].append(loop_rate(folder, tree))
                loops[tree, "packed"].append(loop_rate(folder, tree, packed))
                loops[tree, "input"].append(loader_cpu(tree))
                print(f"{tree}: step {steps[tree][-1]:.0f} img/s, loop {loops[tree][-1]:.0f} img/s "
                      f"({loops[tree][-1] / steps[tree][-1]:.3f}x), on packed input "
                      f"{loops[tree, 'packed'][-1]:.0f} img/s; the loader alone "
                      f"{loops[tree, 'input'][-1]:.2f} ms CPU a batch", flush=True)  # fmt: skip
        for tree in trees:
            ratios = [loop / step for loop, step in zip(loops[tree], steps[tree])]
            packed_ratios = [p / s for p, s in zip(loops[tree, "packed"], loops[tree])]
            print(
                f"{tree}, median of {rounds}: step {statistics.median(steps[tree]):.0f} img/s, loop "
                f"{statistics.median(loops[tree]):.0f} img/s, loop/step {statistics.median(ratios):.3f}x "
                f"(range {min(ratios):.3f}-{max(ratios):.3f}); packed/synthetic "
                f"{statistics.median(packed_ratios):.3f}x "
                f"(range {min(packed_ratios):.3f}-{max(packed_ratios):.3f}); the loader alone "
                f"{statistics.median(loops[tree, 'input']):.2f} ms CPU a batch"
            )
        for name, ms in host_split(folder).items():
            print(f"  {name:<22} {ms:7.2f} ms/step")


if __name__ == "__main__":
    main()
