"""The only place a name becomes a checkpoint: :func:`resolve` turns what ``load()`` was given into a
:class:`Source` — the config to build, the folder holding the weights, the sha256 digests to check them against.

A name is, in this order:

1. ``hf-hub:org/repo[@revision]``: downloaded into the Hugging Face cache (:mod:`constcl_zoo.hub`);
2. a TF checkpoint (a tarball, an ``.index`` file, a prefix, or a folder of one): converted once into
   ``<cache>/converted`` (:func:`converted_dir`; :mod:`constcl_zoo.convert`);
3. a local checkpoint folder (``local-dir:PATH``, an existing folder, or anything that looks like a path);
4. registered weights ``arch.tag`` (:mod:`constcl_zoo.registry`): shipped in the package, on the Hub pinned to a
   revision, or a published TF tarball (downloaded by :mod:`constcl_zoo.download` and converted once);
5. a bare ``arch``: its default weights, or with ``pretrained=False`` its configuration.

The config of a checkpoint folder is read by :func:`read_config`: a :class:`~constcl_zoo.config.ModelConfig` (an
encoder), a :class:`~constcl_zoo.tasks.base.TaskConfig` (a task model) or a
:class:`~constcl_zoo.tasks.tracking.PixelTrackerConfig` (a training-free tracker: ``config.json`` alone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_weights_record, sha256_of, verify_sha256
from .config import ModelConfig, read_config_json
from .download import cache_root, download_file, downloads_dir
from .errors import ConstclZooError
from .hub import HUB_PREFIX, download_checkpoint, parse_hub_name
from .registry import (
    PretrainedWeights,
    UnknownModelError,
    WeightsNotAvailableError,
    arch_config,
    default_weights,
    entry_for_source_file,
    is_arch,
    packaged_models_dir,
    require_default_weights,
    source_file,
    unknown_name_message,
    weights_entry,
)
from .tasks.base import TaskConfig, is_task_config
from .tasks.tracking.config import PixelTrackerConfig, is_pixel_tracker_config
from .tf_checkpoint import find_checkpoint_prefix, is_tf_checkpoint

LOCAL_PREFIX = "local-dir:"
AnyConfig = ModelConfig | TaskConfig | PixelTrackerConfig


class LoadArgumentError(ConstclZooError, ValueError):
    """``load()`` arguments that contradict each other or the checkpoint (branch, dtype, revision, overrides)."""


@dataclass(frozen=True)
class Source:
    """A resolved name: the ``config`` to build; the checkpoint ``folder`` holding its weights (``None``: nothing to
    load, a seeded random init); ``digests``: ``(who recorded it, sha256)`` pairs the weights file must match (for a
    training-free tracker: its ``config.json``)."""

    config: AnyConfig
    folder: Path | None = None
    digests: tuple[tuple[str, str], ...] = ()

    @property
    def weights(self) -> Path:
        """The weights file (``FileNotFoundError`` naming the folder if it is missing)."""
        assert self.folder is not None
        path = self.folder / WEIGHTS_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder}: no {WEIGHTS_NAME} (a checkpoint folder holds {CONFIG_NAME} "
                                    f"and {WEIGHTS_NAME})")
        return path

    def verify(self, path: Path) -> None:
        """Check ``path`` against every recorded digest (:class:`~constcl_zoo.checkpoint.ChecksumError`)."""
        for source, digest in self.digests:
            verify_sha256(path, digest, source)


def resolve(name: str, *, pretrained: bool = True, config_only: bool = False, revision: str | None = None,
            cache_dir: str | os.PathLike | None = None) -> Source:
    """What ``name`` stands for (module docstring). ``pretrained=False``: the config only, for a seeded random
    init. ``config_only``: the config the name stands for without fetching any weights (a registered TF
    checkpoint not converted yet: its architecture's config; a bare ``arch`` without default weights: its
    config)."""
    if name.startswith(HUB_PREFIX):
        repo_id, rev = parse_hub_name(name, revision)
        weights = pretrained and not config_only
        folder = download_checkpoint(repo_id, rev, cache_dir,
                                     filenames=(CONFIG_NAME, WEIGHTS_NAME) if weights else (CONFIG_NAME,))
        return _from_folder(folder, weights)
    local = Path(name[len(LOCAL_PREFIX):]).expanduser() if name.startswith(LOCAL_PREFIX) else Path(name)
    if (local.exists() or Path(f"{local}.index").is_file()) and is_tf_checkpoint(local):
        if revision is not None:
            raise LoadArgumentError("revision= applies to Hub checkpoints, not to a TF checkpoint")
        return _from_folder(_converted(local, cache_dir), pretrained and not config_only)
    if name.startswith(LOCAL_PREFIX) or local.is_dir() or os.sep in name or name.startswith("."):
        if revision is not None:
            raise LoadArgumentError("revision= applies to Hub checkpoints, not to a local folder")
        if not local.is_dir():
            raise FileNotFoundError(f"no checkpoint folder at {local}")
        return _from_folder(local, pretrained and not config_only)
    return _registered(name, pretrained, config_only, revision, cache_dir)


def _registered(name: str, pretrained: bool, config_only: bool, revision: str | None,
                cache_dir: str | os.PathLike | None) -> Source:
    """A registered weights name, or a bare architecture."""
    entry = weights_entry(name)
    if entry is None and is_arch(name):
        if not pretrained or (config_only and default_weights(name) is None):
            if revision is not None:
                raise LoadArgumentError("revision= applies to pretrained weights; none are loaded with "
                                        "pretrained=False")
            return Source(arch_config(name))
        entry = require_default_weights(name)
    if entry is None:
        raise UnknownModelError(unknown_name_message(name))
    if not pretrained and not entry.training_free:  # a training-free model is its config: nothing to randomise
        return Source(arch_config(entry.arch))
    return _from_registry(entry, revision, cache_dir, config_only)


def _from_registry(entry: PretrainedWeights, revision: str | None, cache_dir: str | os.PathLike | None,
                   config_only: bool = False) -> Source:
    registered = ((f"the registry entry {entry.name!r}", entry.sha256),) if entry.sha256 else ()
    if entry.package_dir is not None:
        if revision is not None:
            raise LoadArgumentError(f"revision= applies to Hub checkpoints; {entry.name!r} ships with the package")
        return _from_folder(packaged_models_dir() / entry.package_dir, not config_only, registered)
    if entry.hf_hub_id is None:
        if revision is not None:
            raise LoadArgumentError(f"revision= applies to Hub checkpoints; {entry.name!r} is converted from "
                                    f"{entry.source_url}")
        converted = converted_dir(cache_dir) / entry.name
        if not (converted / CONFIG_NAME).is_file():
            if config_only:
                return Source(arch_config(entry.arch))
            if entry.source_url is None:
                raise WeightsNotAvailableError(
                    f"{entry.name!r} is not on the Hugging Face Hub. {entry.how_to_get or ''}".strip())
            source = download_file(entry.source_url, downloads_dir(cache_dir) / source_file(entry.source_url),
                                   sha256=entry.source_sha256, what=entry.name, manual=entry.how_to_get or "")
            converted = _converted(source, cache_dir, entry)
            source.unlink()  # the converted folder records its sha256, URL and size
        return _from_folder(converted, not config_only)
    if revision is not None and entry.revision is not None and revision != entry.revision:
        raise LoadArgumentError(f"{entry.name!r} is pinned to revision {entry.revision!r}; use "
                                f"'hf-hub:{entry.hf_hub_id}@{revision}' to load another revision")
    folder = download_checkpoint(entry.hf_hub_id, entry.revision or revision, cache_dir,
                                 filenames=(CONFIG_NAME,) if config_only else (CONFIG_NAME, WEIGHTS_NAME))
    return _from_folder(folder, not config_only, registered)


def _from_folder(folder: Path, weights: bool, registered: tuple[tuple[str, str], ...] = ()) -> Source:
    """A checkpoint folder; ``weights=False``: its config only (a random init, or ``config_only``)."""
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME}; a checkpoint folder holds {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME} (written by model.save_pretrained)")
    config = read_config(config_path)
    recorded = read_weights_record(config_path).get("sha256")  # validated even when the weights are not loaded
    if not weights:
        return Source(config)
    return Source(config, folder, (*registered, *(((f"{config_path}", recorded),) if recorded else ())))


def read_config(config_path: str | os.PathLike) -> AnyConfig:
    """A checkpoint's ``config.json``: a :class:`PixelTrackerConfig` for a training-free tracker, a
    :class:`TaskConfig` when it names a task, else a :class:`ModelConfig`."""
    config_path = Path(config_path)
    data = read_config_json(config_path)
    if is_pixel_tracker_config(data):
        return PixelTrackerConfig.from_dict(data, str(config_path))
    if is_task_config(data):
        return TaskConfig.from_json(config_path)
    return ModelConfig.from_json(config_path)


# -- the cache of converted TF checkpoints ---------------------------------------------------------------------------
def converted_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where TF checkpoints converted by ``load()`` are kept: ``<cache>/converted`` (cache: ``cache_dir``, else
    ``$CONSTCL_ZOO_CACHE``, else ``~/.cache/constcl_zoo``)."""
    return cache_root(cache_dir) / "converted"


def _converted(source: Path, cache_dir: str | os.PathLike | None, entry: PretrainedWeights | None = None) -> Path:
    """Convert a TF checkpoint once into the cache: named after its registry entry (``entry``, else the entry
    published as this file name), else after the sha256 of the file (tarball) or of the ``.index`` (which holds
    every tensor's CRC32C). A file's sha256 (checked against the entry's ``source_sha256`` when known), size and
    URL are recorded in the folder's ``config.json`` provenance and model card."""
    from .convert import convert_tf_checkpoint  # the converter (numpy, the TF reader): only when converting

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
                          name=entry.name if entry else None)  # records a file's sha256 and size
    return target
