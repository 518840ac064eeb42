#!/usr/bin/env python
"""Evaluate a run's checkpoint, a weights file or a pretrained name with the paper's methods.

The command is `vgg_jax.cli.evaluate`, installed as `vgg-jax-evaluate` too; `--help` lists its flags.
"""

from _entry import run

if __name__ == "__main__":
    run("evaluate")
