#!/usr/bin/env python
"""Time VGG forward, forward-backward and train steps: the original TF1 benchmark's job, done properly.

The command is `vgg_jax.cli.bench`, installed as `vgg-jax-bench` too; `--help` lists its flags.
"""

from _entry import run

if __name__ == "__main__":
    run("bench")
