"""Everything Hugging Face Hub: resolving ``hf-hub:org/repo[@revision]`` to a local checkpoint folder.

Downloads go through ``huggingface_hub``, so its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and
``HF_HUB_CACHE`` behave as documented there. ``huggingface_hub`` only checks file sizes, so digests known to the
registry or recorded in ``config.json`` are verified here after download.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConstclZooError

HUB_PREFIX = "hf-hub:"


class HubError(ConstclZooError, RuntimeError):
    """A checkpoint could not be fetched from the Hub (or its cache)."""


def parse_hub_name(name: str, revision: str | None = None) -> tuple[str, str | None]:
    """``"hf-hub:org/repo@rev"`` -> ``("org/repo", "rev")``; ``revision=`` must agree with an ``@rev`` suffix."""
    spec = name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name
    repo_id, _, suffix = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{name!r}: expected 'hf-hub:org/repo' or 'hf-hub:org/repo@revision'")
    if suffix and revision and suffix != revision:
        raise ValueError(f"{name!r} pins revision {suffix!r} but revision={revision!r} was passed")
    return repo_id, (suffix or revision or None)


def download_checkpoint(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
                        filenames: tuple[str, ...] = ("config.json", "model.safetensors")) -> Path:
    """Fetch (or find in the cache) the checkpoint files of ``repo_id`` and return their local folder."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    paths = []
    for filename in filenames:
        try:
            paths.append(Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)))
        except RepositoryNotFoundError as exc:
            raise HubError(f"{where}: repository not found (or private without a token)") from exc
        except RevisionNotFoundError as exc:
            raise HubError(f"{where}: revision {revision!r} not found") from exc
        # LocalEntryNotFoundError subclasses EntryNotFoundError: it must come first.
        except LocalEntryNotFoundError as exc:
            raise HubError(
                f"{where}: {filename!r} is not in the local Hub cache and the Hub cannot be reached "
                f"(offline mode or no network). Download it once with network access, or load a local folder."
            ) from exc
        except EntryNotFoundError as exc:
            raise HubError(f"{where}: the repository has no {filename!r}; is it a constcl-zoo checkpoint?") from exc
    folders = {p.parent for p in paths}
    if len(folders) != 1:  # hf_hub_download puts one revision's files in one snapshot folder
        raise HubError(f"{where}: files resolved to different snapshots {sorted(map(str, folders))}")
    return folders.pop()
