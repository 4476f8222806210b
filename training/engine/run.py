"""The run folder and the process: refusing to train over a run, device choice, seeding, logging set-up,
``metrics.jsonl`` reading/rewriting, and the CLI flags every trainer shares (``--out``, ``--resume``,
``--overwrite``, ``--config``, ``-o``).

A run folder holds ``config.json``, ``checkpoints/``, ``metrics.jsonl`` (+ ``eval.jsonl`` for learners that
evaluate), ``tb/``, ``train.log`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from constcl_zoo.errors import UsageError
from constcl_zoo.fileio import atomic_write

from .config import ConfigError, TrainConfig, get_preset
from .distributed import DistInfo

CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVAL_METRICS = "eval.jsonl"
# What makes a folder a run, and what --overwrite deletes (other files in the folder are left alone).
RUN_ENTRIES = (CONFIG, METRICS, EVAL_METRICS, "summary.json", "train.log", "checkpoints", "tb")

C = TypeVar("C", bound=TrainConfig)


class RunExistsError(UsageError):
    """``--out`` already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""


def holds_run(out: Path) -> bool:
    """Whether ``out`` has any of a run's files."""
    return out.is_dir() and any((out / name).exists() for name in RUN_ENTRIES)


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an unusable ``--out``: a file, or a folder holding a run without ``--resume`` / ``--overwrite``."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other; give one")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; give a folder for the run")
    if holds_run(out) and not (resume or overwrite):
        raise RunExistsError(f"--out {out} already holds a run; add --resume to continue it, --overwrite to "
                             "start over (deletes its checkpoints and logs), or choose another folder")


def clear_run(out: Path) -> None:
    """Delete a run's files (``RUN_ENTRIES``) from ``out``, keeping anything else (e.g. a shared video index)."""
    for name in RUN_ENTRIES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def pick_device(spec: str) -> torch.device:
    """``run.device``: ``auto`` is this process's CUDA device under torchrun (``LOCAL_RANK``) if any, else CPU."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (each process passes ``run.seed + rank``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_logging(out: Path, info: DistInfo) -> None:
    """Log lines to stdout (rank 0 INFO, others WARNING) and ``<out>/train.log`` (rank 0), replacing our handlers
    of an earlier run in the same process."""
    fmt = logging.Formatter(f"%(asctime)s [rank {info.rank}] %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_constcl", False):
            root.removeHandler(h)
            h.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if info.is_main:
        handlers.append(logging.FileHandler(out / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h.setLevel(logging.INFO if info.is_main else logging.WARNING)
        h._constcl = True  # type: ignore[attr-defined]
        root.addHandler(h)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines log; a torn last line (a run killed mid-write) is ignored."""
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return rows


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep only rows up to ``step`` (a resumed run logs the later steps again); rewritten atomically."""
    if path.is_file():
        rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def add_run_arguments(parser: argparse.ArgumentParser, presets: dict[str, Callable[[], Any]]) -> None:
    """The flags every trainer's subcommand shares: --config, --out, --resume, --overwrite, -o."""
    parser.add_argument("--config", choices=sorted(presets), help="preset to start from")
    parser.add_argument("--out", required=True, help="run folder (config, checkpoints, logs)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="--out holds a run: delete its checkpoints and logs and start over")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. optim.lr=0.2 (repeatable; values are JSON, else strings)")


def resolve_config(cls: type[C], presets: dict[str, Callable[[], C]], args: argparse.Namespace,
                   extra_overrides: list[str] = ()) -> C:  # type: ignore[assignment]
    """The run's config from the shared flags: ``--resume`` reads ``<out>/config.json`` (if any), else the
    ``--config`` preset; then the ``-o`` overrides. Also checks ``--out`` (:func:`check_run_dir`)."""
    out = Path(args.out)
    check_run_dir(out, args.resume, args.overwrite)
    saved = out / CONFIG
    if args.resume and saved.is_file():
        cfg = cls.load(saved)
        if args.config and args.config != cfg.preset:
            raise ConfigError(f"--resume: {saved} was written by preset {cfg.preset!r}, not {args.config!r}; "
                              "drop --config")
    elif args.config:
        cfg = get_preset(presets, args.config)
    else:
        raise UsageError("give --config PRESET (or --resume an existing run)")
    return cfg.replace([*args.override, *extra_overrides])
