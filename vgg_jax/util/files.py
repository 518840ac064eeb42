"""Writing files so that a crash never leaves a half-written one: write aside, then rename."""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls `write(temporary_path)`, then renames the result onto `path`.

    The temporary file sits beside `path` (same filesystem, so the rename is
    atomic) and is removed if `write` fails. The result gets the permissions
    a plain `open` would give (0666 less the umask), as `cp` and `torch.save`
    do, not the private 0600 of a temporary file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
        )
    except OSError as error:  # the user's path, not the temporary file's, and why
        missing = "" if os.path.isdir(directory) else f": its folder {os.path.dirname(path)} does not exist"
        raise OSError(f"cannot write {path}{missing or ': ' + (error.strerror or str(error))}") from None
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _umask() -> int:
    """The process's umask: from /proc where there is one (no window in which another thread sees it
    changed), else by setting it and putting it straight back."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "w") as file:
            file.write(text)

    atomic_write(path, write)


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:
            file.write(data)

    atomic_write(path, write)
