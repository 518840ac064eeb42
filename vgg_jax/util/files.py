"""Writing files so that a crash never leaves a half-written one: write aside, then rename."""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls `write(temporary_path)`, then renames the result onto `path`.

    The temporary file sits beside `path` (same filesystem, so the rename is
    atomic) and is removed if `write` fails.
    """
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "w") as file:
            file.write(text)

    atomic_write(path, write)
