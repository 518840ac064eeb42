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

import argparse
import sys
from typing import Optional, Sequence

from vgg_jax.cli import OneLineParser, fail, positive_int, prog_name

PROG = "pack_images.py"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog_name(PROG), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "src", help="an ImageFolder (one sub-folder of JPEG/PNG files per class; or train/ and val/ of them)"
    )
    parser.add_argument("dst", help="the pack's folder (must not exist, unless --overwrite)")
    parser.add_argument(
        "--short-side", type=positive_int, default=256, help="the stored short side (default 256)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing DST once the new pack is whole"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
        return fail(prog_name(PROG), error, parser=parser)
    splits = ", ".join(f"{name} {count}" for name, count in meta["splits"].items())
    print(
        f"packed {splits} images of {len(meta['classes'])} classes into {args.dst}: "
        f"{meta['bytes'] / 2**20:.1f} MiB on disk"
        + (f"; {len(meta['skipped'])} unreadable skipped" if meta["skipped"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
