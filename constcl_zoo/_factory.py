"""``load()``: one call from a name, a folder or a Hub repo to a ready network, in three steps.

1. **Resolve** the name (:func:`constcl_zoo._sources.resolve`, the one resolver): its config, the checkpoint folder
   and the digests its weights must match. No name: the registry's default (:mod:`constcl_zoo.registry`).
2. **Build** the network on the meta device (no wasted default init, the global RNG left alone), then materialise
   it on the CPU: an encoder branch (:func:`constcl_zoo.nn.model.build_model`), a task model (its class from the
   registry; a fresh, seeded head on an encoder for ``task=``), or a training-free tracker (no network).
3. **Weights**: sha256-verified and strict (:func:`constcl_zoo.checkpoint.load_weights`), or a seeded random init;
   then ``.to(device, dtype).eval()``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._sources import LOCAL_PREFIX, LoadArgumentError, Source, converted_dir, read_config, resolve
from .checkpoint import CONFIG_NAME, load_weights
from .config import ModelConfig
from .nn.model import BRANCHES, ConstCLBase, build_model, init_weights
from .registry import default_model_name, task_class
from .tasks.base import TaskConfig, TaskConfigError, TaskModel
from .tasks.tracking.config import PixelTrackerConfig
from .tasks.tracking.ncc import NCCTracker

# LOCAL_PREFIX, converted_dir and read_config live in _sources; named here too, where constcl_zoo.factory had them.
__all__ = ["LOCAL_PREFIX", "LoadArgumentError", "converted_dir", "load", "read_config"]


def load(name_or_path: str | os.PathLike | None = None, *, task: str | None = None, labels: Sequence[str] | None = None,
         head: Any = None, branch: str | None = None, pretrained: bool = True,
         device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         revision: str | None = None, cache_dir: str | os.PathLike | None = None, seed: int = 0,
         config_only: bool = False, **config_overrides: Any) -> ConstCLBase | TaskModel | NCCTracker:
    """Load a ConST-CL network or task model, in eval mode.

    Args:
        name_or_path: omitted: the package's default model, shipped in the wheel and loaded offline — the
            encoder, or for ``task="tracking"`` / ``task="localization"`` the default trained task model
            (:func:`constcl_zoo.registry.default_model_name`). Else a registered architecture
            (``"constcl_r3d50"``) or weights name (``"arch.tag"``), a local checkpoint folder (optionally
            ``"local-dir:/path"``), or ``"hf-hub:org/repo[@revision]"``. A task checkpoint (its config names a
            task) loads as that task's model (e.g. a :class:`~constcl_zoo.tasks.recognition.VideoClassifier`).
        task: the task model wanted (``constcl_zoo.tasks.list_tasks()``). One rule, decided by what the name
            is: a task checkpoint loads as saved (``task`` may only repeat its own task); an encoder gets a fresh,
            seeded head for ``task`` (``labels``, ``head``: the head's config, a dataclass or dict), e.g.
            ``task="recognition", labels=[...]``; no name means the package's default model *for that task* —
            the shipped tracker / localizer for ``"tracking"`` / ``"localization"`` (task models as saved), the
            default encoder with a fresh head for a task without a shipped model.
        branch: ``"global"`` (clip embeddings ``[B, C]``), ``"region"`` (dense ``[B, C, T', H', W']`` and ROI
            features) or ``"full"`` (the pretraining network with both heads). Default: ``"global"``, or the
            task's encoder branch.
        pretrained: load weights; ``False`` gives a seeded random init (``seed``) of the same architecture.
        device: where the model lives (e.g. ``"cuda"``; default: the CPU).
        dtype: the floating dtype of its parameters (e.g. ``torch.bfloat16``).
        revision: Hub branch, tag or commit sha (same as an ``@revision`` suffix).
        cache_dir: Hub cache folder (default: ``huggingface_hub``'s, honouring ``HF_HUB_CACHE``).
        config_only: return the config the name stands for (a :class:`~constcl_zoo.config.ModelConfig`,
            :class:`~constcl_zoo.tasks.base.TaskConfig` or :class:`~constcl_zoo.tasks.tracking.PixelTrackerConfig`:
            what the model would be) without building it or fetching weights; with ``revision`` / ``cache_dir``
            only.
        config_overrides: architecture changes for ``pretrained=False`` (e.g. ``context_length=0`` is passed as
            ``region_head={"context_length": 0}``), top-level :class:`ModelConfig` fields only.

    The model carries ``.config`` and ``.preprocess`` (uint8 ``[T, H, W, 3]`` frames -> ``[3, T, H, W]`` clip).
    """
    _check_arguments(branch, dtype, pretrained, config_overrides, config_only,
                     (task, labels, head, branch, device, dtype))
    task_cls = task_class(task) if task is not None else None
    if name_or_path is None:
        name_or_path = default_model_name(task)
        if not pretrained:
            raise LoadArgumentError("pretrained=False needs a name: the default model is trained weights "
                                    "(e.g. load('constcl_r3d14_w16', pretrained=False) for its random init)")
    source = resolve(str(name_or_path), pretrained=pretrained, config_only=config_only, revision=revision,
                     cache_dir=cache_dir)
    if config_only:
        return source.config
    if isinstance(source.config, PixelTrackerConfig):
        return _pixel_tracker(name_or_path, source, task, labels, head, branch, config_overrides)
    if isinstance(source.config, TaskConfig):
        model = _task_model(name_or_path, source, task, labels, head, branch, config_overrides, seed)
    else:
        model = _encoder(source, task_cls, labels, head, branch, config_overrides, seed)
    return model.to(device=device, dtype=dtype).eval()


def _check_arguments(branch: str | None, dtype: torch.dtype | None, pretrained: bool, overrides: dict,
                     config_only: bool, model_arguments: tuple) -> None:
    if branch is not None and branch not in BRANCHES:
        raise LoadArgumentError(f"branch must be one of {list(BRANCHES)}, got {branch!r}")
    if dtype is not None and not dtype.is_floating_point:
        raise LoadArgumentError(f"dtype must be a floating dtype such as torch.float32 or torch.bfloat16, got {dtype}")
    if overrides and pretrained:
        raise LoadArgumentError(f"architecture overrides {sorted(overrides)} only apply with pretrained=False; "
                                f"pretrained weights fix the architecture")
    if config_only and (any(a is not None for a in model_arguments) or overrides or not pretrained):
        raise LoadArgumentError("config_only=True returns the config a name stands for: it takes the name, "
                                "revision= and cache_dir= only")


def _task_model(name: Any, source: Source, task: str | None, labels: Any, head: Any, branch: str | None,
                overrides: dict, seed: int) -> TaskModel:
    """A task checkpoint, as saved: ``task`` may only repeat its task; labels, head and branch are fixed."""
    config = source.config
    if task is not None and task != config.task:
        raise TaskConfigError(f"{name} is a {config.task!r} checkpoint, not {task!r}")
    if branch is not None and branch != config.encoder_branch:
        raise TaskConfigError(f"{name} is a {config.task!r} model on the {config.encoder_branch!r} "
                              f"branch; branch={branch!r} does not apply (load the encoder for other branches)")
    if labels is not None or head is not None or overrides:
        raise TaskConfigError(f"{name} is a trained {config.task!r} model: its labels, head and "
                              f"architecture are fixed (use model.reset_classifier(labels) for new classes)")

    def build() -> TaskModel:
        try:
            return task_class(config.task)(config)
        except TaskConfigError as exc:  # fields that clash with each other (labels vs head): name the file
            raise TaskConfigError(f"{source.folder / CONFIG_NAME if source.folder else name}: {exc}") from None

    return _materialise(build, source, seed)


def _encoder(source: Source, task_cls: type[TaskModel] | None, labels: Any, head: Any, branch: str | None,
             overrides: dict, seed: int) -> ConstCLBase | TaskModel:
    """An encoder branch; with ``task_cls``, a fresh, seeded head of that task on it."""
    if task_cls is None and (labels is not None or head is not None):
        raise TaskConfigError("labels= and head= describe a task head; pass task= too (e.g. task='recognition')")
    config = _override(source.config, overrides) if overrides else source.config
    if branch is None:
        branch = task_cls.default_branch if task_cls is not None else "global"
    if task_cls is not None and branch == "full":
        raise TaskConfigError("a task head sits on the 'global' or 'region' branch, not 'full'")
    model = _materialise(lambda: build_model(config, branch), source, seed)
    if task_cls is not None:
        model = task_cls.from_encoder(model, labels=tuple(labels or ()), head=head, seed=seed)
    return model


def _pixel_tracker(name: Any, source: Source, task: str | None, labels: Any, head: Any, branch: str | None,
                   overrides: dict) -> NCCTracker:
    """A training-free tracker checkpoint (``config.json`` only; its sha256 verified where the registry knows
    it) as an :class:`~constcl_zoo.tasks.tracking.NCCTracker`."""
    if task not in (None, "tracking"):
        raise TaskConfigError(f"{name} is a 'tracking' model (training-free, on pixels), not {task!r}")
    if labels is not None or head is not None or branch is not None or overrides:
        raise TaskConfigError(f"{name} is a training-free tracker on pixels: it has no encoder branch, labels or "
                              f"architecture, and its parameters are fixed (use NCCTracker(config) for others)")
    if source.folder is not None:
        source.verify(source.folder / CONFIG_NAME)
    return NCCTracker(source.config.head, source.config.provenance)


def _materialise(build: Callable[[], torch.nn.Module], source: Source, seed: int) -> torch.nn.Module:
    """Build on the meta device (no wasted default init, the global RNG left alone), then load the checkpoint in
    ``source.folder`` (sha256-verified, strict) or, without one, a seeded random init."""
    with torch.device("meta"):
        model = build()
    model = model.to_empty(device="cpu")
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.zero_()
    if source.folder is None:
        if isinstance(model, TaskModel):  # the encoder exactly as load(arch, pretrained=False), then the head
            init_weights(model.encoder, seed)
            model.init_head(torch.Generator().manual_seed(seed))
        else:
            init_weights(model, seed)
        return model
    weights = source.weights
    source.verify(weights)
    return load_weights(model, weights)


def _override(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    data = config.to_dict()
    fields = sorted(k for k in data if k != "format_version")
    for key, value in overrides.items():
        if key not in fields:
            raise LoadArgumentError(f"unknown config field {key!r}; fields: {fields}")
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        data[key] = _merge(data[key], value)
    return ModelConfig.from_dict(data)


def _merge(base: Any, change: Any) -> Any:
    if isinstance(base, dict) and isinstance(change, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in change.items()}}
    return change
