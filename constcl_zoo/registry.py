"""Every name the package knows, and what a short name means: one mechanism for architectures, weights, tasks and
defaults.

* **Architectures** (``arch``): a function returning its :class:`~constcl_zoo.config.ModelConfig`
  (:func:`register_arch`; the built-in ones are :mod:`constcl_zoo.archs`).
* **Weights** (``arch.tag``): a :class:`PretrainedWeights` record saying where a checkpoint folder lives — shipped
  in the package (``constcl_zoo/models``, listed in ``models/index.json``), on the Hub pinned to a revision, or a
  published file to download and convert (the official CVRL TF checkpoints) — and the sha256 of its weights.
  Architecture and weights are separate ideas, as in timm's ``resnet50.a1_in1k``.
* **Tasks**: a task name -> its model class, imported on first use (:func:`task_class`).
* **Defaults**: one table says what a name that is no weights name means — a bare ``arch`` (its default weights,
  :func:`set_default_weights`), no name at all (the default encoder) and no name with a task (that task's default
  model; :func:`set_default_model`); never inferred from registration order. The shipped models' defaults come
  from ``models/index.json``, CVRL's from :data:`CVRL_DEFAULT_TAG`.

No ConST-CL checkpoint was ever published. The CVRL R3D-50 checkpoints of the official TF code are: TF2 checkpoints
in tarballs (~127 MB each) on the TF Model Garden bucket, not on the Hugging Face Hub. ``load("cvrl_r3d50.<tag>")``
downloads the tarball into the cache (resumable, with a progress bar), converts it once into
``<cache>/converted/<name>`` (recording the tarball's URL, sha256 and size) and then loads offline from there.
``load("/path/to/<file>.tar.gz")`` and ``python -m training convert-tf`` convert a tarball fetched by hand.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import archs  # noqa: F401  (registers the built-in architectures)
from .config import ModelConfig, arch_names, is_arch, register_arch, registered_arch_config
from .errors import ConstclZooError, InvalidArgumentError

_WEIGHTS: dict[str, PretrainedWeights] = {}
# What a short name means: "arch:<arch>" -> that architecture's default weights; "task:" -> the default encoder
# (load() without a name); "task:<task>" -> that task's default model (load(task=...) without a name).
_DEFAULTS: dict[str, str] = {}
# task name -> "module:class"; modules are imported on first use by task_class().
_TASKS: dict[str, str] = {
    "recognition": "constcl_zoo.tasks.recognition:VideoClassifier",
    "tracking": "constcl_zoo.tasks.tracking:SiamFCTracker",
    "localization": "constcl_zoo.tasks.localization:ActionLocalizer",
}


class UnknownModelError(ConstclZooError, KeyError):
    """A name that is no registered architecture or weights, no local folder and no ``hf-hub:`` repo."""


class UnknownTaskError(ConstclZooError, ValueError):
    """A task name that no task module provides."""


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


# -- architectures ------------------------------------------------------------------------------------------------
def arch_config(arch: str) -> ModelConfig:
    """The configuration of a registered architecture (:func:`register_arch`)."""
    if not is_arch(arch):
        raise UnknownModelError(unknown_name_message(arch))
    return registered_arch_config(arch)


# -- weights ------------------------------------------------------------------------------------------------------
def register_weights(entry: PretrainedWeights, *, overwrite: bool = False) -> None:
    """Register published weights ``arch.tag`` (also usable for a private zoo). This does not make them the
    architecture's default; :func:`set_default_weights` does."""
    if not is_arch(entry.arch) and not entry.training_free:
        raise InvalidArgumentError(f"weights {entry.name!r}: unknown architecture {entry.arch!r}")
    if "." not in entry.name:
        raise InvalidArgumentError(f"weights names are 'arch.tag', got {entry.name!r}")
    if entry.name in _WEIGHTS and not overwrite:
        raise InvalidArgumentError(f"weights {entry.name!r} are already registered")
    _WEIGHTS[entry.name] = entry


def unregister_weights(name: str) -> None:
    """Forget ``arch.tag`` (and every default that named it)."""
    if _WEIGHTS.pop(name, None) is not None:
        for key in [k for k, v in _DEFAULTS.items() if v == name]:
            del _DEFAULTS[key]


def weights_entry(name: str) -> PretrainedWeights | None:
    return _WEIGHTS.get(name)


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Architecture names (``pretrained=False``) or names with published weights (``pretrained=True``),
    optionally filtered by a shell-style ``pattern`` such as ``"constcl*"``."""
    names = sorted(_WEIGHTS) if pretrained else arch_names()
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Sorted names ``arch.tag`` that have published weights, optionally filtered by a shell-style ``pattern``
    (``"cvrl_r3d50.*"``: one architecture's). :func:`default_weights` says which one a bare ``arch`` means."""
    return list_models(pattern, pretrained=True)


def source_file(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def entry_for_source_file(filename: str) -> PretrainedWeights | None:
    """The registered weights published as ``filename`` (e.g. ``r3d_1x_k600_800ep.tar.gz``), if any."""
    for entry in _WEIGHTS.values():
        if entry.source_url and source_file(entry.source_url) == filename:
            return entry
    return None


def unknown_name_message(name: str) -> str:
    known = arch_names() + sorted(_WEIGHTS)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown model {name!r}: not a registered architecture or weights name, not a local folder, "
            f"and not 'hf-hub:org/repo'.{hint} Registered architectures: {', '.join(arch_names())}.")


# -- tasks --------------------------------------------------------------------------------------------------------
def list_tasks() -> list[str]:
    """Names accepted by ``load(..., task=NAME)`` and found in task checkpoints."""
    return sorted(_TASKS)


def task_class(name: str) -> type[Any]:
    """The model class of task ``name`` (a :class:`~constcl_zoo.tasks.base.TaskModel`; its module is imported on
    first use)."""
    if name not in _TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; tasks: {', '.join(list_tasks())}")
    module, cls = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


# -- defaults -----------------------------------------------------------------------------------------------------
def set_default_weights(arch: str, tag: str | None) -> None:
    """Make ``arch.tag`` what ``load(arch)`` loads (``tag=None``: ``arch`` has no default)."""
    if not is_arch(arch):
        raise InvalidArgumentError(f"unknown architecture {arch!r}; registered: {', '.join(arch_names())}")
    if tag is None:
        _DEFAULTS.pop(f"arch:{arch}", None)
        return
    if f"{arch}.{tag}" not in _WEIGHTS:
        have = [n for n in sorted(_WEIGHTS) if n.startswith(f"{arch}.")]
        raise InvalidArgumentError(f"no weights {arch}.{tag} registered (register_weights first); {arch} has "
                                   f"{', '.join(have) if have else 'none'}")
    _DEFAULTS[f"arch:{arch}"] = f"{arch}.{tag}"


def set_default_model(task: str | None, name: str | None) -> None:
    """Make the registered ``name`` what ``load()`` (``task=None``: the default encoder) or ``load(task=task)``
    loads without a name (``name=None``: no default; a task without one gets the default encoder and a new head)."""
    if task is not None and task not in _TASKS:
        raise UnknownTaskError(f"unknown task {task!r}; tasks: {', '.join(list_tasks())}")
    if name is None:
        _DEFAULTS.pop(f"task:{task or ''}", None)
        return
    if name not in _WEIGHTS:
        raise InvalidArgumentError(f"no weights {name!r} registered (register_weights first)")
    _DEFAULTS[f"task:{task or ''}"] = name


def default_weights(arch: str) -> PretrainedWeights | None:
    """The weights ``load(arch)`` uses: the tag set by :func:`set_default_weights`, else ``None``."""
    name = _DEFAULTS.get(f"arch:{arch}")
    return None if name is None else _WEIGHTS[name]


def default_tags() -> dict[str, str]:
    """``{arch: tag}`` for every architecture with default weights (``load(arch)`` = ``load(f"{arch}.{tag}")``)."""
    return {k[len("arch:"):]: v.split(".", 1)[1] for k, v in sorted(_DEFAULTS.items()) if k.startswith("arch:")}


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


_NOT_INSTALLED = ("the package's default model is not installed (no constcl_zoo/models/index.json); "
                  "reinstall constcl-zoo, or name a model, e.g. load('constcl_r3d14_w16', pretrained=False)")


def default_model_name(task: str | None = None) -> str:
    """The registered name ``load()`` uses without a name: the default tracker / localizer for those tasks, else
    the default encoder (a new task head on it for other tasks)."""
    name = _DEFAULTS.get(f"task:{task}") if task is not None else None
    name = name or _DEFAULTS.get("task:")
    if name is None:
        raise WeightsNotAvailableError(_NOT_INSTALLED)
    return name


# -- the published CVRL checkpoints ---------------------------------------------------------------------------------
_CVRL_BUCKET = "https://storage.googleapis.com/tf_model_garden/vision/cvrl"
_CVRL = {
    "k600_800ep": ("r3d_1x_k600_800ep.tar.gz", "CVRL self-supervised on Kinetics-600, 800 epochs"),
    "k400_800ep": ("r3d_1x_k400_800ep.tar.gz", "CVRL self-supervised on Kinetics-400, 800 epochs"),
    "k400_200ep": ("r3d_1x_k400_200ep.tar.gz", "CVRL self-supervised on Kinetics-400, 200 epochs"),
    "imagenet_inflated": ("imagenet.tar.gz", "R3D-50 inflated from an ImageNet-pretrained ResNet-50 (CVRL's baseline)"),
}
CVRL_DEFAULT_TAG = "k600_800ep"  # what load("cvrl_r3d50") means


def _register_cvrl() -> None:
    for tag, (file, description) in _CVRL.items():
        url = f"{_CVRL_BUCKET}/{file}"
        register_weights(PretrainedWeights(
            name=f"cvrl_r3d50.{tag}",
            license="Apache-2.0 (TensorFlow Model Garden)",
            source_url=url,
            description=description + " (backbone only).",
            how_to_get=(f"It is published as a TensorFlow checkpoint (~127 MB) at {url}: with network access "
                        f"load('cvrl_r3d50.{tag}') downloads and converts it itself. By hand: download it, then "
                        f"load('/path/to/{file}') (converted once into the local cache, after which "
                        f"load('cvrl_r3d50.{tag}') works offline) or run "
                        f"`python -m training convert-tf /path/to/{file} --out DIR` and load(DIR)."),
        ))
    set_default_weights("cvrl_r3d50", CVRL_DEFAULT_TAG)


# -- the models shipped inside the package --------------------------------------------------------------------------
MODELS_DIR = Path(__file__).resolve().parent / "models"
INDEX_NAME = "index.json"


def packaged_models_dir() -> Path:
    """The folder of the checkpoints shipped in the package (``constcl_zoo/models``)."""
    return MODELS_DIR


def read_index() -> dict | None:
    """``models/index.json`` (the shipped models, defaults and sample video), or ``None`` if absent."""
    path = MODELS_DIR / INDEX_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def sample_video() -> Path:
    """The short sample video shipped with the package (see ``models/index.json`` for its source and licence)."""
    index = read_index()
    if index is None or "sample" not in index:
        raise WeightsNotAvailableError(_NOT_INSTALLED)
    return MODELS_DIR / index["sample"]["file"]


def _register_packaged() -> None:
    """The shipped models (``models/index.json``) and its defaults: the encoder (also its architecture's default
    weights) and a model per task."""
    index = read_index()
    if index is None:
        return
    for m in index["models"]:
        register_weights(PretrainedWeights(name=m["name"], package_dir=m["folder"], sha256=m["sha256"],
                                           license=m.get("license", "Apache-2.0"),
                                           description=m.get("description", ""), metrics=m.get("metrics", {}),
                                           training_free=bool(m.get("training_free", False))))
    for key, name in index["defaults"].items():
        set_default_model(None if key == "encoder" else key, name)
    arch, tag = index["defaults"]["encoder"].split(".", 1)
    set_default_weights(arch, tag)


_register_cvrl()
_register_packaged()

__all__ = [
    "CVRL_DEFAULT_TAG",
    "INDEX_NAME",
    "MODELS_DIR",
    "PretrainedWeights",
    "UnknownModelError",
    "UnknownTaskError",
    "WeightsNotAvailableError",
    "arch_config",
    "default_model_name",
    "default_tags",
    "default_weights",
    "entry_for_source_file",
    "is_arch",
    "list_models",
    "list_pretrained",
    "list_tasks",
    "packaged_models_dir",
    "read_index",
    "register_arch",
    "register_weights",
    "require_default_weights",
    "sample_video",
    "set_default_model",
    "set_default_weights",
    "source_file",
    "task_class",
    "unknown_name_message",
    "unregister_weights",
    "weights_entry",
]
