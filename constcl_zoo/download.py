"""Downloading published files that are not on the Hugging Face Hub (the official CVRL TF tarballs) into the cache.

The HTTP part is ``huggingface_hub``'s ``http_get`` (already a dependency): a streamed GET with a tqdm progress bar
(shown on a terminal; ``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides it, ``TQDM_POSITION=-1`` forces it), ``Range``
resumption and retries on dropped connections (it writes in 10 MiB chunks: a cut loses at most the chunk in
flight). It sends no Hub token. Around it: the bytes go to ``<cache>/downloads/<file>.part``, so an interrupted
download (a dropped connection, Ctrl-C, a killed process) continues from where it stopped on the next call; a file
lock keeps two processes from writing the same ``.part``; the finished file is checked against the registry's
sha256 when one is known (a mismatch deletes it) and only then renamed to its final name.

Offline (``HF_HUB_OFFLINE=1`` or ``CONSTCL_ZOO_OFFLINE=1``) or on a network error, :class:`DownloadError` says
what to download from where and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import ChecksumError, sha256_of
from .errors import ConstclZooError
from .registry import WeightsNotAvailableError

CACHE_ENV = "CONSTCL_ZOO_CACHE"
OFFLINE_ENV = "CONSTCL_ZOO_OFFLINE"
_TRUE = ("1", "true", "yes", "on")


class DownloadError(WeightsNotAvailableError):
    """A published file is not in the cache and cannot be downloaded now (offline, network or HTTP error)."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$CONSTCL_ZOO_CACHE``, else ``~/.cache/constcl_zoo``."""
    root = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "constcl_zoo"
    return Path(root).expanduser()


def downloads_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where published files are downloaded to: ``<cache>/downloads``."""
    return cache_root(cache_dir) / "downloads"


def is_offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE`` or ``CONSTCL_ZOO_OFFLINE`` is set to a true value."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", OFFLINE_ENV))


def download_file(url: str, target: str | os.PathLike, *, sha256: str | None = None, what: str = "",
                  manual: str = "") -> Path:
    """Download ``url`` to ``target`` (a file path) unless it is already there; return ``target``.

    Args:
        url: the file's address (http or https).
        target: where the finished file goes; ``<target>.part`` holds the bytes while downloading.
        sha256: the file's known digest; a finished download that differs is deleted and raises
            :class:`~constcl_zoo.checkpoint.ChecksumError`. An existing ``target`` is checked too.
        what: the name the file is for (e.g. ``"cvrl_r3d50.k600_800ep"``), used in messages.
        manual: what to do by hand instead, appended to a :class:`DownloadError`.
    """
    from filelock import FileLock

    target = Path(target)
    label = f"{what}: " if what else ""
    if target.is_file():
        if sha256:
            _verify_or_delete(target, sha256, label, url)
        return target
    if is_offline():
        raise DownloadError(
            f"{label}{target.name} is not in the cache and downloads are off (HF_HUB_OFFLINE / {OFFLINE_ENV}). "
            f"Download {url} elsewhere and put it at {target}, or unset the variable. {manual}".strip())
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if target.is_file():  # another process finished it while we waited for the lock
            return download_file(url, target, sha256=sha256, what=what, manual=manual)
        _http_get(url, part, label, target, manual)
        if sha256:
            _verify_or_delete(part, sha256, label, url)
        os.replace(part, target)
    return target


def _http_get(url: str, part: Path, label: str, target: Path, manual: str) -> None:
    """Append ``url``'s bytes to ``part``, resuming after the bytes already there (HTTP ``Range``)."""
    from huggingface_hub.file_download import http_get

    resume = part.stat().st_size if part.is_file() else 0
    try:
        with open(part, "ab") as f:
            http_get(url, f, resume_size=resume, displayed_filename=target.name)
    except ConstclZooError:
        raise
    except Exception as exc:  # httpx/requests (by huggingface_hub version) network and HTTP status errors
        got = part.stat().st_size if part.is_file() else 0
        kept = f" The {got} bytes received are kept in {part}; the next call resumes from there." if got else ""
        raise DownloadError(
            f"{label}could not download {url}: {type(exc).__name__}: {exc}.{kept} Without network access, "
            f"download it elsewhere and put it at {target}. {manual}".strip()) from exc


def _verify_or_delete(path: Path, sha256: str, label: str, url: str) -> None:
    actual = sha256_of(path)
    if actual != sha256.lower():
        path.unlink()
        raise ChecksumError(
            f"{label}{path} (from {url}) has sha256 {actual}, but the registry expects {sha256}; the file was "
            f"deleted. Try again; if it persists, the published file has changed.")
