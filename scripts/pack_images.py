#!/usr/bin/env python
"""Pack an ImageFolder once into Grain's ArrayRecord format, for `train.py --data packed:DST`.

The command is `vgg_jax.cli.pack_images`, installed as `vgg-jax-pack-images` too; `--help` lists its flags.
"""

from _entry import run

if __name__ == "__main__":
    run("pack_images")
