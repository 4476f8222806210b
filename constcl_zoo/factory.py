"""``load()``: one call from a name, a folder or a Hub repo to a ready network."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import ConstclZooError
from .hub import HUB_PREFIX, download_checkpoint, parse_hub_name
from .model import BRANCHES, ConstCLBase, build_model, init_weights
from .registry import (
    PretrainedWeights,
    arch_config,
    default_weights,
    is_arch,
    list_pretrained,
    unknown_name_message,
    weights_entry,
)
from .tf_checkpoint import is_tf_checkpoint
from .weights import CONFIG_NAME, WEIGHTS_NAME, load_weights, read_weights_record, sha256_of, verify_sha256

LOCAL_PREFIX = "local-dir:"


class WeightsNotAvailableError(ConstclZooError, LookupError):
    """``pretrained=True`` for a name that has no published weights (the fix ``random_init``: ``pretrained=False``,
    ``--random-init`` on the command lines)."""


class UnknownModelError(ConstclZooError, KeyError):
    """A name that is no registered architecture or weights, no local folder and no ``hf-hub:`` repo."""


class LoadArgumentError(ConstclZooError, ValueError):
    """``load()`` arguments that contradict each other or the checkpoint (branch, dtype, revision, overrides)."""


def load(name_or_path: str | os.PathLike, *, branch: str = "global", pretrained: bool = True,
         device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         revision: str | None = None, cache_dir: str | os.PathLike | None = None, seed: int = 0,
         **config_overrides: Any) -> ConstCLBase:
    """Load a ConST-CL network, in eval mode.

    Args:
        name_or_path: a registered architecture (``"constcl_r3d50"``) or weights name (``"arch.tag"``), a local
            checkpoint folder (optionally ``"local-dir:/path"``), or ``"hf-hub:org/repo[@revision]"``.
        branch: ``"global"`` (clip embeddings ``[B, C]``), ``"region"`` (dense ``[B, C, T', H', W']`` and ROI
            features) or ``"full"`` (the pretraining network with both heads).
        pretrained: load weights; ``False`` gives a seeded random init (``seed``) of the same architecture.
        device, dtype: where and in which floating dtype the model lives (e.g. ``torch.bfloat16``).
        revision: Hub branch, tag or commit sha (same as an ``@revision`` suffix).
        cache_dir: Hub cache folder (default: ``huggingface_hub``'s, honouring ``HF_HUB_CACHE``).
        config_overrides: architecture changes for ``pretrained=False`` (e.g. ``context_length=0`` is passed as
            ``region_head={"context_length": 0}``), top-level :class:`ModelConfig` fields only.

    The model carries ``.config`` and ``.preprocess`` (uint8 ``[T, H, W, 3]`` frames -> ``[3, T, H, W]`` clip).
    """
    if branch not in BRANCHES:
        raise LoadArgumentError(f"branch must be one of {list(BRANCHES)}, got {branch!r}")
    if dtype is not None and not dtype.is_floating_point:
        raise LoadArgumentError(f"dtype must be a floating dtype such as torch.float32 or torch.bfloat16, got {dtype}")
    if config_overrides and pretrained:
        raise LoadArgumentError(f"architecture overrides {sorted(config_overrides)} only apply with pretrained=False; "
                         f"pretrained weights fix the architecture")

    config, folder, digests = _resolve(str(name_or_path), pretrained, revision, cache_dir)
    if config_overrides:
        config = _override(config, config_overrides)
    with torch.device("meta"):  # no wasted default init, and the global RNG is left alone
        model = build_model(config, branch)
    model = model.to_empty(device="cpu")
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.zero_()
    if folder is None:
        init_weights(model, seed)
    else:
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} (a checkpoint folder holds {CONFIG_NAME} "
                                    f"and {WEIGHTS_NAME})")
        for source, digest in digests:
            verify_sha256(weights, digest, source)
        load_weights(model, weights)
    return model.to(device=device, dtype=dtype).eval()


def _resolve(name: str, pretrained: bool, revision: str | None,
             cache_dir: str | os.PathLike | None) -> tuple[ModelConfig, Path | None, list[tuple[str, str]]]:
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
        entry = default_weights(name)
        if entry is None:
            have = list_pretrained()
            raise WeightsNotAvailableError(
                f"{name!r} has no published weights. Names with weights: "
                f"{', '.join(have) if have else 'none yet'}. Use ${{random_init}} for a random init, or load a "
                f"checkpoint folder / 'hf-hub:org/repo'.", fixes={"random_init": "pretrained=False"})
    if entry is None:
        raise UnknownModelError(unknown_name_message(name))
    if not pretrained:
        return arch_config(entry.arch), None, []
    return _from_registry(entry, revision, cache_dir)


def _from_registry(entry: PretrainedWeights, revision: str | None,
                   cache_dir: str | os.PathLike | None) -> tuple[ModelConfig, Path, list[tuple[str, str]]]:
    if entry.hf_hub_id is None:
        converted = converted_dir(cache_dir) / entry.name
        if (converted / CONFIG_NAME).is_file():
            return _from_folder(converted, True, extra_digests=[])
        raise WeightsNotAvailableError(
            f"{entry.name!r} is not on the Hugging Face Hub. {entry.how_to_get or ''}".strip())
    if revision is not None and entry.revision is not None and revision != entry.revision:
        raise LoadArgumentError(f"{entry.name!r} is pinned to revision {entry.revision!r}; use "
                         f"'hf-hub:{entry.hf_hub_id}@{revision}' to load another revision")
    folder = download_checkpoint(entry.hf_hub_id, entry.revision or revision, cache_dir)
    digests = [(f"the registry entry {entry.name!r}", entry.sha256)] if entry.sha256 else []
    return _from_folder(folder, True, extra_digests=digests)


def converted_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where TF checkpoints converted by ``load()`` are kept: ``cache_dir``, else ``$CONSTCL_ZOO_CACHE``, else
    ``~/.cache/constcl_zoo``; then ``converted/``."""
    root = cache_dir or os.environ.get("CONSTCL_ZOO_CACHE") or Path.home() / ".cache" / "constcl_zoo"
    return Path(root).expanduser() / "converted"


def _converted(source: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Convert a TF checkpoint once into the cache: named after its registry entry when it is a published file,
    else after the sha256 of the file (tarball) or of the ``.index`` (which holds every tensor's CRC32C)."""
    from .convert import convert_tf_checkpoint
    from .pretrained import entry_for_source_file
    from .tf_checkpoint import find_checkpoint_prefix

    entry = entry_for_source_file(source.name)
    if entry is not None:
        key = entry.name
    else:
        digest = sha256_of(source if source.is_file() and not source.name.endswith(".index")
                           else f"{find_checkpoint_prefix(source)}.index")
        key = f"{source.name.split('.')[0]}-{digest[:16]}"
    target = converted_dir(cache_dir) / key
    if (target / CONFIG_NAME).is_file():  # write_checkpoint writes config.json last: the folder is complete
        return target
    return convert_tf_checkpoint(source, target, source_url=entry.source_url if entry else None,
                                 name=entry.name if entry else None)


def _from_folder(folder: Path, pretrained: bool,
                 extra_digests: list[tuple[str, str]]) -> tuple[ModelConfig, Path | None, list[tuple[str, str]]]:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME}; a checkpoint folder holds {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME} (written by model.save_pretrained)")
    config = ModelConfig.from_json(config_path)
    if not pretrained:
        return config, None, []
    digests = list(extra_digests)
    recorded = read_weights_record(config_path).get("sha256")
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
