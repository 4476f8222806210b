"""Trainer configuration shared by every trainer: the ``optim`` and ``run`` sections, presets, ``-o`` overrides,
JSON round trip, and validation that names the bad field.

A trainer's config is a dataclass that mixes in :class:`TrainConfig` and has (at least) the fields
``preset: str``, ``optim: OptimConfig`` and ``run: RunConfig``; its own sections (data, model, loss) sit next to
them. ``replace(["optim.lr=0.2", "data.batch_size=8"])`` applies dotted overrides (values parsed as JSON, else
kept as strings); every way of building a config (preset, overrides, ``load``) ends in :meth:`TrainConfig.validate`,
so an impossible value is a :class:`ConfigError` naming its field before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from constcl_zoo.config import dataclass_from_dict, to_jsonable
from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write

__all__ = ["ConfigError", "OptimConfig", "RunConfig", "TrainConfig", "check", "get_preset"]


class ConfigError(ConstclZooError, ValueError):
    """A training config (preset, ``-o`` override or ``config.json``) with an unknown key or an impossible value."""


@dataclass
class OptimConfig:
    """SGD with momentum, linear warm-up then cosine decay to 0 (schedule on the global step).

    The defaults are the ConST-CL/CVRL pretraining recipe; each trainer's presets set their own values.
    """

    lr: float = 40.96
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-6  # on conv/linear kernels only (official: 1e-6 * l2_loss on 'kernel' variables)
    warmup_steps: int = 2500
    # "sum": the update is the sum of per-replica gradients, as the official Keras/TPU recipe (loss not divided
    # by the replica count); "mean": the gradient of the global-batch mean loss (DDP's default). See optim.py.
    grad_reduction: Literal["sum", "mean"] = "sum"
    clip_grad_norm: float = 0.0  # 0: off (official: off)


@dataclass
class RunConfig:
    """Steps, precision, parallelism, checkpoints and logging."""

    steps: int = 100_000
    accum_steps: int = 1  # micro-batches per optimizer step (negatives come from one micro-batch)
    seed: int = 0
    device: str = "auto"  # auto: cuda if available else cpu
    precision: Literal["bf16", "fp32"] = "bf16"
    channels_last: bool = True  # channels_last_3d memory format
    sync_bn: bool = False
    compile: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs are deterministic anyway)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    eval_every: int = 0  # steps between evaluations (tasks with an evaluate hook; 0: only after the last step)
    progress: bool = True
    threads: int = 0  # torch intra-op threads per process (0: torch's default)


def check(ok: bool, key: str, value: Any, need: str) -> None:
    """Raise :class:`ConfigError` ``"<key>=<value>: <need>"`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"config {key}={value!r}: {need}")


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _sections(data: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in data.items() if isinstance(v, dict))


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


C = TypeVar("C", bound="TrainConfig")


def _rename(data: dict[str, Any], renamed: dict[str, str], where: str) -> dict[str, Any]:
    """``data`` with the fields renamed since it was written (``renamed``: old dotted key -> new dotted key, in the
    same section) under their new names, each with a DeprecationWarning."""
    for old, new in renamed.items():
        *path, name = old.split(".")
        node = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            continue
        new_name = new.rsplit(".", 1)[-1]
        if new_name in node:
            raise ConfigError(f"{where}: both {old} and {new} are given; {old} is the old name of {new}, keep {new}")
        warnings.warn(f"{where}: {old} is deprecated: it is {new} now", DeprecationWarning, stacklevel=3)
        node[new_name] = node.pop(name)
    return data


class TrainConfig:
    """Mixin for a trainer's config dataclass: JSON round trip, dotted overrides, validation.

    ``renamed_fields`` (old dotted key -> new dotted key) lists fields renamed since a run folder may have been
    written: ``config.json`` and ``-o`` overrides with the old name still work, with a DeprecationWarning.
    """

    preset: str
    optim: OptimConfig
    run: RunConfig
    renamed_fields: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]

    def save(self, path: str | Path) -> None:
        atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if cls.renamed_fields:
            data = _rename(copy.deepcopy(data), cls.renamed_fields, "config")
        try:
            cfg = dataclass_from_dict(cls, data, "config", numbers_as_str=True)
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(exc)) from exc
        cfg.validate()
        return cfg

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc}); restore it or start a new run") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def replace(self: C, overrides: Iterable[str]) -> C:
        """A copy with ``section.field=value`` overrides applied (values parsed as JSON, else as strings)."""
        data = self.to_dict()
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} is not of the form section.field=value")
            key = key.strip()
            if key in self.renamed_fields:
                warnings.warn(f"override {key} is deprecated: it is {self.renamed_fields[key]} now",
                              DeprecationWarning, stacklevel=2)
                key = self.renamed_fields[key]
            parts = key.split(".")
            node = data
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"override {item!r}: unknown section {p!r}; sections: {_sections(data)}")
                node = node[p]
            if parts[-1] not in node or isinstance(node[parts[-1]], dict):
                raise ConfigError(f"override {item!r}: unknown field {key!r}; fields here: {sorted(node)}")
            node[parts[-1]] = _parse_value(raw)
        return type(self).from_dict(data)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first impossible value. Trainers extend this for their sections
        (call ``super().validate()``)."""
        o, r = self.optim, self.run
        check(_finite(o.lr) and o.lr > 0, "optim.lr", o.lr, "must be a positive number")
        check(_finite(o.momentum) and 0 <= o.momentum < 1, "optim.momentum", o.momentum, "must be in [0, 1)")
        check(_finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", o.weight_decay,
              "must be >= 0")
        check(_finite(o.clip_grad_norm) and o.clip_grad_norm >= 0, "optim.clip_grad_norm", o.clip_grad_norm,
              "must be >= 0 (0: off)")
        check(r.steps >= 1, "run.steps", r.steps, "must be >= 1")
        check(0 <= o.warmup_steps < r.steps, "optim.warmup_steps", o.warmup_steps,
              f"must be >= 0 and below run.steps={r.steps} (the learning rate would stay near 0)")
        for name in ("accum_steps", "checkpoint_every", "log_every"):
            check(getattr(r, name) >= 1, f"run.{name}", getattr(r, name), "must be >= 1")
        for name in ("keep_checkpoints", "eval_every", "threads"):
            check(getattr(r, name) >= 0, f"run.{name}", getattr(r, name), "must be >= 0")
        check(r.device == "auto" or r.device.split(":")[0] in ("cpu", "cuda", "mps", "xpu"), "run.device", r.device,
              "must be auto, cpu, cuda or cuda:N")


def get_preset(presets: dict[str, Callable[[], C]], name: str) -> C:
    """The named preset's config (validated)."""
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; presets: {sorted(presets)}")
    cfg = presets[name]()
    cfg.validate()
    return cfg
