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
    """A checkpoint could not be fetched from the Hub (or its cache); the message names repo, revision and fix."""


class HubNameError(HubError, ValueError):
    """A malformed ``hf-hub:`` name, or a revision that contradicts the name's ``@revision``."""


def parse_hub_name(name: str, revision: str | None = None) -> tuple[str, str | None]:
    """``"hf-hub:org/repo@rev"`` -> ``("org/repo", "rev")``; ``revision=`` must agree with an ``@rev`` suffix."""
    spec = name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name
    repo_id, _, suffix = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubNameError(f"{name!r}: expected 'hf-hub:org/repo' or 'hf-hub:org/repo@revision'")
    if suffix and revision and suffix != revision:
        raise HubNameError(f"{name!r} pins revision {suffix!r} but revision={revision!r} was passed")
    return repo_id, (suffix or revision or None)


def download_checkpoint(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
                        filenames: tuple[str, ...] = ("config.json", "model.safetensors")) -> Path:
    """Fetch (or find in the cache) the checkpoint files of ``repo_id`` and return their local folder.

    Every failure of ``huggingface_hub`` (unknown repo or revision, gated or private repo, missing file, offline
    with nothing cached, no connection, an HTTP error) raises :class:`HubError` naming the repo, the revision and
    the fix.
    """
    from huggingface_hub import hf_hub_download

    where = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    paths = []
    for filename in filenames:
        try:
            paths.append(Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)))
        except HubError:
            raise
        except Exception as exc:
            problem = _hub_problem(exc, repo_id, revision, filename)
            if problem is None:
                raise
            raise HubError(f"{where}: {problem}") from exc
    folders = {p.parent for p in paths}
    if len(folders) != 1:  # hf_hub_download puts one revision's files in one snapshot folder
        raise HubError(f"{where}: files resolved to different snapshots {sorted(map(str, folders))}")
    return folders.pop()


def _hub_problem(exc: Exception, repo_id: str, revision: str | None, filename: str) -> str | None:
    """What went wrong and how to fix it, for an error of ``hf_hub_download``; ``None`` if it is not a Hub error."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    login = "log in with `hf login` (or set HF_TOKEN)"
    # Order matters: GatedRepoError subclasses RepositoryNotFoundError; LocalEntryNotFoundError subclasses
    # EntryNotFoundError; all HTTP errors subclass HfHubHTTPError.
    if isinstance(exc, GatedRepoError):
        return (f"the repository is gated: accept its conditions on {constants.ENDPOINT}/{repo_id} with your "
                f"account, then {login}")
    if isinstance(exc, RepositoryNotFoundError):  # some servers (mirrors) answer so for an unknown revision too
        also = f" (or it has no revision {revision!r})" if revision else ""
        return (f"repository not found at {constants.ENDPOINT}{also}: check the name"
                f"{' and revision' if revision else ''}; if it is private, {login}")
    if isinstance(exc, RevisionNotFoundError):
        return (f"revision {revision!r} not found: check the branch, tag or commit sha "
                f"({constants.ENDPOINT}/{repo_id} lists them)")
    if isinstance(exc, LocalEntryNotFoundError | OfflineModeIsEnabled):
        if getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)():
            return (f"{filename!r} is not in the local Hub cache and offline mode is on (HF_HUB_OFFLINE=1): set "
                    f"HF_HUB_OFFLINE=0 with network access to download it once, or load a local folder")
        return (f"{filename!r} is not in the local Hub cache and the Hub at {constants.ENDPOINT} cannot be reached: "
                f"check the network connection, proxy and HF_ENDPOINT, or load a local folder")
    if isinstance(exc, EntryNotFoundError):
        return f"the repository has no {filename!r}; is it a constcl-zoo checkpoint?"
    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            return f"access refused (HTTP {status}): {login} with an account that can read the repository"
        return (f"the Hub at {constants.ENDPOINT} answered HTTP {status} for {filename!r}: try again later, or set "
                f"HF_HUB_OFFLINE=1 to use the local cache")
    if isinstance(exc, HFValidationError):
        return f"not a valid repository name or revision ({exc}): check the name"
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot write the Hub cache ({exc}): set HF_HUB_CACHE to a writable folder"
    if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "requests"):
        return (f"cannot download {filename!r} from {constants.ENDPOINT} ({type(exc).__name__}: {exc}): check the "
                f"network connection, proxy and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the local cache")
    return None
