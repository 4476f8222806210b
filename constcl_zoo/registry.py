"""Registries of architectures (``arch``) and of published weights (``arch.tag``).

An architecture is a function returning its :class:`~constcl_zoo.config.ModelConfig`; weights are a
:class:`PretrainedWeights` record saying where a checkpoint folder lives (a Hub repo pinned to a revision) and the
sha256 of its ``model.safetensors``. Architecture and weights are separate ideas, as in timm's ``resnet50.a1_in1k``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import ModelConfig

_ARCHS: dict[str, Callable[[], ModelConfig]] = {}
_WEIGHTS: dict[str, PretrainedWeights] = {}


@dataclass(frozen=True)
class PretrainedWeights:
    """Where the weights of one ``arch.tag`` come from.

    ``hf_hub_id``/``revision`` locate a checkpoint folder on the Hub (``revision`` should be a commit sha or tag).
    ``sha256`` is the digest of its ``model.safetensors``; it is verified after every download. Weights that exist
    only in another format (e.g. the official TF checkpoints) have no ``hf_hub_id`` and say in ``how_to_get`` what
    to download and which command converts it.
    """

    name: str
    hf_hub_id: str | None = None
    revision: str | None = None
    sha256: str | None = None
    license: str = "unknown"
    source_url: str | None = None
    how_to_get: str | None = None
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.name.split(".", 1)[0]


def register_arch(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Decorator: register an architecture under the function's name."""
    if fn.__name__ in _ARCHS:
        raise ValueError(f"architecture {fn.__name__!r} is already registered")
    _ARCHS[fn.__name__] = fn
    return fn


def register_weights(entry: PretrainedWeights, *, overwrite: bool = False) -> None:
    """Register published weights ``arch.tag`` (also usable for a private zoo)."""
    if entry.arch not in _ARCHS:
        raise ValueError(f"weights {entry.name!r}: unknown architecture {entry.arch!r}")
    if "." not in entry.name:
        raise ValueError(f"weights names are 'arch.tag', got {entry.name!r}")
    if entry.name in _WEIGHTS and not overwrite:
        raise ValueError(f"weights {entry.name!r} are already registered")
    _WEIGHTS[entry.name] = entry


def unregister_weights(name: str) -> None:
    _WEIGHTS.pop(name, None)


def arch_config(arch: str) -> ModelConfig:
    """The configuration of a registered architecture."""
    if arch not in _ARCHS:
        raise KeyError(unknown_name_message(arch))
    return _ARCHS[arch]()


def weights_entry(name: str) -> PretrainedWeights | None:
    return _WEIGHTS.get(name)


def default_weights(arch: str) -> PretrainedWeights | None:
    """The first registered weights of ``arch`` (what ``load(arch)`` uses)."""
    return next((w for w in _WEIGHTS.values() if w.arch == arch), None)


def is_arch(name: str) -> bool:
    return name in _ARCHS


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Architecture names (``pretrained=False``) or names with published weights (``pretrained=True``),
    optionally filtered by a shell-style ``pattern`` such as ``"constcl*"``."""
    names = sorted(_WEIGHTS) if pretrained else sorted(_ARCHS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Names ``arch.tag`` that have published weights."""
    return list_models(pattern, pretrained=True)


def unknown_name_message(name: str) -> str:
    known = sorted(_ARCHS) + sorted(_WEIGHTS)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown model {name!r}: not a registered architecture or weights name, not a local folder, "
            f"and not 'hf-hub:org/repo'.{hint} Registered architectures: {', '.join(sorted(_ARCHS))}.")
