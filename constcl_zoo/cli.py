"""``constcl-zoo embed INPUT... --out DIR``: sliding-window embeddings of many videos, resumable and sharded.

Inputs are video files, folders (searched recursively for video extensions) or manifests (``.txt`` / ``.lst``:
one path a line, blank lines and ``#`` comments ignored; or ``.csv`` with a ``path`` column; relative to the
manifest's folder). Each video ``V``
gives ``DIR/<name>.safetensors`` where ``<name>`` is ``V``'s path relative to the folder it was found in, as
written in the manifest, or its file name; it holds

* ``embeddings``: float32 ``[N, D]`` (global branch) or ``[N, C, T', H', W']`` (region branch),
* ``start_s``, ``end_s``: float64 ``[N]`` window start / end times in seconds,
* ``start_frame``, ``end_frame``: int64 ``[N]`` decoded-frame indices (first / last frame of each window),

and string metadata (source, model, branch, window settings, decoded frame count, precision). Files are written
to a temporary name and renamed, so a file that exists is complete: a rerun skips it. Each run writes an index
(``index.json``, or ``index-rank{R}-of-{W}.json`` when sharded) listing every finished and failed video of its
share. Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` in the environment) rank ``R`` takes every ``W``-th video
of the sorted input list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .embed import VideoEmbeddings, WindowSpec
from .precision import PRECISIONS, resolve_precision
from .video import find_videos, read_manifest

FORMAT = "constcl-zoo-embeddings/1"
MANIFEST_SUFFIXES = (".txt", ".lst", ".csv")
OUTPUT_SUFFIX = ".safetensors"
# Metadata keys that must match for an existing output to count as this run's result.
_SETTINGS = ("model", "branch", "clip_frames", "frame_stride", "stride")


@dataclass(frozen=True)
class Job:
    """One video to embed: where it is and its output name relative to the output folder."""

    source: Path
    name: str

    def output(self, out_dir: Path) -> Path:
        return out_dir / (self.name + OUTPUT_SUFFIX)


def collect_jobs(inputs: Sequence[str | os.PathLike]) -> list[Job]:
    """Expand files, folders and manifests into jobs sorted by output name; duplicate names raise."""
    jobs: list[Job] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = find_videos(path)
            if not found:
                raise FileNotFoundError(f"{path}: the folder holds no video file")
            jobs += [Job(v, v.relative_to(path).as_posix()) for v in found]
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            for entry in read_manifest(path):
                if not entry.path.is_file():
                    raise FileNotFoundError(f"{path}, line {entry.line}: no video file at {entry.path}")
                item = entry.written
                jobs.append(Job(entry.path, item.name if item.is_absolute() else _clean(item)))
        elif path.is_file():
            jobs.append(Job(path, path.name))
        else:
            raise FileNotFoundError(f"no file, folder or manifest at {path}")
    by_name: dict[str, list[Path]] = {}
    for job in jobs:
        by_name.setdefault(job.name, []).append(job.source)
    clashes = {n: s for n, s in by_name.items() if len({p.resolve() for p in s}) > 1}
    if clashes:
        lines = "; ".join(f"{n}: {', '.join(map(str, s))}" for n, s in sorted(clashes.items()))
        raise ValueError(f"several inputs map to the same output name: {lines}. Give their parent folder or a "
                         f"manifest with relative paths instead")
    unique = {job.name: job for job in jobs}
    return [unique[n] for n in sorted(unique)]


def _clean(item: Path) -> str:
    parts = [p for p in item.parts if p not in (".", "")]
    if ".." in parts:
        raise ValueError(f"manifest entry {item} leaves the manifest's folder; use an absolute path")
    return "/".join(parts)


def shard(jobs: list[Job], rank: int, world_size: int) -> list[Job]:
    """Rank ``rank``'s share: every ``world_size``-th job starting at ``rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world_size}")
    return jobs[rank::world_size]


def dist_env() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment (set by ``torchrun``), default ``(0, 1)``."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise ValueError(f"RANK / WORLD_SIZE must be integers: {exc}") from exc


def index_name(rank: int, world_size: int) -> str:
    return "index.json" if world_size == 1 else f"index-rank{rank:05d}-of-{world_size:05d}.json"


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a reader sees the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_embeddings(result: VideoEmbeddings, path: Path, metadata: dict[str, str]) -> None:
    """Write one video's result as safetensors (see the module docstring), atomically."""
    from safetensors.torch import save_file

    tensors = {"embeddings": result.embeddings.float().contiguous(),
               "start_s": torch.from_numpy(result.start_s), "end_s": torch.from_numpy(result.end_s),
               "start_frame": torch.from_numpy(result.start_frame), "end_frame": torch.from_numpy(result.end_frame)}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of an embeddings file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_embeddings(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of an embeddings file (``embeddings``, ``start_s``, ``end_s``, ``start_frame``, ``end_frame``)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if enabled:
            print("(install tqdm for a progress bar: pip install 'constcl-zoo[video]')", file=sys.stderr)
        return None
    return tqdm(total=total, unit="video", disable=not enabled, dynamic_ncols=True)


def run_embed(args: argparse.Namespace) -> int:
    """The ``embed`` command; returns the exit status (1 when any video failed)."""
    from . import __version__
    from .factory import load
    from .video import VideoError

    rank, world_size = dist_env()
    jobs = shard(collect_jobs(args.inputs), rank, world_size)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
    model = load(args.model, branch=args.branch, pretrained=not args.random_init, seed=args.seed, device=device)
    spec = WindowSpec.from_preprocess(model.preprocess, args.clip_frames, args.stride)
    spec_meta = {"model": args.model + (f" (random init, seed {args.seed})" if args.random_init else ""),
                 "branch": args.branch, "clip_frames": str(spec.clip_frames), "frame_stride": str(spec.frame_stride),
                 "stride": str(spec.stride)}
    done, failed = [], []
    bar = _progress(len(jobs), not args.no_progress)
    windows = 0
    for job in jobs:
        target = job.output(out_dir)
        try:
            if target.exists() and not args.overwrite:
                meta = read_metadata(target)
                _check_same_settings(target, meta, spec_meta)
            else:
                result = model.embed(job.source, clip_frames=spec.clip_frames, stride=spec.stride,
                                     batch_size=args.batch_size, precision=args.precision)
                meta = {**spec_meta, "source": str(job.source), "format": FORMAT, "num_frames": str(result.num_frames),
                        "num_windows": str(len(result)), "precision": str(resolve_precision(args.precision, device)),
                        "constcl_zoo_version": __version__, "config": json.dumps(model.config.to_dict())}
                save_embeddings(result, target, meta)
                windows += len(result)
            done.append({"source": str(job.source), "file": target.relative_to(out_dir).as_posix(),
                         "num_windows": int(meta["num_windows"]), "num_frames": int(meta["num_frames"])})
        except (VideoError, OSError, RuntimeError) as exc:
            failed.append({"source": str(job.source), "error": f"{type(exc).__name__}: {exc}"})
            print(f"constcl-zoo embed: FAILED {job.source}: {exc}", file=sys.stderr)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(windows=windows, failed=len(failed))
    if bar is not None:
        bar.close()
    index = {"format": FORMAT, "rank": rank, "world_size": world_size, **spec_meta,
             "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "videos": done, "failed": failed}
    write_atomic(out_dir / index_name(rank, world_size),
                 lambda tmp: tmp.write_text(json.dumps(index, indent=1) + "\n"))
    print(f"constcl-zoo embed: rank {rank}/{world_size}: {len(done)} video(s) done, {len(failed)} failed; "
          f"index {out_dir / index_name(rank, world_size)}", file=sys.stderr)
    return 1 if failed else 0


def _check_same_settings(target: Path, meta: dict[str, str], wanted: dict[str, str]) -> None:
    for key, value in wanted.items():
        if key in _SETTINGS and meta.get(key) != value:
            raise RuntimeError(f"{target} exists with {key}={meta.get(key)!r}, this run asks for {value!r}; "
                               f"use --overwrite or another --out folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="constcl-zoo", description="ConST-CL video representations.")
    sub = parser.add_subparsers(dest="command", required=True)
    embed = sub.add_parser("embed", help="sliding-window embeddings of video files, folders or manifests",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    embed.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, folder, or manifest (.txt/.lst/.csv)")
    embed.add_argument("--out", required=True, help="output folder")
    embed.add_argument("--model", required=True, help="registered name, checkpoint folder or hf-hub:org/repo")
    embed.add_argument("--branch", choices=("global", "region"), default="global")
    embed.add_argument("--random-init", action="store_true", help="random weights (pretrained=False; smoke tests)")
    embed.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    embed.add_argument("--clip-frames", type=int, default=None, help="frames per window (default: the weights')")
    embed.add_argument("--stride", type=int, default=None, help="decoded frames between window starts")
    embed.add_argument("--batch-size", type=int, default=8)
    embed.add_argument("--precision", choices=PRECISIONS, default="auto")
    embed.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    embed.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "embed":
            return run_embed(args)
    except (FileNotFoundError, ValueError, KeyError, ImportError) as exc:
        print(f"constcl-zoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
