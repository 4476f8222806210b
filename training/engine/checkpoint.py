"""Training checkpoints for exact ``--resume``: safetensors + JSON, nothing pickled, written atomically.

``<run>/checkpoints/step_<N>/`` holds ``model.safetensors`` (full ``state_dict``, BN counters included),
``optimizer.safetensors`` (per-parameter state such as SGD momentum), ``rng.rank<r>.safetensors`` and
``rng.rank<r>.json`` (torch CPU/CUDA, numpy and Python RNG states of every process) and ``state.json`` (step, data
position, optimizer hyper-parameters, scheduler state, and the sha256 of every other file). Every file is written
with :func:`constcl_zoo.fileio.atomic_write` into a temporary folder that is renamed into place once complete, then
``checkpoints/latest`` (a one-line file, itself replaced atomically) points at it. A run killed at any moment
leaves either the previous or the new checkpoint, never a torn one; a checkpoint damaged afterwards (a truncated
or altered file) fails its checksums, and :func:`read_latest` falls back to the previous one with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from constcl_zoo.checkpoint import sha256_of
from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write, fsync_dir

LATEST = "latest"
STATE = "state.json"
log = logging.getLogger(__name__)


class CheckpointError(ConstclZooError, ValueError):
    """No readable training checkpoint where one is needed (every candidate missing, torn or corrupted)."""


class ProcessCountError(CheckpointError):
    """A checkpoint written by a different number of processes than the resuming run."""


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states as (tensors, JSON)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def write_rng(folder: Path, rank: int) -> None:
    """This process's RNG files (every rank writes its own into the temporary checkpoint folder)."""
    tensors, meta = rng_state()
    _save_tensors(folder / f"rng.rank{rank}.safetensors", tensors)
    atomic_write(folder / f"rng.rank{rank}.json", json.dumps(meta))


def staging_folder(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f".tmp-step_{step:08d}"


def save_training_state(run_dir: Path, step: int, micro_step: int, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                        extra: dict[str, Any], keep: int) -> Path:
    """Rank 0: write the model/optimizer/scheduler files into the staging folder (which already holds every
    rank's RNG files), rename it into place, point ``latest`` at it, prune old checkpoints. Returns the folder."""
    root = run_dir / "checkpoints"
    staging = staging_folder(run_dir, step)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _save_tensors(staging / "model.safetensors", state)
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    _save_tensors(staging / "optimizer.safetensors", opt_tensors)
    files = {f.name: sha256_of(f) for f in sorted(staging.iterdir()) if not f.name.startswith(".")}
    meta = {"step": step, "micro_step": micro_step, "optimizer": opt_meta, "scheduler": _scheduler_state(scheduler),
            **extra, "files": files}
    atomic_write(staging / STATE, json.dumps(meta, indent=1))
    final = root / f"step_{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    fsync_dir(root)
    atomic_write(root / LATEST, final.name + "\n")
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):  # staging folders of runs killed mid-checkpoint
        shutil.rmtree(stale, ignore_errors=True)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Every renamed-into-place checkpoint folder of the run, newest first (``latest``'s target is one of them:
    a run killed between the rename and the ``latest`` update has a newer complete one)."""
    root = run_dir / "checkpoints"
    return sorted((p for p in root.glob("step_*") if p.is_dir()), key=lambda p: p.name, reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint folder that holds a ``state.json`` (not verified; see :func:`read_latest`)."""
    folders = [p for p in complete_checkpoints(run_dir) if (p / STATE).is_file()]
    return folders[0] if folders else None


@dataclass
class TrainingState:
    """Everything one checkpoint holds for one rank, read and verified, not yet applied."""

    folder: Path
    meta: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    rng: tuple[dict[str, torch.Tensor], dict[str, Any]] | None

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def read_training_state(folder: Path, rank: int | None = 0) -> TrainingState:
    """Read and verify one checkpoint (sha256 of every file recorded in ``state.json``; ``rank=None``: the
    model and optimizer only). Raises :class:`CheckpointError` naming the folder and the bad file."""
    try:
        meta = json.loads((folder / STATE).read_text())
        if not isinstance(meta, dict) or "step" not in meta:
            raise CheckpointError("state.json has no step")
        names = ["model.safetensors", "optimizer.safetensors"]
        if rank is not None:
            names += [f"rng.rank{rank}.safetensors", f"rng.rank{rank}.json"]
        if rank is not None and isinstance(meta.get("world"), int) and rank >= meta["world"]:
            raise ProcessCountError(f"{folder}: no RNG state for rank {rank}; resume with the same number of "
                                    f"processes ({meta['world']})")
        recorded = meta.get("files", {})  # absent in checkpoints written before checksums were recorded
        for name in names:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{name} is missing")
            if name in recorded and sha256_of(folder / name) != recorded[name]:
                raise CheckpointError(f"{name} does not match the sha256 recorded in state.json (truncated or altered)")
        rng = None
        if rank is not None:
            rng = (load_file(str(folder / f"rng.rank{rank}.safetensors")),
                   json.loads((folder / f"rng.rank{rank}.json").read_text()))
        return TrainingState(folder, meta, load_file(str(folder / "model.safetensors")),
                             load_file(str(folder / "optimizer.safetensors")), rng)
    except ProcessCountError:
        raise
    except Exception as exc:  # json, safetensors (its own error types) and OS errors: an unreadable checkpoint
        raise CheckpointError(f"{folder}: unreadable checkpoint ({exc})") from exc


def read_latest(run_dir: Path, rank: int | None = 0) -> TrainingState | None:
    """The newest readable checkpoint of the run; a newer unreadable one is skipped with a warning. ``None``
    when the run has no checkpoint; :class:`CheckpointError` when it has some and none is readable."""
    candidates = complete_checkpoints(run_dir)
    errors = []
    for folder in candidates:
        try:
            state = read_training_state(folder, rank)
        except ProcessCountError:
            raise
        except CheckpointError as exc:
            log.warning("skipping checkpoint %s: %s; falling back to the previous one", folder.name, exc)
            errors.append(str(exc))
            continue
        return state
    if errors:
        raise CheckpointError(f"{run_dir}: no readable checkpoint ({'; '.join(errors)}); start again with "
                              "--overwrite")
    return None


def apply_training_state(state: TrainingState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """Restore what :func:`read_training_state` read (this rank's RNG too); returns ``state.json``."""
    model.load_state_dict(state.model, strict=True)
    optimizer.load_state_dict(_optimizer_state_dict(state.optimizer, state.meta["optimizer"]))
    scheduler.load_state_dict({**scheduler.state_dict(), **state.meta["scheduler"]})
    if state.rng is not None:
        set_rng_state(*state.rng)
    return state.meta


def load_training_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler, rank: int) -> dict[str, Any]:
    """Read, verify and restore one checkpoint (this rank's RNG); returns ``state.json``."""
    return apply_training_state(read_training_state(folder, rank), model, optimizer, scheduler)
