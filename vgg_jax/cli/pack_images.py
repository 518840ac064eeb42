"""Pack an ImageFolder once into Grain's ArrayRecord format, for `train.py --data packed:DST`.

    pip install -e ".[packed]" && python scripts/pack_images.py SRC DST --short-side 256

Every image is decoded once and stored as raw uint8 RGB with its short side
at --short-side (train with S up to it), with its label and source path;
the class names go in DST/meta.json. SRC's train/ and val/ are packed as two
splits when it has both. The pack is written to DST.partial and renamed when
complete: an interrupted pack leaves no DST, and an existing DST is replaced
only with --overwrite. Prints the size on disk.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Optional, Sequence

import tyro

from vgg_jax.cli import fail, parse, prog_name
from vgg_jax.util.options import one, positive

PROG = "pack_images.py"


@dataclasses.dataclass(frozen=True)
class PackCommand:
    """pack_images.py's command line."""

    src: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="SRC")]
    """an ImageFolder (one sub-folder of JPEG/PNG files per class; or train/ and val/ of them)"""
    dst: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="DST")]
    """the pack's folder (must not exist, unless --overwrite)"""
    short_side: Annotated[int, one("N", positive)] = 256
    """the stored short side"""
    overwrite: bool = False
    """replace an existing DST once the new pack is whole"""


COMMAND = PackCommand  # what the command line parses (docs checked in tests/test_readme.py)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(PackCommand, argv, PROG, __doc__)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    try:
        from vgg_jax.training import packed
    except ImportError as error:  # pragma: no cover - the extra is missing
        return fail(prog_name(PROG), f'{error}; install the extra: pip install -e ".[packed]"')
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, disable=not sys.stdout.isatty()) as bar:
            task = bar.add_task("packing", total=None)
            meta = packed.pack(
                args.src,
                args.dst,
                args.short_side,
                args.overwrite,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except ImportError as error:
        return fail(prog_name(PROG), f'{error}; install the extra: pip install -e ".[packed]"')
    except (ValueError, OSError) as error:
        return fail(prog_name(PROG), error, config_class=PackCommand)
    splits = ", ".join(f"{name} {count}" for name, count in meta["splits"].items())
    print(
        f"packed {splits} images of {len(meta['classes'])} classes into {args.dst}: "
        f"{meta['bytes'] / 2**20:.1f} MiB on disk"
        + (f"; {len(meta['skipped'])} unreadable skipped" if meta["skipped"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
