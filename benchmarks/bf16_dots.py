"""bfloat16 on a CPU with bfloat16 units: VGG-16 before and after, in one process.

    python benchmarks/bf16_dots.py [ROUNDS]

Each round times D at batch 4, 224 px, forward and forward-backward, through `bench.run` (the
library's own timing, 3 steps after 1 warm-up), in turn: float32; bfloat16 with every convolution
XLA's (`conv.BF16_DOT_MAX_PIXELS = 0`, the wide blocks in bfloat16: before); with the row dots on maps
of at most 56x56 (`conv._row_dots`); and with the wide blocks in float32 too (`conv.block_dtype`: the
library's default, after). Prints each round's img/s and the medians; docs/benchmarks.md has the
figures. On a CPU without bfloat16 units neither is ever taken, and the bfloat16 rows measure the same
thing.
"""

import statistics
import sys

import vgg_jax

vgg_jax.apply_xla_cpu_flags()

from vgg_jax.benchmark import bench  # noqa: E402
from vgg_jax.model import conv  # noqa: E402

SPEC = dict(configs=("D",), batch_sizes=(4,), steps=3, warmup=1, modes=("forward", "forward_backward"))


def rates(dtype: str) -> dict[str, float]:
    records = bench.run(bench.BenchSpec(dtypes=(dtype,), **SPEC), log=lambda line: None)
    return {mode: result["images_per_s"] for record in records for mode, result in record["results"].items()}


def main(rounds: int) -> None:
    default = conv.BF16_DOT_MAX_PIXELS
    arms = {
        "float32": ("float32", default, True),
        "bfloat16, XLA's conv": ("bfloat16", 0, False),
        "bfloat16, row dots": ("bfloat16", default, False),
        "bfloat16, row dots, wide maps in float32": ("bfloat16", default, True),
    }
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    for round_index in range(rounds):
        for name, (dtype, limit, wide) in arms.items():
            conv.BF16_DOT_MAX_PIXELS, conv.BF16_WIDE_MAPS_IN_FLOAT32 = limit, wide
            seen[name].append(rates(dtype))
            print(f"round {round_index + 1} {name}: {seen[name][-1]}", flush=True)
    conv.BF16_DOT_MAX_PIXELS, conv.BF16_WIDE_MAPS_IN_FLOAT32 = default, True
    for name, runs in seen.items():
        medians = {mode: statistics.median(run[mode] for run in runs) for mode in runs[0]}
        print(f"median {name}: " + ", ".join(f"{mode} {rate:.2f} img/s" for mode, rate in medians.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
