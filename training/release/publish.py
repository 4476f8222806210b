"""``publish``: upload an exported checkpoint folder to the Hugging Face Hub (``create_repo``, ``upload_folder``,
``create_tag``), after checking that it is a loadable constcl_zoo checkpoint. Authentication is
``huggingface_hub``'s (``HF_TOKEN`` or ``huggingface-cli login``); ``endpoint`` defaults to its ``HF_ENDPOINT``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from constcl_zoo.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_weights_record, verify_sha256
from constcl_zoo.config import ModelConfig
from constcl_zoo.errors import ConstclZooError, UsageError

ALLOWED = (CONFIG_NAME, WEIGHTS_NAME, "README.md")


class PublishError(ConstclZooError, RuntimeError):
    """The Hub refused or failed an upload (authentication, permissions, network)."""


def check_folder(folder: Path) -> ModelConfig:
    """Raise unless ``folder`` holds a consistent checkpoint (config parses, weights match their recorded sha256)."""
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise UsageError(f"{folder}: no {name}; publish the folder written by 'export-checkpoint'")
    config = ModelConfig.from_json(folder / CONFIG_NAME)
    digest = read_weights_record(folder / CONFIG_NAME).get("sha256")
    if not digest:
        raise UsageError(f"{folder / CONFIG_NAME}: no weights sha256 record; re-export the checkpoint")
    verify_sha256(folder / WEIGHTS_NAME, digest, str(folder / CONFIG_NAME))
    return config


def publish(folder: Path, repo_id: str, revision: str | None = None, private: bool = False,
            endpoint: str | None = None, message: str | None = None, token: str | None = None) -> str:
    """Upload ``folder`` to ``repo_id`` (created if missing) and tag the commit ``revision``; returns the commit
    URL. Only the checkpoint files (``config.json``, ``model.safetensors``, ``README.md``) are uploaded."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HTTPError  # the HTTP client's base error (network, status)

    config = check_folder(folder)
    record = read_weights_record(folder / CONFIG_NAME)
    try:
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", allow_patterns=list(ALLOWED),
            commit_message=message or f"constcl-zoo {config.arch} checkpoint (sha256 {record['sha256'][:12]})",
            commit_description=json.dumps(config.provenance) if config.provenance else None)
        if revision:
            api.create_tag(repo_id, tag=revision, revision=info.oid, repo_type="model",
                           tag_message=f"constcl-zoo {config.arch}")
    except (HTTPError, OSError, ValueError) as exc:  # OSError: HfHubHTTPError, no token; ValueError: bad repo id
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PublishError(f"publishing {folder} to {repo_id!r} failed: {first}; check --repo-id, --endpoint and "
                           "the token (HF_TOKEN or `hf auth login`)") from exc
    return str(info.commit_url)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    u = sub.add_parser("publish", help="upload a checkpoint folder to the Hugging Face Hub")
    u.add_argument("folder", type=Path, help="checkpoint folder (export-checkpoint output)")
    u.add_argument("--repo-id", required=True, help="org/name")
    u.add_argument("--revision", default=None, help="tag to create on the uploaded commit")
    u.add_argument("--private", action="store_true")
    u.add_argument("--endpoint", default=None, help="Hub URL (default: huggingface_hub's, honours HF_ENDPOINT)")
    u.add_argument("--message", default=None, help="commit message")
    u.set_defaults(func=_run)
    return u


def _run(args: argparse.Namespace) -> int:
    url = publish(args.folder, args.repo_id, revision=args.revision, private=args.private, endpoint=args.endpoint,
                  message=args.message)
    print(f"published {url}")
    return 0
