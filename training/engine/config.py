"""Trainer configuration shared by every trainer: the ``optim`` and ``run`` sections, presets, ``-o`` overrides,
JSON round trip, and validation that names the bad field. A trainer's config is a dataclass subclass of
:class:`TrainConfig`, which holds the fields ``preset: str``, ``optim: OptimConfig`` and ``run: RunConfig``; the
trainer declares its own sections (data, model, loss) only. ``replace(["optim.lr=0.2", "data.batch_size=8"])``
applies dotted overrides (values parsed as JSON, else kept as strings); every way of building a config (preset,
overrides, ``load``) ends in :meth:`TrainConfig.validate`, so an impossible value is a :class:`ConfigError` naming
its field before anything runs.

A field's own constraint is declared with its type, once, where the field is: ``num_frames: AtLeastOne = 16``,
``dropout: Annotated[float, Fraction(below_one=True)] = 0.5`` (a :class:`Rule` in ``Annotated``); a ``Literal``
type is a constraint too. :meth:`TrainConfig.validate` checks every field of every section by its rules; a
trainer's ``validate`` adds only what relates several fields.
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
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin, get_type_hints

from constcl_zoo.config import dataclass_from_dict, to_jsonable
from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write

__all__ = ["AtLeast", "AtLeastOne", "AtLeastZero", "ConfigError", "Fraction", "Interval", "NonNegative", "OptimConfig",
           "Positive", "Probability", "Rule", "RunConfig", "TrainConfig", "check", "check_fields", "get_preset"]


class ConfigError(ConstclZooError, ValueError):
    """A training config (preset, ``-o`` override or ``config.json``) with an unknown key or an impossible value."""


def check(ok: bool, key: str, value: Any, need: str) -> None:
    """Raise :class:`ConfigError` ``"<key>=<value>: <need>"`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"config {key}={value!r}: {need}")


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# -- field rules: declared with the field's type (``Annotated[int, AtLeast(1)]``), checked by check_fields ----------
@dataclass(frozen=True)
class Rule:
    """A constraint on one config field's value; :meth:`ok` says whether ``value`` meets it, :attr:`need` what it
    must be (the end of the :class:`ConfigError`)."""

    def ok(self, value: Any) -> bool:
        raise NotImplementedError

    @property
    def need(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class AtLeast(Rule):
    """An integer >= ``minimum`` (``note``: what a special value means, e.g. ``" (0: the default)"``)."""

    minimum: int
    note: str = ""

    def ok(self, value: Any) -> bool:
        return value >= self.minimum

    @property
    def need(self) -> str:
        return f"must be >= {self.minimum}{self.note}"


@dataclass(frozen=True)
class Positive(Rule):
    """A finite number > 0."""

    def ok(self, value: Any) -> bool:
        return _finite(value) and value > 0

    @property
    def need(self) -> str:
        return "must be a positive number"


@dataclass(frozen=True)
class NonNegative(Rule):
    """A finite number >= 0 (``note`` as :class:`AtLeast`'s)."""

    note: str = ""

    def ok(self, value: Any) -> bool:
        return _finite(value) and value >= 0

    @property
    def need(self) -> str:
        return f"must be >= 0{self.note}"


@dataclass(frozen=True)
class Fraction(Rule):
    """A finite number in [0, 1] (``below_one``: [0, 1)); on a tuple (one probability per view), each value."""

    below_one: bool = False

    def ok(self, value: Any) -> bool:
        values = value if isinstance(value, tuple) else (value,)
        return all(_finite(v) and 0 <= v and (v < 1 if self.below_one else v <= 1) for v in values)

    @property
    def need(self) -> str:
        return f"must be in [0, {'1)' if self.below_one else '1]'}"


@dataclass(frozen=True)
class Interval(Rule):
    """A pair ``[low, high]`` with ``0 < low <= high`` (and ``high <= upper`` when given)."""

    upper: float | None = None

    def ok(self, value: Any) -> bool:
        low, high = value
        return 0 < low <= high and (self.upper is None or high <= self.upper)

    @property
    def need(self) -> str:
        return "must be [low, high] with 0 < low <= high" + ("" if self.upper is None else f" <= {self.upper:g}")


AtLeastOne = Annotated[int, AtLeast(1)]
AtLeastZero = Annotated[int, AtLeast(0)]
Probability = Annotated[float, Fraction()]


def check_fields(section: Any, prefix: str = "") -> None:
    """Check every field of dataclass ``section`` against the rules declared with its type (``Annotated`` rules,
    ``Literal`` choices), and every nested section the same way; :class:`ConfigError` names the first bad one."""
    hints = get_type_hints(type(section), include_extras=True)
    for f in dataclasses.fields(section):
        value, key, hint = getattr(section, f.name), f"{prefix}{f.name}", hints[f.name]
        shown = list(value) if isinstance(value, tuple) else value
        for rule in getattr(hint, "__metadata__", ()):
            if isinstance(rule, Rule):
                check(rule.ok(value), key, shown, rule.need)
        base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
        if get_origin(base) is Literal:
            check(value in get_args(base), key, value, f"must be one of {list(get_args(base))}")
        if dataclasses.is_dataclass(value):
            check_fields(value, f"{key}.")


@dataclass
class OptimConfig:
    """SGD with momentum, linear warm-up then cosine decay to 0 (schedule on the global step).

    The defaults are the ConST-CL/CVRL pretraining recipe; each trainer's presets set their own values.
    """

    lr: Annotated[float, Positive()] = 40.96
    momentum: Annotated[float, Fraction(below_one=True)] = 0.9
    nesterov: bool = False
    # on conv/linear kernels only (official: 1e-6 * l2_loss on 'kernel' variables)
    weight_decay: Annotated[float, NonNegative()] = 1e-6
    warmup_steps: int = 2500
    # "sum": the update is the sum of per-replica gradients, as the official Keras/TPU recipe (loss not divided
    # by the replica count); "mean": the gradient of the global-batch mean loss (DDP's default). See optim.py.
    grad_reduction: Literal["sum", "mean"] = "sum"
    clip_grad_norm: Annotated[float, NonNegative(" (0: off)")] = 0.0  # 0: off (official: off)


@dataclass
class RunConfig:
    """Steps, precision, parallelism, checkpoints and logging."""

    steps: AtLeastOne = 100_000
    accum_steps: AtLeastOne = 1  # micro-batches per optimizer step (negatives come from one micro-batch)
    seed: int = 0
    device: str = "auto"  # auto: cuda if available else cpu
    precision: Literal["bf16", "fp32"] = "bf16"
    channels_last: bool = True  # channels_last_3d memory format
    sync_bn: bool = False
    compile: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs are deterministic anyway)
    checkpoint_every: AtLeastOne = 1000
    keep_checkpoints: AtLeastZero = 3
    log_every: AtLeastOne = 10
    eval_every: AtLeastZero = 0  # steps between evaluations (learners with an evaluate hook; 0: only after the last)
    progress: bool = True
    threads: AtLeastZero = 0  # torch intra-op threads per process (0: torch's default)


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


@dataclass
class TrainConfig:
    """The base of a trainer's config dataclass: the engine's sections (``preset``, ``optim``, ``run``; the trainer
    adds its own after them), JSON round trip, dotted overrides, validation.

    ``renamed_fields`` (old dotted key -> new dotted key) lists fields renamed since a run folder may have been
    written: ``config.json`` and ``-o`` overrides with the old name still work, with a DeprecationWarning.
    """

    preset: str = ""
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
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
        """Raise :class:`ConfigError` naming the first impossible value: every field by its declared rules
        (:func:`check_fields`), then what relates fields. Trainers extend this for their sections' relations (call
        ``super().validate()``)."""
        check_fields(self)
        o, r = self.optim, self.run
        check(0 <= o.warmup_steps < r.steps, "optim.warmup_steps", o.warmup_steps,
              f"must be >= 0 and below run.steps={r.steps} (the learning rate would stay near 0)")
        check(r.device == "auto" or r.device.split(":")[0] in ("cpu", "cuda", "mps", "xpu"), "run.device", r.device,
              "must be auto, cpu, cuda or cuda:N")


def get_preset(presets: dict[str, Callable[[], C]], name: str) -> C:
    """The named preset's config (validated)."""
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; presets: {sorted(presets)}")
    cfg = presets[name]()
    cfg.validate()
    return cfg
