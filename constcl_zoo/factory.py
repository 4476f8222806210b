"""``load()``: one call from a name, a folder or a Hub repo to a ready network."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig, read_config_json
from .download import cache_root, download_file, downloads_dir
from .errors import ConstclZooError
from .fileio import atomic_write
from .hub import HUB_PREFIX, download_checkpoint, parse_hub_name
from .model import BRANCHES, ConstCLBase, build_model, init_weights
from .pretrained import entry_for_source_file, packaged_models_dir, source_file
from .registry import (
    PretrainedWeights,
    UnknownModelError,
    WeightsNotAvailableError,
    arch_config,
    is_arch,
    require_default_weights,
    unknown_name_message,
    weights_entry,
)
from .tasks import task_class
from .tasks.base import TaskConfig, TaskConfigError, TaskModel, is_task_config
from .tasks.tracking import NCCTracker, PixelTrackerConfig, is_pixel_tracker_config
from .tf_checkpoint import is_tf_checkpoint
from .weights import CONFIG_NAME, WEIGHTS_NAME, load_weights, read_weights_record, sha256_of, verify_sha256

LOCAL_PREFIX = "local-dir:"


class LoadArgumentError(ConstclZooError, ValueError):
    """``load()`` arguments that contradict each other or the checkpoint (branch, dtype, revision, overrides)."""


def load(name_or_path: str | os.PathLike | None = None, *, task: str | None = None, labels: Sequence[str] | None = None,
         head: Any = None, branch: str | None = None, pretrained: bool = True,
         device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         revision: str | None = None, cache_dir: str | os.PathLike | None = None, seed: int = 0,
         **config_overrides: Any) -> ConstCLBase | TaskModel | NCCTracker:
    """Load a ConST-CL network or task model, in eval mode.

    Args:
        name_or_path: omitted: the package's default model, shipped in the wheel and loaded offline — the
            encoder, or for ``task="tracking"`` / ``task="localization"`` the default trained task model
            (:func:`constcl_zoo.pretrained.default_model_name`). Else a registered architecture
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
        config_overrides: architecture changes for ``pretrained=False`` (e.g. ``context_length=0`` is passed as
            ``region_head={"context_length": 0}``), top-level :class:`ModelConfig` fields only.

    The model carries ``.config`` and ``.preprocess`` (uint8 ``[T, H, W, 3]`` frames -> ``[3, T, H, W]`` clip).
    """
    if branch is not None and branch not in BRANCHES:
        raise LoadArgumentError(f"branch must be one of {list(BRANCHES)}, got {branch!r}")
    if dtype is not None and not dtype.is_floating_point:
        raise LoadArgumentError(f"dtype must be a floating dtype such as torch.float32 or torch.bfloat16, got {dtype}")
    if config_overrides and pretrained:
        raise LoadArgumentError(f"architecture overrides {sorted(config_overrides)} only apply with pretrained=False; "
                         f"pretrained weights fix the architecture")
    task_cls = task_class(task) if task is not None else None
    if name_or_path is None:
        from .pretrained import default_model_name

        name_or_path = default_model_name(task)
        if not pretrained:
            raise LoadArgumentError("pretrained=False needs a name: the default model is trained weights "
                                    "(e.g. load('constcl_r3d14_w16', pretrained=False) for its random init)")

    config, folder, digests = _resolve(str(name_or_path), pretrained, revision, cache_dir)
    if isinstance(config, PixelTrackerConfig):
        return _pixel_tracker(name_or_path, config, folder, digests, task, labels, head, branch, config_overrides)
    if isinstance(config, TaskConfig):
        if task is not None and task != config.task:
            raise TaskConfigError(f"{name_or_path} is a {config.task!r} checkpoint, not {task!r}")
        if branch is not None and branch != config.encoder_branch:
            raise TaskConfigError(f"{name_or_path} is a {config.task!r} model on the {config.encoder_branch!r} "
                                  f"branch; branch={branch!r} does not apply (load the encoder for other branches)")
        if labels is not None or head is not None or config_overrides:
            raise TaskConfigError(f"{name_or_path} is a trained {config.task!r} model: its labels, head and "
                                  f"architecture are fixed (use model.reset_classifier(labels) for new classes)")
        def build() -> TaskModel:
            try:
                return task_class(config.task)(config)
            except TaskConfigError as exc:  # fields that clash with each other (labels vs head): name the file
                raise TaskConfigError(f"{folder / CONFIG_NAME if folder else name_or_path}: {exc}") from None

        model = _materialise(build, folder, digests, seed)
        return model.to(device=device, dtype=dtype).eval()

    if task_cls is None and (labels is not None or head is not None):
        raise TaskConfigError("labels= and head= describe a task head; pass task= too (e.g. task='recognition')")
    if config_overrides:
        config = _override(config, config_overrides)
    if branch is None:
        branch = task_cls.default_branch if task_cls is not None else "global"
    if task_cls is not None and branch == "full":
        raise TaskConfigError("a task head sits on the 'global' or 'region' branch, not 'full'")
    model = _materialise(lambda: build_model(config, branch), folder, digests, seed)
    if task_cls is not None:
        model = task_cls.from_encoder(model, labels=tuple(labels or ()), head=head, seed=seed)
    return model.to(device=device, dtype=dtype).eval()


def _pixel_tracker(name: Any, config: PixelTrackerConfig, folder: Path | None, digests: list[tuple[str, str]],
                   task: str | None, labels: Any, head: Any, branch: str | None, overrides: dict) -> NCCTracker:
    """A training-free tracker checkpoint (``config.json`` only; its sha256 verified where the registry knows
    it) as an :class:`~constcl_zoo.tasks.tracking.NCCTracker`."""
    if task not in (None, "tracking"):
        raise TaskConfigError(f"{name} is a 'tracking' model (training-free, on pixels), not {task!r}")
    if labels is not None or head is not None or branch is not None or overrides:
        raise TaskConfigError(f"{name} is a training-free tracker on pixels: it has no encoder branch, labels or "
                              f"architecture, and its parameters are fixed (use NCCTracker(config) for others)")
    if folder is not None:
        for source, digest in digests:
            verify_sha256(folder / CONFIG_NAME, digest, source)
    return NCCTracker(config.head, config.provenance)


def _materialise(build: Callable[[], torch.nn.Module], folder: Path | None, digests: list[tuple[str, str]],
                 seed: int) -> torch.nn.Module:
    """Build on the meta device (no wasted default init, the global RNG left alone), then load the checkpoint in
    ``folder`` (sha256-verified, strict) or, without one, a seeded random init."""
    with torch.device("meta"):
        model = build()
    model = model.to_empty(device="cpu")
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.zero_()
    if folder is None:
        if isinstance(model, TaskModel):  # the encoder exactly as load(arch, pretrained=False), then the head
            init_weights(model.encoder, seed)
            model.init_head(torch.Generator().manual_seed(seed))
        else:
            init_weights(model, seed)
        return model
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} (a checkpoint folder holds {CONFIG_NAME} "
                                f"and {WEIGHTS_NAME})")
    for source, digest in digests:
        verify_sha256(weights, digest, source)
    return load_weights(model, weights)


def _resolve(name: str, pretrained: bool, revision: str | None, cache_dir: str | os.PathLike | None
             ) -> tuple[ModelConfig | TaskConfig, Path | None, list[tuple[str, str]]]:
    """-> (config, checkpoint folder or None for random init, [(who recorded it, sha256), ...])."""
    if name.startswith(HUB_PREFIX):
        repo_id, rev = parse_hub_name(name, revision)
        folder = download_checkpoint(repo_id, rev, cache_dir,
                                     filenames=(CONFIG_NAME, WEIGHTS_NAME) if pretrained else (CONFIG_NAME,))
        return _from_folder(folder, pretrained, extra_digests=[])

    local = Path(name[len(LOCAL_PREFIX):]).expanduser() if name.startswith(LOCAL_PREFIX) else Path(name)
    if is_tf_checkpoint(local):
        if revision is not None:
            raise LoadArgumentError("revision= applies to Hub checkpoints, not to a TF checkpoint")
        return _from_folder(_converted(local, cache_dir), pretrained, extra_digests=[])
    if name.startswith(LOCAL_PREFIX) or local.is_dir() or os.sep in name or name.startswith("."):
        if revision is not None:
            raise LoadArgumentError("revision= applies to Hub checkpoints, not to a local folder")
        if not local.is_dir():
            raise FileNotFoundError(f"no checkpoint folder at {local}")
        return _from_folder(local, pretrained, extra_digests=[])

    entry = weights_entry(name)
    if entry is None and is_arch(name):
        if not pretrained:
            if revision is not None:
                raise LoadArgumentError("revision= applies to pretrained weights; none are loaded with "
                                        "pretrained=False")
            return arch_config(name), None, []
        entry = require_default_weights(name)
    if entry is None:
        raise UnknownModelError(unknown_name_message(name))
    if not pretrained and not entry.training_free:  # a training-free model is its config: nothing to randomise
        return arch_config(entry.arch), None, []
    return _from_registry(entry, revision, cache_dir)


def _from_registry(entry: PretrainedWeights, revision: str | None,
                   cache_dir: str | os.PathLike | None) -> tuple[ModelConfig | TaskConfig, Path, list[tuple[str, str]]]:
    if entry.package_dir is not None:
        if revision is not None:
            raise LoadArgumentError(f"revision= applies to Hub checkpoints; {entry.name!r} ships with the package")
        folder = packaged_models_dir() / entry.package_dir
        digests = [(f"the registry entry {entry.name!r}", entry.sha256)] if entry.sha256 else []
        return _from_folder(folder, True, extra_digests=digests)
    if entry.hf_hub_id is None:
        if revision is not None:
            raise LoadArgumentError(f"revision= applies to Hub checkpoints; {entry.name!r} is converted from "
                             f"{entry.source_url}")
        converted = converted_dir(cache_dir) / entry.name
        if not (converted / CONFIG_NAME).is_file():
            if entry.source_url is None:
                raise WeightsNotAvailableError(
                    f"{entry.name!r} is not on the Hugging Face Hub. {entry.how_to_get or ''}".strip())
            source = download_file(entry.source_url, downloads_dir(cache_dir) / source_file(entry.source_url),
                                   sha256=entry.source_sha256, what=entry.name, manual=entry.how_to_get or "")
            converted = _converted(source, cache_dir, entry)
            source.unlink()  # the converted folder records its sha256, URL and size
        return _from_folder(converted, True, extra_digests=[])
    if revision is not None and entry.revision is not None and revision != entry.revision:
        raise LoadArgumentError(f"{entry.name!r} is pinned to revision {entry.revision!r}; use "
                         f"'hf-hub:{entry.hf_hub_id}@{revision}' to load another revision")
    folder = download_checkpoint(entry.hf_hub_id, entry.revision or revision, cache_dir)
    digests = [(f"the registry entry {entry.name!r}", entry.sha256)] if entry.sha256 else []
    return _from_folder(folder, True, extra_digests=digests)


def converted_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where TF checkpoints converted by ``load()`` are kept: ``<cache>/converted`` (cache: ``cache_dir``, else
    ``$CONSTCL_ZOO_CACHE``, else ``~/.cache/constcl_zoo``)."""
    return cache_root(cache_dir) / "converted"


def _converted(source: Path, cache_dir: str | os.PathLike | None, entry: PretrainedWeights | None = None) -> Path:
    """Convert a TF checkpoint once into the cache: named after its registry entry (``entry``, else the entry
    published as this file name), else after the sha256 of the file (tarball) or of the ``.index`` (which holds
    every tensor's CRC32C). A file's sha256 (checked against the entry's ``source_sha256`` when known), size and
    URL are recorded in the folder's ``config.json`` provenance and model card."""
    from .convert import convert_tf_checkpoint
    from .tf_checkpoint import find_checkpoint_prefix

    entry = entry or entry_for_source_file(source.name)
    if entry is not None:
        key = entry.name
    else:
        digest = sha256_of(source if source.is_file() and not source.name.endswith(".index")
                           else f"{find_checkpoint_prefix(source)}.index")
        key = f"{source.name.split('.')[0]}-{digest[:16]}"
    target = converted_dir(cache_dir) / key
    if (target / CONFIG_NAME).is_file():  # write_checkpoint writes config.json last: the folder is complete
        return target
    if entry is not None and entry.source_sha256 and source.is_file():
        verify_sha256(source, entry.source_sha256, f"the registry entry {entry.name!r}")
    convert_tf_checkpoint(source, target, source_url=entry.source_url if entry else None,
                          name=entry.name if entry else None)
    if source.is_file():
        _record_source_size(target, source.stat().st_size)
    return target


def _record_source_size(folder: Path, size: int) -> None:
    """Add the converted file's size (bytes) to the provenance in ``config.json`` and to the model card."""
    config_path = folder / CONFIG_NAME
    data = read_config_json(config_path)
    data["provenance"]["source_size"] = size
    atomic_write(config_path, json.dumps(data, indent=2) + "\n")
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text()
        atomic_write(card, text.replace("\n- License:", f"\n- Size: {size} bytes\n- License:", 1))


def _from_folder(folder: Path, pretrained: bool, extra_digests: list[tuple[str, str]]
                 ) -> tuple[ModelConfig | TaskConfig, Path | None, list[tuple[str, str]]]:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME}; a checkpoint folder holds {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME} (written by model.save_pretrained)")
    config = read_config(config_path)
    recorded = read_weights_record(config_path).get("sha256")  # validated even when the weights are not loaded
    if not pretrained:
        return config, None, []
    digests = list(extra_digests)
    if recorded:
        digests.append((f"{config_path}", recorded))
    return config, folder, digests


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


def read_config(config_path: str | os.PathLike) -> ModelConfig | TaskConfig | PixelTrackerConfig:
    """A checkpoint's ``config.json``: a :class:`PixelTrackerConfig` for a training-free tracker, a
    :class:`TaskConfig` when it names a task, else a :class:`ModelConfig`."""
    config_path = Path(config_path)
    data = read_config_json(config_path)
    if is_pixel_tracker_config(data):
        return PixelTrackerConfig.from_dict(data, str(config_path))
    if is_task_config(data):
        return TaskConfig.from_json(config_path)
    return ModelConfig.from_json(config_path)
