"""Atomic file writes: the one helper every writer of the project uses.

A reader sees either the old file or the complete new one, never a torn write: the data goes to a temporary
file in the destination folder, is flushed and fsynced, given the permissions a plain ``open()`` would give
(``0o666`` minus the process umask, unlike ``mkstemp``'s ``0o600``), and renamed over the target; the folder
is fsynced so the rename survives a crash.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError

__all__ = ["atomic_write", "default_file_mode", "fsync_dir", "prepare_output_dir", "prepare_output_file"]


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would create a file with: ``0o666`` minus the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Path], None], *,
                 mode: int | None = None) -> Path:
    """Write ``path`` atomically and return it.

    ``data`` is the content (``bytes``, or ``str`` written as UTF-8) or a callable ``write(tmp_path)`` that
    writes the whole file at ``tmp_path`` (e.g. ``lambda p: safetensors.torch.save_file(t, str(p))``).
    ``mode`` defaults to :func:`default_file_mode`. The parent folder is created if missing. On any error the
    temporary file is removed and the target is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if callable(data):
            os.close(fd)
            fd = -1
            data(tmp)
        else:
            payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(payload)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def prepare_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the output folder ``path`` if needed and check that a file can be written in it, before any work.

    A file where a folder is expected, a folder that cannot be created or one without write permission raise a
    one-line :class:`~constcl_zoo.errors.UsageError` naming ``flag`` (the command's option for it).
    """
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UsageError(f"{flag} {path}: {blocking} is a file, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write in this folder ({exc.strerror or exc}); choose another "
                         f"{flag} or fix its permissions") from exc
    return path


def prepare_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check that the output file ``path`` can be written (its folder as :func:`prepare_output_dir`; ``path`` is
    not a folder), before any work."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    prepare_output_dir(path.parent, flag)
    return path
