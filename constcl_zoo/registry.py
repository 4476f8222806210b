"""Registries of architectures (``arch``) and of published weights (``arch.tag``).

An architecture is a function returning its :class:`~constcl_zoo.config.ModelConfig`; weights are a
:class:`PretrainedWeights` record saying where a checkpoint folder lives (a Hub repo pinned to a revision) and the
sha256 of its ``model.safetensors``, or a published file to download and convert). Architecture and weights are
separate ideas, as in timm's ``resnet50.a1_in1k``. Which weights a bare ``arch`` means is said explicitly per
architecture (:func:`set_default_weights`), never inferred from registration order.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import ModelConfig
from .errors import ConstclZooError, InvalidArgumentError

_ARCHS: dict[str, Callable[[], ModelConfig]] = {}
_WEIGHTS: dict[str, PretrainedWeights] = {}
_DEFAULT_TAGS: dict[str, str] = {}  # arch -> the tag that load(arch) uses


class UnknownModelError(ConstclZooError, KeyError):
    """A name that is no registered architecture or weights, no local folder and no ``hf-hub:`` repo."""


class WeightsNotAvailableError(ConstclZooError, LookupError):
    """Pretrained weights were asked for but cannot be had: the architecture has none (or no default), or they
    are neither cached nor downloadable right now. The fix ``random_init`` is spelled ``pretrained=False`` in
    Python and ``--random-init`` on the command lines."""


@dataclass(frozen=True)
class PretrainedWeights:
    """Where the weights of one ``arch.tag`` come from.

    ``hf_hub_id``/``revision`` locate a checkpoint folder on the Hub (``revision`` should be a commit sha or tag).
    ``sha256`` is the digest of its ``model.safetensors``; it is verified after every download. Weights that exist
    only in another format (e.g. the official TF checkpoints) have no ``hf_hub_id``: ``load()`` downloads
    ``source_url`` into the cache, verifies it against ``source_sha256`` when that is known, and converts it once;
    ``how_to_get`` says what to do by hand (offline). ``package_dir``: weights shipped in the wheel
    (``constcl_zoo/models/<package_dir>``), verified against ``sha256`` and loaded without any network.
    """

    name: str
    hf_hub_id: str | None = None
    revision: str | None = None
    sha256: str | None = None
    license: str = "unknown"
    source_url: str | None = None
    source_sha256: str | None = None
    how_to_get: str | None = None
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    package_dir: str | None = None  # a checkpoint folder shipped inside the package (constcl_zoo/models/...)
    # a model without weights or architecture (a training-free tracker: config.json only; sha256 is the config's)
    training_free: bool = False

    @property
    def arch(self) -> str:
        return self.name.split(".", 1)[0]


def register_arch(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Decorator: register an architecture under the function's name."""
    if fn.__name__ in _ARCHS:
        raise InvalidArgumentError(f"architecture {fn.__name__!r} is already registered")
    _ARCHS[fn.__name__] = fn
    return fn


def register_weights(entry: PretrainedWeights, *, overwrite: bool = False) -> None:
    """Register published weights ``arch.tag`` (also usable for a private zoo). This does not make them the
    architecture's default; :func:`set_default_weights` does."""
    if entry.arch not in _ARCHS and not entry.training_free:
        raise InvalidArgumentError(f"weights {entry.name!r}: unknown architecture {entry.arch!r}")
    if "." not in entry.name:
        raise InvalidArgumentError(f"weights names are 'arch.tag', got {entry.name!r}")
    if entry.name in _WEIGHTS and not overwrite:
        raise InvalidArgumentError(f"weights {entry.name!r} are already registered")
    _WEIGHTS[entry.name] = entry


def unregister_weights(name: str) -> None:
    """Forget ``arch.tag`` (and the architecture's default, if it was this)."""
    entry = _WEIGHTS.pop(name, None)
    if entry is not None and _DEFAULT_TAGS.get(entry.arch) == name.split(".", 1)[1]:
        del _DEFAULT_TAGS[entry.arch]


def set_default_weights(arch: str, tag: str | None) -> None:
    """Make ``arch.tag`` what ``load(arch)`` loads (``tag=None``: ``arch`` has no default)."""
    if arch not in _ARCHS:
        raise InvalidArgumentError(f"unknown architecture {arch!r}; registered: {', '.join(sorted(_ARCHS))}")
    if tag is None:
        _DEFAULT_TAGS.pop(arch, None)
        return
    if f"{arch}.{tag}" not in _WEIGHTS:
        have = [n for n in sorted(_WEIGHTS) if n.startswith(f"{arch}.")]
        raise InvalidArgumentError(f"no weights {arch}.{tag} registered (register_weights first); {arch} has "
                         f"{', '.join(have) if have else 'none'}")
    _DEFAULT_TAGS[arch] = tag


def arch_config(arch: str) -> ModelConfig:
    """The configuration of a registered architecture."""
    if arch not in _ARCHS:
        raise UnknownModelError(unknown_name_message(arch))
    return _ARCHS[arch]()


def weights_entry(name: str) -> PretrainedWeights | None:
    return _WEIGHTS.get(name)


def default_weights(arch: str) -> PretrainedWeights | None:
    """The weights ``load(arch)`` uses: the tag set by :func:`set_default_weights`, else ``None``."""
    tag = _DEFAULT_TAGS.get(arch)
    return None if tag is None else _WEIGHTS[f"{arch}.{tag}"]


def require_default_weights(arch: str) -> PretrainedWeights:
    """:func:`default_weights`, or a :class:`WeightsNotAvailableError` saying what exists instead."""
    entry = default_weights(arch)
    if entry is not None:
        return entry
    own = list_pretrained(f"{arch}.*")
    if own:
        raise WeightsNotAvailableError(
            f"{arch!r} has weights ({', '.join(own)}) but no default: load one by name, e.g. load({own[0]!r}), "
            f"or name a default with constcl_zoo.registry.set_default_weights({arch!r}, TAG).")
    have = list_pretrained()
    raise WeightsNotAvailableError(
        f"{arch!r} has no published weights. Names with weights: {', '.join(have) if have else 'none yet'}. "
        f"Use ${{random_init}} for a random init, or load a checkpoint folder / 'hf-hub:org/repo'.",
        fixes={"random_init": "pretrained=False"})


def is_arch(name: str) -> bool:
    return name in _ARCHS


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Architecture names (``pretrained=False``) or names with published weights (``pretrained=True``),
    optionally filtered by a shell-style ``pattern`` such as ``"constcl*"``."""
    names = sorted(_WEIGHTS) if pretrained else sorted(_ARCHS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Sorted names ``arch.tag`` that have published weights, optionally filtered by a shell-style ``pattern``
    (``"cvrl_r3d50.*"``: one architecture's). :func:`default_weights` says which one a bare ``arch`` means."""
    return list_models(pattern, pretrained=True)


def default_tags() -> dict[str, str]:
    """``{arch: tag}`` for every architecture with default weights (``load(arch)`` = ``load(f"{arch}.{tag}")``)."""
    return dict(sorted(_DEFAULT_TAGS.items()))


def unknown_name_message(name: str) -> str:
    known = sorted(_ARCHS) + sorted(_WEIGHTS)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown model {name!r}: not a registered architecture or weights name, not a local folder, "
            f"and not 'hf-hub:org/repo'.{hint} Registered architectures: {', '.join(sorted(_ARCHS))}.")
