"""The on-disk checkpoint: a folder with ``config.json`` and ``model.safetensors``. Nothing is pickled.

``config.json`` holds the :class:`~constcl_zoo.config.ModelConfig` plus a ``weights`` record (file name, sha256,
which branch's parameters it holds). Loading is strict: every key the requested branch needs must be present
with its exact shape, and every key in the file must belong to the architecture; otherwise one
:class:`CheckpointMismatchError` lists all the problems. A tensor holding NaN or infinity is refused the same way.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ConfigError, read_config_json
from .errors import ConstclZooError
from .fileio import atomic_write

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_LIST_LIMIT = 20


class CheckpointMismatchError(ConstclZooError, RuntimeError):
    """The weights file does not fit the architecture (missing, unexpected, mis-shaped or wrongly typed keys)."""


class ChecksumError(ConstclZooError, RuntimeError):
    """A weights file's sha256 differs from the digest the registry or its config records."""


class CheckpointConfig(Protocol):
    """What a checkpoint folder's config is: a :class:`~constcl_zoo.config.ModelConfig` (an encoder) or a
    :class:`~constcl_zoo.tasks.base.TaskConfig` (a task model)."""

    arch: str

    def to_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> None: ...


def format_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: parameters and BN running statistics. BN step counters
    (``num_batches_tracked``) are not part of the format."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """:func:`format_state`, detached, on the CPU, contiguous."""
    return {k: v.detach().to("cpu").contiguous() for k, v in format_state(model).items()}


def sha256_of(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str, source: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` hashes to ``expected`` (recorded by ``source``)."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match {expected} recorded by {source}; the file is corrupted or "
            f"was replaced. Delete it (a Hub download: its snapshot in the Hub cache) and download or save it again.")


def save_checkpoint(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write ``model`` (an encoder: its ``config`` and ``branch``) as a checkpoint folder (its own branch's
    weights)."""
    return write_checkpoint(model.config, state_dict_for_save(model), directory, branch=model.branch)


def write_checkpoint(config: CheckpointConfig, tensors: dict[str, torch.Tensor], directory: str | Path,
                     branch: str) -> Path:
    """Write ``model.safetensors`` (float32) then ``config.json``, each atomically (:func:`atomic_write`), for an
    encoder (:class:`ModelConfig`) or a task model (:class:`~constcl_zoo.tasks.base.TaskConfig`).

    ``config.json`` comes last and records the weights' sha256, so a folder with a ``config.json`` is complete
    (``load()`` checks the digest).
    """
    directory = Path(directory)
    state = {k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in tensors.items()}
    weights = atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(
        state, str(tmp), metadata={"format": "pt", "arch": config.arch, "branch": branch,
                                   **({"task": config.task} if hasattr(config, "task") else {})}))
    record = {"file": WEIGHTS_NAME, "sha256": sha256_of(weights), "branch": branch, "dtype": "float32"}
    config.to_json(directory / CONFIG_NAME, extra={"weights": record})  # atomic, like every config write
    return directory


# the values write_checkpoint writes ("backbone": a converted official checkpoint without its SSL heads)
WEIGHTS_RECORD = {"file": (WEIGHTS_NAME,), "branch": ("global", "region", "full", "backbone"), "dtype": ("float32",)}


def read_weights_record(config_path: str | Path) -> dict:
    """The ``weights`` record of a ``config.json`` (empty if the checkpoint was written without one), as
    :func:`write_checkpoint` writes it: ``file``, ``sha256`` (64 hex digits), ``branch``, ``dtype``; any other key or
    value raises :class:`~constcl_zoo.config.ConfigError` naming it."""
    data = read_config_json(config_path)
    record = data.get("weights") if isinstance(data, dict) else None
    if record is None:
        return {}
    if not isinstance(record, dict):
        raise ConfigError(f"{config_path}: weights: expected an object, got {type(record).__name__}")
    unknown = sorted(set(record) - {*WEIGHTS_RECORD, "sha256"})
    if unknown:
        raise ConfigError(f"{config_path}: weights: unknown field(s) {unknown}")
    for key, allowed in WEIGHTS_RECORD.items():
        if key in record and record[key] not in allowed:
            raise ConfigError(f"{config_path}: weights.{key}: {str(record[key])[:60]!r} is not one of {list(allowed)}")
    digest = record.get("sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-fA-F]{64}", digest)):
        raise ConfigError(f"{config_path}: weights.sha256: {str(digest)[:80]!r} is not a sha256 (64 hex digits)")
    return record


_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")  # safetensors dtype names


def _dtype_mismatch(file_dtype: str, model_tensor: torch.Tensor) -> bool:
    """Floating tensors must be stored as floating point (any width: they are cast on load), others exactly."""
    if model_tensor.is_floating_point():
        return file_dtype not in _FLOAT_DTYPES
    return file_dtype != str(model_tensor.dtype).removeprefix("torch.")


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_LIST_LIMIT]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {i}" for i in shown) + more


def load_weights(model: torch.nn.Module, weights_path: str | Path) -> torch.nn.Module:
    """Load a safetensors file into ``model`` (an encoder or a task model), strictly (see module docstring).

    The file's keys may be the model's own, or for an encoder any key of its whole architecture (all branches and
    heads: ``model.checkpoint_tensors()``, asked for only when the file holds keys the model does not), so a
    branch loads from a full pretraining checkpoint; a task checkpoint holds exactly the task model's."""
    weights_path = Path(weights_path)
    needed = format_state(model)
    try:
        handle = safe_open(str(weights_path), framework="pt")
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled headers
        raise CheckpointMismatchError(f"{weights_path}: not a readable safetensors file ({exc}); it is truncated or "
                                      f"damaged: download or save it again") from exc
    with handle as f:
        slices = {k: f.get_slice(k) for k in f.keys()}
        file_shapes = {k: tuple(v.get_shape()) for k, v in slices.items()}
        tensors = needed
        if any(k not in needed for k in file_shapes) and hasattr(model, "checkpoint_tensors"):
            tensors = model.checkpoint_tensors()
        reference = {k: tuple(v.shape) for k, v in tensors.items()}
        unexpected = sorted(k for k in file_shapes if k not in reference)
        misshaped = sorted(f"{k}: file {list(file_shapes[k])}, model {list(reference[k])}"
                           for k in file_shapes if k in reference and file_shapes[k] != reference[k])
        mistyped = sorted(f"{k}: file {slices[k].get_dtype()}, model {str(tensors[k].dtype).removeprefix('torch.')}"
                          for k in file_shapes if k in reference and _dtype_mismatch(slices[k].get_dtype(), tensors[k]))
        missing = sorted(k for k in needed if k not in file_shapes)
        if unexpected or misshaped or mistyped or missing:
            parts = [f"{weights_path} does not match architecture {model.config.arch!r} "
                     f"({model.description}); load it with the config.json it was saved with:"]
            if missing:
                parts.append(_listing("missing keys", missing))
            if unexpected:
                parts.append(_listing("unexpected keys", unexpected))
            if misshaped:
                parts.append(_listing("mis-shaped keys", misshaped))
            if mistyped:
                parts.append(_listing("keys of the wrong dtype (floating tensors must be stored as floating "
                                      "point)", mistyped))
            raise CheckpointMismatchError("\n".join(parts))
        state = {k: f.get_tensor(k) for k in needed}
    non_finite = sorted(k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if non_finite:
        raise CheckpointMismatchError("\n".join([
            f"{weights_path} holds NaN or infinite values; every output would be NaN. The file is damaged or was "
            f"saved from a diverged run: save or download it again.", _listing("non-finite tensors", non_finite)]))
    result = model.load_state_dict(state, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if leftover or result.unexpected_keys:  # cannot happen after the checks above; guard against drift
        raise CheckpointMismatchError(f"internal key mismatch: {leftover + result.unexpected_keys}")
    return model
