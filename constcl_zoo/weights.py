"""The on-disk checkpoint: a folder with ``config.json`` and ``model.safetensors``. Nothing is pickled.

``config.json`` holds the :class:`~constcl_zoo.config.ModelConfig` plus a ``weights`` record (file name, sha256,
which branch's parameters it holds). Loading is strict: every key the requested branch needs must be present
with its exact shape, and every key in the file must belong to the architecture; otherwise one
:class:`CheckpointMismatchError` lists all the problems.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .errors import ConstclZooError
from .model import ConstCLBase, build_model

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_LIST_LIMIT = 20


class CheckpointMismatchError(ConstclZooError, RuntimeError):
    """The weights file does not fit the architecture (missing, unexpected, mis-shaped or wrongly typed keys)."""


class ChecksumError(ConstclZooError, RuntimeError):
    """A weights file's sha256 differs from the digest the registry or its config records."""


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
            f"was replaced. Delete it and download it again (e.g. load(..., cache_dir=...) on a clean cache).")


def save_checkpoint(model: ConstCLBase, directory: str | Path) -> Path:
    """Write ``model`` as a checkpoint folder (its own branch's weights)."""
    return write_checkpoint(model.config, state_dict_for_save(model), directory, branch=model.branch)


def write_checkpoint(config: ModelConfig, tensors: dict[str, torch.Tensor], directory: str | Path,
                     branch: str) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (float32); temporaries are renamed into place."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_tmp = _temp_path(directory, WEIGHTS_NAME)
    save_file({k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in tensors.items()},
              weights_tmp, metadata={"format": "pt", "arch": config.arch, "branch": branch})
    record = {"file": WEIGHTS_NAME, "sha256": sha256_of(weights_tmp), "branch": branch, "dtype": "float32"}
    config_tmp = _temp_path(directory, CONFIG_NAME)
    config.to_json(config_tmp, extra={"weights": record})
    os.replace(weights_tmp, directory / WEIGHTS_NAME)
    os.replace(config_tmp, directory / CONFIG_NAME)
    return directory


def _temp_path(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    os.close(fd)
    return Path(tmp)


def read_weights_record(config_path: str | Path) -> dict:
    """The ``weights`` record of a ``config.json`` (empty if the checkpoint was written without one)."""
    return json.loads(Path(config_path).read_text()).get("weights") or {}


def _reference_tensors(config: ModelConfig) -> dict[str, torch.Tensor]:
    """Every tensor of the architecture (all branches and heads), on the meta device (shapes and dtypes)."""
    with torch.device("meta"):
        full = build_model(config, "full")
    return format_state(full)


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


def load_weights(model: ConstCLBase, weights_path: str | Path) -> ConstCLBase:
    """Load a safetensors file into ``model``, strictly (see module docstring)."""
    weights_path = Path(weights_path)
    tensors = _reference_tensors(model.config)
    reference = {k: tuple(v.shape) for k, v in tensors.items()}
    needed = format_state(model)
    try:
        handle = safe_open(str(weights_path), framework="pt")
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled headers
        raise CheckpointMismatchError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    with handle as f:
        slices = {k: f.get_slice(k) for k in f.keys()}
        file_shapes = {k: tuple(v.get_shape()) for k, v in slices.items()}
        unexpected = sorted(k for k in file_shapes if k not in reference)
        misshaped = sorted(f"{k}: file {list(file_shapes[k])}, model {list(reference[k])}"
                           for k in file_shapes if k in reference and file_shapes[k] != reference[k])
        mistyped = sorted(f"{k}: file {slices[k].get_dtype()}, model {str(tensors[k].dtype).removeprefix('torch.')}"
                          for k in file_shapes if k in reference and _dtype_mismatch(slices[k].get_dtype(), tensors[k]))
        missing = sorted(k for k in needed if k not in file_shapes)
        if unexpected or misshaped or mistyped or missing:
            parts = [f"{weights_path} does not match architecture {model.config.arch!r} "
                     f"(branch {model.branch!r}):"]
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
    result = model.load_state_dict(state, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if leftover or result.unexpected_keys:  # cannot happen after the checks above; guard against drift
        raise CheckpointMismatchError(f"internal key mismatch: {leftover + result.unexpected_keys}")
    return model
