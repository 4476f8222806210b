"""The embeddings file of ``constcl-zoo embed``: one safetensors file per video, and the index of a folder of them.

A file ``<name>.safetensors`` holds

* ``embeddings``: float32 ``[N, D]`` (global branch) or ``[N, C, T', H', W']`` (region branch),
* ``start_s``, ``end_s``: float64 ``[N]`` window start / end times in seconds,
* ``start_frame``, ``end_frame``: int64 ``[N]`` decoded-frame indices (first / last frame of each window),

and string metadata (``format``: :data:`FORMAT`, source, model, branch, window settings, decoded frame count,
precision). Files are written to a temporary name and renamed (:func:`constcl_zoo.fileio.atomic_write`), so a file
that exists is complete; :func:`check_output` tells a complete one from a damaged one. The index (``index.json``,
or ``index-rank{R}-of-{W}.json`` when sharded: :func:`index_name`) lists a folder's finished and failed videos.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ConstclZooError
from ..fileio import atomic_write

if TYPE_CHECKING:  # an annotation only: formats sit below inference (pyproject's import-linter layers)
    from ..inference.embed import VideoEmbeddings

FORMAT = "constcl-zoo-embeddings/1"
OUTPUT_SUFFIX = ".safetensors"
TENSORS = ("embeddings", "start_s", "end_s", "start_frame", "end_frame")
# Metadata keys that must match for an existing output to count as a run's result.
SETTINGS = ("model", "branch", "clip_frames", "frame_stride", "stride")


class CorruptOutputError(ConstclZooError, ValueError):
    """An existing output file is unreadable or inconsistent (e.g. truncated by a crash of another tool)."""


def index_name(rank: int, world_size: int) -> str:
    return "index.json" if world_size == 1 else f"index-rank{rank:05d}-of-{world_size:05d}.json"


def save_embeddings(result: VideoEmbeddings, path: Path, metadata: dict[str, str]) -> None:
    """Write one video's result as safetensors (module docstring), atomically."""
    from safetensors.torch import save

    tensors = {"embeddings": result.embeddings.float().contiguous(),
               "start_s": torch.from_numpy(result.start_s), "end_s": torch.from_numpy(result.end_s),
               "start_frame": torch.from_numpy(result.start_frame), "end_frame": torch.from_numpy(result.end_frame)}
    atomic_write(path, save(tensors, metadata=metadata))


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of an embeddings file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def check_output(path: Path) -> dict[str, str]:
    """The metadata of an existing embeddings file, after checking that it is complete and consistent (header,
    size, the five tensors, ``num_windows`` rows each); :class:`CorruptOutputError` otherwise."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error type for truncated or garbled files
        raise CorruptOutputError(f"{path}: unreadable ({exc})") from exc
    missing = [k for k in TENSORS if k not in shapes]
    if meta.get("format") != FORMAT or missing:
        raise CorruptOutputError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r}, missing {missing})")
    try:
        rows, _ = int(meta["num_windows"]), int(meta["num_frames"])
    except (KeyError, ValueError) as exc:
        raise CorruptOutputError(f"{path}: bad num_windows / num_frames metadata ({exc})") from exc
    if any(not shapes[k] or shapes[k][0] != rows for k in TENSORS):
        raise CorruptOutputError(f"{path}: tensors {shapes} do not all have num_windows={rows} rows")
    return meta


def load_embeddings(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of an embeddings file (``embeddings``, ``start_s``, ``end_s``, ``start_frame``, ``end_frame``)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def settings_differences(meta: dict[str, str], wanted: dict[str, str]) -> str:
    """``"stride='16' (this run: '8')"`` for each setting that differs; empty when all agree."""
    return ", ".join(f"{k}={meta.get(k)!r} (this run: {wanted[k]!r})" for k in SETTINGS if meta.get(k) != wanted[k])


def read_index(path: Path) -> dict | None:
    """A folder's index, or ``None`` when there is none or it is unreadable. An index written before the key
    ``runner`` (``"local"`` or ``"ray"``) had that name reads with it (it was called ``engine``)."""
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") == FORMAT and isinstance(index.get("videos"), list):
            if "engine" in index and "runner" not in index:
                index["runner"] = index["engine"]
            return index
    except (OSError, ValueError, AttributeError):
        pass
    return None


def write_index(path: Path, index: dict) -> None:
    """Write an index (atomically)."""
    atomic_write(path, json.dumps(index, indent=1) + "\n")
