#!/usr/bin/env python
"""Time the training input pipeline on an ImageFolder, against torchvision's DataLoader.

The command is `vgg_jax.cli.bench_data`, installed as `vgg-jax-bench-data` too; `--help` lists its flags.
"""

from _entry import run

if __name__ == "__main__":
    run("bench_data")
