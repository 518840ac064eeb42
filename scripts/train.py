#!/usr/bin/env python
"""Train a VGG config, evaluate it the paper's way, and checkpoint it.

The command is `vgg_jax.cli.train`, installed as `vgg-jax-train` too; `--help` lists its flags.
"""

from _entry import run

if __name__ == "__main__":
    run("train")
