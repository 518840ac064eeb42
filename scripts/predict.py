#!/usr/bin/env python
"""Classify images with ImageNet weights: the top classes and their probabilities.

The command is `vgg_jax.cli.predict`, installed as `vgg-jax-predict` too; `--help` lists its flags.
"""

from _entry import run

if __name__ == "__main__":
    run("predict")
