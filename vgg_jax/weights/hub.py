"""Downloading published weight files once, into a cache, verified before use.

`fetch(url, sha256=...)` returns the path of the file in the cache folder
(`$VGG_JAX_CACHE`, else the platform's user cache folder), downloading it
the first time with a progress bar. The download goes to a temporary name
beside the target and is renamed only once its hash matches, so an
interrupted or corrupted download never leaves a file that a later call
would trust. A file placed in the cache by hand is verified too, before its
first use: its digests are recorded beside it (`.NAME.verified`, keyed on
its size and modification time), so a later call reads no byte of it again
unless it changes. `$VGG_JAX_WEIGHTS_MIRROR` (or `mirror=`) replaces the URL's
base for users behind a firewall with an internal copy; the hash check
still applies. Offline, the error names the URL, the cache path and how to
place the file there by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Optional

CACHE_ENV = "VGG_JAX_CACHE"
MIRROR_ENV = "VGG_JAX_WEIGHTS_MIRROR"
CHUNK = 1 << 20


class WeightsUnavailable(OSError):
    """A weight file could not be downloaded; the message says where it was sought and what to do instead."""


class HashMismatch(ValueError):
    """A downloaded file's hash is not the published one; the file was removed."""


def cache_dir() -> str:
    """`$VGG_JAX_CACHE`, else the platform's user cache folder plus `vgg_jax`."""
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
    if sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    elif os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~/AppData/Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "vgg_jax")


def mirrored(url: str, mirror: Optional[str] = None, filename: Optional[str] = None) -> str:
    """The URL with its base replaced by the mirror (argument, else `$VGG_JAX_WEIGHTS_MIRROR`): mirror + '/' +
    file name.

    The file name is `filename` where given (the cache's name: timm's files are all model.safetensors).
    """
    mirror = mirror or os.environ.get(MIRROR_ENV)
    return url if not mirror else f"{mirror.rstrip('/')}/{filename or url.rsplit('/', 1)[-1]}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the redirect response itself carries the Hugging Face hub's hash headers


def server_sha256(url: str, timeout: float = 60.0) -> str:
    """The SHA-256 the server publishes for `url` in its `X-Linked-Etag` header (the Hugging Face hub's, for
    LFS files).

    Read from a HEAD request that does not follow the hub's redirect to its CDN.
    """
    request = urllib.request.Request(url, method="HEAD")
    try:
        response = urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout)
        headers = response.headers
    except urllib.error.HTTPError as error:
        if error.code not in (301, 302, 303, 307, 308):
            raise
        headers = error.headers
    etag = (headers.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    if len(etag) != 64 or any(c not in "0123456789abcdef" for c in etag):
        raise ValueError(
            f"{url} publishes no SHA-256 (no X-Linked-Etag header with one), so a download could not be "
            "verified"
        )
    return etag


def _digests(path: str) -> dict[str, str]:
    """The file's SHA-256 and MD5, read in one pass."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            sha256.update(block)
            md5.update(block)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def _mismatch(digests: dict[str, str], sha256: Optional[str], md5: Optional[str]) -> Optional[str]:
    """'ALGORITHM of the file is ACTUAL, the published one is EXPECTED', or None when they agree.

    `sha256` may be a prefix (torchvision's file names carry 8 hex digits).
    """
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected and not digests[algorithm].startswith(expected.lower()):
            return f"{algorithm} of the file is {digests[algorithm]}, the published one is {expected}"
    return None


def _record_path(path: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.verified")


def _stamp(path: str) -> list[int]:
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns]


def _recorded(path: str) -> Optional[dict[str, str]]:
    """The digests recorded when `path` was last verified, while it is unchanged since (same size and
    mtime); else None."""
    try:
        with open(_record_path(path)) as file:
            record = json.load(file)
        if record.get("stamp") == _stamp(path) and all(
            isinstance(record.get(k), str) for k in ("sha256", "md5")
        ):
            return {"sha256": record["sha256"], "md5": record["md5"]}
    except (OSError, ValueError, AttributeError):
        pass
    return None


def digests(path: str) -> dict[str, str]:
    """`{"sha256", "md5"}` of a file: from its verification record while the file is unchanged, else
    computed."""
    return _recorded(path) or _digests(path)


def _record(path: str, found: dict[str, str]) -> None:
    """Notes that `path`, as it is now, has these digests (best effort: a read-only cache only costs a
    re-hash)."""
    from vgg_jax.util.files import write_text

    try:
        write_text(_record_path(path), json.dumps({"stamp": _stamp(path), **found}))
    except OSError:
        pass


def _verify_present(
    path: str, url: str, sha256: Optional[str], md5: Optional[str], published_sha256: bool, timeout: float
) -> None:
    """Checks a file already in the cache (downloaded earlier, or placed there by hand) before it is used.

    Raises HashMismatch naming both hashes (the file is kept: it may be the
    user's own copy), or WeightsUnavailable when the published hash is only
    on a server that cannot be reached.
    """
    if published_sha256 and not sha256 and not md5:
        if _recorded(path):
            return  # verified against the server's hash when it was downloaded or first used
        try:
            sha256 = server_sha256(url, timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise WeightsUnavailable(
                f"cannot verify {path}: its SHA-256 is published by {url}, which could not be reached "
                f"({reason}); "
                "connect once to verify it, or use the file unverified: vgg_jax.load(path) in Python, "
                "--model FILE or --init-from FILE on the command line"
            ) from None
    found = digests(path)
    problem = _mismatch(found, sha256, md5)
    if problem:
        raise HashMismatch(
            f"{path} is not the published file: {problem}. Replace it with the file from {url}, or remove it "
            "to download it again"
        )
    _record(path, found)


def fetch(
    url: str,
    sha256: Optional[str] = None,
    md5: Optional[str] = None,
    filename: Optional[str] = None,
    mirror: Optional[str] = None,
    progress: bool = True,
    timeout: float = 60.0,
    published_sha256: bool = False,
) -> str:
    """The path of `url`'s file in the cache, downloaded and verified the first time.

    Args:
        url: where the file is published.
        sha256: its SHA-256, or a prefix of it (at least 8 hex digits).
        md5: its MD5, where that is what the publisher gives (Keras).
        filename: the name in the cache (default: the URL's last part).
        mirror: replaces the URL's base (default: `$VGG_JAX_WEIGHTS_MIRROR`).
        progress: a progress bar on stderr when it is a terminal.
        timeout: seconds to wait for the server.
        published_sha256: take the SHA-256 from the server's `X-Linked-Etag`
            header (`server_sha256`), as the Hugging Face hub publishes it.

    A file already at the cache path (an earlier download, or one placed by
    hand) is verified against the same hash before it is returned.

    Raises:
        ValueError: neither hash given (nothing is used unverified).
        WeightsUnavailable: the download failed (offline, firewall, HTTP error),
            or a placed file's hash is only on a server that cannot be reached.
        HashMismatch: the download's hash differs (the file was removed), or a
            file in the cache is not the published one (kept, named in the message).
    """
    if not sha256 and not md5 and not published_sha256:
        raise ValueError(
            f"fetch({url!r}) needs the file's sha256 or md5: a download is never used unverified"
        )
    if sha256 and len(sha256) < 8:
        raise ValueError(
            f"sha256 prefix {sha256!r} is too short to verify anything; give at least 8 hex digits"
        )
    directory = cache_dir()
    path = os.path.join(directory, filename or url.rsplit("/", 1)[-1])
    source = mirrored(url, mirror, filename)
    if os.path.isfile(path):  # downloaded earlier, or placed by hand: verified before use either way
        _verify_present(path, source, sha256, md5, published_sha256, timeout)
        return path
    _download_verified(source, path, sha256, md5, published_sha256, progress, timeout)
    return path


def _download_verified(
    source: str,
    path: str,
    sha256: Optional[str],
    md5: Optional[str],
    published_sha256: bool,
    progress: bool,
    timeout: float,
) -> None:
    """Downloads `source` beside `path`, checks its hash, and renames it onto `path` (never half a file)."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".part", dir=directory
        )
    except OSError as error:
        raise WeightsUnavailable(
            f"cannot write to the weights cache {directory}: {error.strerror or error}; set {CACHE_ENV} to a "
            "writable folder"
        ) from None
    try:
        with os.fdopen(handle, "wb") as out:
            if published_sha256 and not sha256 and not md5:
                sha256 = server_sha256(source, timeout)
            _download(source, out, progress, timeout)
        found = _digests(temporary)
        problem = _mismatch(found, sha256, md5)
        if problem:
            raise HashMismatch(problem.replace("of the file", "of the download"))
        os.replace(temporary, path)
        _record(path, found)
    except HashMismatch as error:
        raise HashMismatch(
            f"{source}: {error}; the file was removed. A wrong mirror copy or a corrupted transfer: try "
            "again, or fix the mirror"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise WeightsUnavailable(
            f"could not download {source} ({reason}). Offline or behind a firewall: download it elsewhere "
            f"and place it at {path}"
            f" (or point {MIRROR_ENV} at an internal copy), or use a local file: vgg_jax.load(path) in "
            "Python, --model FILE or --init-from FILE on the command line"
        ) from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _download(url: str, out, progress: bool, timeout: float) -> None:
    """Streams `url` into the open file `out`; a body shorter than its Content-Length is an error."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        bar = Progress(
            *Progress.get_default_columns(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
            disable=not (progress and sys.stderr.isatty()),
        )
        received = 0
        with bar:
            task = bar.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total or None)
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                received += len(block)
                bar.update(task, advance=len(block))
        if total and received != total:
            raise OSError(f"the transfer stopped after {received} of {total} bytes")
