#!/usr/bin/env python
"""The paper's coarse-to-fine experiment, in miniature on the embedded digits.

The command is `vgg_jax.cli.coarse_to_fine`, installed as `vgg-jax-coarse-to-fine` too; `--help` lists its
flags.
"""

from _entry import run

if __name__ == "__main__":
    run("coarse_to_fine")
