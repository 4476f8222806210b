"""Training checkpoints for exact ``--resume``: safetensors + JSON, nothing pickled, written atomically.

``<run>/checkpoints/step_<N>/`` holds ``model.safetensors`` (full ``state_dict``, BN counters included),
``optimizer.safetensors`` (per-parameter state such as SGD momentum), ``rng.rank<r>.safetensors`` and
``rng.rank<r>.json`` (torch CPU/CUDA, numpy and Python RNG states of every process) and ``state.json`` (step, data
position, optimizer hyper-parameters, scheduler state). Every file goes into a temporary folder that is renamed
into place once complete, then ``checkpoints/latest`` (a one-line file, itself replaced atomically) points at it.
A run killed at any moment leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    save_file(tensors, str(folder / f"rng.rank{rank}.safetensors"))
    (folder / f"rng.rank{rank}.json").write_text(json.dumps(meta))


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
    save_file(state, str(staging / "model.safetensors"))
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    save_file(opt_tensors, str(staging / "optimizer.safetensors"))
    meta = {"step": step, "micro_step": micro_step, "optimizer": opt_meta, "scheduler": _scheduler_state(scheduler),
            **extra}
    (staging / "state.json").write_text(json.dumps(meta, indent=1))
    for f in staging.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    final = root / f"step_{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _atomic_write_text(root / LATEST, final.name + "\n")
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):  # staging folders of runs killed mid-checkpoint
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint: ``latest``'s target, or a newer ``step_*`` folder if the run was killed
    between renaming it into place and updating ``latest``. ``None`` if there is none."""
    root = run_dir / "checkpoints"
    complete = sorted(p for p in root.glob("step_*") if (p / "state.json").is_file())
    pointer = root / LATEST
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        if not (folder / "state.json").is_file():
            raise FileNotFoundError(f"{pointer} points at {folder}, which is not a complete checkpoint")
        return max([folder, *complete], key=lambda p: p.name)
    return complete[-1] if complete else None


def load_training_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler, rank: int) -> dict[str, Any]:
    """Restore everything ``save_training_state`` wrote (this rank's RNG); returns ``state.json``."""
    meta = json.loads((folder / "state.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    model.load_state_dict(state, strict=True)
    optimizer.load_state_dict(_optimizer_state_dict(load_file(str(folder / "optimizer.safetensors")),
                                                    meta["optimizer"]))
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    rng_file = folder / f"rng.rank{rank}.safetensors"
    if not rng_file.is_file():
        raise FileNotFoundError(f"{folder}: no RNG state for rank {rank}; resume with the same number of processes "
                                f"({meta.get('world')})")
    set_rng_state(load_file(str(rng_file)), json.loads((folder / f"rng.rank{rank}.json").read_text()))
    return meta
