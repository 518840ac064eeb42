#!/usr/bin/env python
"""Convert VGG weights between torchvision, Keras and vgg_jax's formats, or export a training run.

The command is `vgg_jax.cli.convert_weights`, installed as `vgg-jax-convert-weights` too; `--help` lists its
flags.
"""

from _entry import run

if __name__ == "__main__":
    run("convert_weights")
