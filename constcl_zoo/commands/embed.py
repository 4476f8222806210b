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
to a temporary name and renamed (:func:`constcl_zoo.fileio.atomic_write`), so a file that exists is complete:
a rerun checks it (readable, same settings) and skips it; an unreadable one is recomputed. A rerun whose
settings differ from those of the outputs already in ``DIR`` is refused before any work (``--overwrite``
recomputes them). Each run writes an index (``index.json``, or ``index-rank{R}-of-{W}.json`` when sharded)
listing every finished and failed video of its share, plus the finished ones of earlier runs still in ``DIR``;
it is written even when the run stops early (a full disk stops it; a bad video only fails itself), so it always
describes the folder. Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` in the environment) rank ``R`` takes every
``W``-th video of the sorted input list.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..argtypes import positive_float, positive_int
from ..errors import ConstclZooError, UsageError
from ..fileio import atomic_write, prepare_output_dir
from ..inference.embed import VideoEmbeddings, WindowSpec
from ..inference.precision import PRECISIONS, resolve_precision
from ..inference.video import ManifestError, find_videos, read_manifest

FORMAT = "constcl-zoo-embeddings/1"
MANIFEST_SUFFIXES = (".txt", ".lst", ".csv")
OUTPUT_SUFFIX = ".safetensors"
TENSORS = ("embeddings", "start_s", "end_s", "start_frame", "end_frame")
# Metadata keys that must match for an existing output to count as this run's result.
_SETTINGS = ("model", "branch", "clip_frames", "frame_stride", "stride")
# Write errors that no later video can escape: the run stops instead of failing every remaining video.
_STOP_ERRNOS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name)}
# How the command lines spell the fixes the package's errors name (ConstclZooError.describe).


class OutputError(ConstclZooError, OSError):
    """Outputs cannot be written (a full disk, a read-only file system): the run stops; the index is kept true."""


class CorruptOutputError(ConstclZooError, ValueError):
    """An existing output file is unreadable or inconsistent (e.g. truncated by a crash of another tool)."""


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
                if not item.is_absolute() and ".." in item.parts:
                    raise ManifestError(f"{path}, line {entry.line}: {item} leaves the manifest's folder; use an "
                                        f"absolute path")
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
        raise UsageError(f"several inputs map to the same output name: {lines}. Give their parent folder or a "
                         f"manifest with relative paths instead")
    unique = {job.name: job for job in jobs}
    return [unique[n] for n in sorted(unique)]


def _clean(item: Path) -> str:
    return "/".join(p for p in item.parts if p not in (".", ""))


def shard(jobs: list[Job], rank: int, world_size: int) -> list[Job]:
    """Rank ``rank``'s share: every ``world_size``-th job starting at ``rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world_size}; launch with "
                         f"torchrun or unset them")
    return jobs[rank::world_size]


def dist_env() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment (set by ``torchrun``), default ``(0, 1)``."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise UsageError(f"RANK / WORLD_SIZE must be integers: {exc}") from exc


def index_name(rank: int, world_size: int) -> str:
    return "index.json" if world_size == 1 else f"index-rank{rank:05d}-of-{world_size:05d}.json"


def save_embeddings(result: VideoEmbeddings, path: Path, metadata: dict[str, str]) -> None:
    """Write one video's result as safetensors (see the module docstring), atomically."""
    from safetensors.torch import save

    tensors = {"embeddings": result.embeddings.float().contiguous(),
               "start_s": torch.from_numpy(result.start_s), "end_s": torch.from_numpy(result.end_s),
               "start_frame": torch.from_numpy(result.start_frame), "end_frame": torch.from_numpy(result.end_frame)}
    atomic_write(path, save(tensors, metadata=metadata))


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of an embeddings file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def check_output(path: Path) -> dict[str, str]:
    """The metadata of an existing embeddings file, after checking that it is complete and consistent (header,
    size, the five tensors, ``num_windows`` rows each); :class:`CorruptOutputError` otherwise."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error type for truncated or garbled files
        raise CorruptOutputError(f"{path}: unreadable ({exc})") from exc
    missing = [k for k in TENSORS if k not in shapes]
    if meta.get("format") != FORMAT or missing:
        raise CorruptOutputError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r}, missing {missing})")
    try:
        rows, _ = int(meta["num_windows"]), int(meta["num_frames"])
    except (KeyError, ValueError) as exc:
        raise CorruptOutputError(f"{path}: bad num_windows / num_frames metadata ({exc})") from exc
    if any(not shapes[k] or shapes[k][0] != rows for k in TENSORS):
        raise CorruptOutputError(f"{path}: tensors {shapes} do not all have num_windows={rows} rows")
    return meta


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


def _say(message: str) -> None:
    """A line on stderr; with tqdm, through ``tqdm.write`` so that a progress bar is cleared first and redrawn
    below (no half-drawn bar in front of the message)."""
    line = f"constcl-zoo embed: {message}"
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(line, file=sys.stderr)
        return
    tqdm.write(line, file=sys.stderr)


def _differences(meta: dict[str, str], wanted: dict[str, str]) -> str:
    """``"stride='16' (this run: '8')"`` for each setting that differs; empty when all agree."""
    return ", ".join(f"{k}={meta.get(k)!r} (this run: {wanted[k]!r})" for k in _SETTINGS if meta.get(k) != wanted[k])


def _earlier_outputs(out_dir: Path, in_run: set[str], index_path: Path, world_size: int) -> list[str]:
    """Output files (relative names) in ``out_dir`` that this run does not produce: every one when the run is not
    sharded; under ``torchrun``, those this rank's previous index lists (the other ranks' indexes list theirs)."""
    if world_size == 1:
        found = [p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*" + OUTPUT_SUFFIX)]
    else:
        previous = _read_index(index_path)
        found = [str(v.get("file")) for v in (previous or {}).get("videos", []) if isinstance(v, dict)]
    return sorted(f for f in set(found) - in_run
                  if not Path(f).is_absolute() and ".." not in Path(f).parts and (out_dir / f).is_file())


def _read_index(path: Path) -> dict | None:
    """A previous run's index, or ``None`` when there is none or it is unreadable (it is then rewritten)."""
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") == FORMAT and isinstance(index.get("videos"), list):
            return index
    except (OSError, ValueError, AttributeError):
        pass
    _say(f"warning: {path} is unreadable; it is rewritten from the files of this run")
    return None


def _write_index(path: Path, index: dict) -> bool:
    """Write the index; if that fails (a full disk), remove the old one rather than leave a wrong one."""
    try:
        atomic_write(path, json.dumps(index, indent=1) + "\n")
        return True
    except OSError as exc:
        try:
            path.unlink(missing_ok=True)
            fate = "the old index was removed (it no longer matched the folder)"
        except OSError:
            fate = "the old index could not be removed either and is out of date"
        _say(f"error: cannot write {path} ({exc.strerror or exc}); {fate}. Free space and rerun: finished files "
             f"are kept and the rerun skips them")
        return False


# The errors that fail one video only (a bad file, a decoder error, an unwritable subfolder); others stop the run.
VIDEO_ERRORS = (ConstclZooError, OSError, RuntimeError, ValueError)


@dataclass(frozen=True)
class Setup:
    """What every engine needs before any work: the jobs, the output folder, the model (on ``device``) and the
    settings recorded in each output's metadata."""

    jobs: list[Job]
    out_dir: Path
    rank: int
    world_size: int
    model: torch.nn.Module
    spec: WindowSpec
    spec_meta: dict[str, str]
    device: str


def setup(args: argparse.Namespace, *, rank: int, world_size: int, device: str) -> Setup:
    """Collect the jobs (this rank's share), check ``--out`` and load the model, before any work."""
    from .._factory import load

    jobs = shard(collect_jobs(args.inputs), rank, world_size)
    out_dir = prepare_output_dir(args.out, "--out")
    model = load(args.model, branch=args.branch, pretrained=not args.random_init, seed=args.seed, device=device)
    spec = WindowSpec.from_preprocess(model.preprocess, args.clip_frames, args.stride)
    if spec.clip_frames < model.min_frames:
        raise UsageError(f"--clip-frames {spec.clip_frames}: this model needs at least {model.min_frames} frames")
    spec_meta = {"model": args.model + (f" (random init, seed {args.seed})" if args.random_init else ""),
                 "branch": args.branch, "clip_frames": str(spec.clip_frames), "frame_stride": str(spec.frame_stride),
                 "stride": str(spec.stride)}
    return Setup(jobs, out_dir, rank, world_size, model, spec, spec_meta, device)


class EmbedRun:
    """One run's bookkeeping, the same for every engine: which outputs are already done (skipped), writing a
    finished video (:meth:`save`), recording a failed one (:meth:`fail`), and the index (:meth:`write_index`),
    so the folder an engine leaves cannot be told apart from another engine's."""

    def __init__(self, s: Setup, *, overwrite: bool, engine: str) -> None:
        """Check what the folder already holds: a run with other settings is refused untouched (UsageError)."""
        self.s, self.engine = s, engine
        self.index_path = s.out_dir / index_name(s.rank, s.world_size)
        self.existing: dict[str, dict[str, str]] = {}  # this run's outputs that are already done (skipped)
        self.corrupt: dict[str, str] = {}  # this run's outputs that are unreadable (recomputed)
        self.kept: list[dict] = []  # finished outputs of earlier runs that this run does not touch (listed again)
        self.done: list[dict] = []
        self.failed: list[dict] = []
        self.skipped = self.windows = 0
        out_dir, spec_meta = s.out_dir, s.spec_meta
        in_run = {job.output(out_dir).relative_to(out_dir).as_posix() for job in s.jobs}
        conflicts: list[str] = []
        stale = 0
        if not overwrite:
            for job in s.jobs:
                target = job.output(out_dir)
                if not target.exists():
                    continue
                try:
                    meta = check_output(target)
                except CorruptOutputError as exc:
                    self.corrupt[job.name] = str(exc)
                    continue
                if differs := _differences(meta, spec_meta):
                    conflicts.append(f"{target} was made with {differs}")
                self.existing[job.name] = meta
        for name in _earlier_outputs(out_dir, in_run, self.index_path, s.world_size):
            try:
                meta = check_output(out_dir / name)
            except CorruptOutputError:
                continue  # not an output of this command (or a damaged one): not listed
            if differs := _differences(meta, spec_meta):
                stale += 1
                if not overwrite:
                    conflicts.append(f"{out_dir / name} was made with {differs}")
                continue
            self.kept.append({"source": meta.get("source", ""), "file": name, "num_windows": int(meta["num_windows"]),
                              "num_frames": int(meta["num_frames"])})
        if conflicts:
            raise UsageError(f"{out_dir} holds embeddings made with other settings ({conflicts[0]}"
                             f"{f'; and {len(conflicts) - 1} more' if len(conflicts) > 1 else ''}): use --overwrite "
                             f"to recompute them, or another --out folder")
        if stale:
            _say(f"warning: {stale} output(s) made with other settings are not inputs of this run: they stay in "
                 f"{out_dir} but are not listed in {self.index_path.name}")

    def _entry(self, job: Job) -> dict:
        return {"source": str(job.source), "file": job.output(self.s.out_dir).relative_to(self.s.out_dir).as_posix()}

    def skip(self, job: Job) -> None:
        """Record an output that is already done (``job.name in self.existing``)."""
        meta = self.existing[job.name]
        self.skipped += 1
        self.done.append({**self._entry(job), "num_windows": int(meta["num_windows"]),
                          "num_frames": int(meta["num_frames"])})

    def save(self, job: Job, result: VideoEmbeddings, precision: str) -> None:
        """Write one finished video (``precision``: the plan it ran in, as metadata) and record it. A full disk
        raises :class:`OutputError` (the run stops); other write errors raise for :meth:`fail`."""
        from .. import __version__

        if job.name in self.corrupt:
            _say(f"{self.corrupt[job.name]}; recomputing it")
        target = job.output(self.s.out_dir)
        meta = {**self.s.spec_meta, "source": str(job.source), "format": FORMAT,
                "num_frames": str(result.num_frames), "num_windows": str(len(result)), "precision": precision,
                "constcl_zoo_version": __version__, "config": json.dumps(self.s.model.config.to_dict())}
        try:
            save_embeddings(result, target, meta)
        except OSError as exc:
            if exc.errno in _STOP_ERRNOS:
                raise OutputError(
                    f"cannot write {target}: {exc.strerror}. Free space on that device (or choose another --out) "
                    f"and rerun: the {len(self.done)} video(s) finished are kept, listed in {self.index_path.name}, "
                    f"and skipped by the rerun") from exc
            raise
        self.windows += len(result)
        self.done.append({**self._entry(job), "num_windows": len(result), "num_frames": result.num_frames})

    def fail(self, job: Job, kind: str, message: str) -> None:
        """Record a failed video: ``kind`` the error's type name, ``message`` its text."""
        error = f"{kind}: {message}"
        if job.name in self.corrupt and job.output(self.s.out_dir).exists():
            error += f" (the existing output is unreadable: {self.corrupt[job.name]})"
        self.failed.append({**self._entry(job), "error": error})
        _say(f"FAILED {job.source}: {message}")

    def write_index(self) -> bool:
        """Write the index (every finished video in the folder, this run's failed ones); False if it failed."""
        videos = sorted(self.kept + self.done, key=lambda v: v["file"])
        index = {"format": FORMAT, "rank": self.s.rank, "world_size": self.s.world_size, "engine": self.engine,
                 **self.s.spec_meta, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "videos": videos, "failed": self.failed}
        return _write_index(self.index_path, index)

    def report(self, label: str, index_written: bool) -> int:
        """Say what the run did; the exit status (2: no index, 1: some video failed, else 0)."""
        earlier = f"; {len(self.kept)} finished by earlier runs kept in the index" if self.kept else ""
        _say(f"{label}: {len(self.done)} video(s) done ({self.skipped} skipped as already done, "
             f"{len(self.done) - self.skipped} embedded), {len(self.failed)} failed{earlier}; "
             f"{f'index {self.index_path}' if index_written else 'no index written'}")
        if not index_written:
            return 2
        return 1 if self.failed else 0


def run_embed(args: argparse.Namespace) -> int:
    """The ``embed`` command; returns the exit status (1 when any video failed)."""
    if args.model is None:
        from ..registry import default_model_name

        if args.random_init:
            raise UsageError("--random-init needs --model (an architecture name, e.g. constcl_r3d14_w16)")
        args.model = default_model_name()
    if args.engine == "ray":
        from . import embed_ray  # imported only here: Ray is an optional extra

        return embed_ray.run(args)
    rank, world_size = dist_env()
    s = setup(args, rank=rank, world_size=world_size, device=_device(args.device))
    run = EmbedRun(s, overwrite=args.overwrite, engine="local")
    precision = str(resolve_precision(args.precision, s.device))
    bar = _progress(len(s.jobs), not args.no_progress)
    index_written = False
    try:
        for job in s.jobs:
            try:
                if job.name in run.existing:
                    run.skip(job)
                else:
                    result = s.model.embed(job.source, clip_frames=s.spec.clip_frames, stride=s.spec.stride,
                                           batch_size=args.batch_size, precision=args.precision)
                    run.save(job, result, precision)
            except OutputError:
                raise
            except VIDEO_ERRORS as exc:  # this video's problem only
                run.fail(job, type(exc).__name__, str(exc))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(windows=run.windows, failed=len(run.failed))
    finally:
        if bar is not None:
            bar.close()
        index_written = run.write_index()
    return run.report(f"rank {rank}/{world_size}", index_written)


def _device(name: str | None) -> str:
    """``--device`` (default: ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``), checked."""
    if name is None:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name}: not a device ({exc}); use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    return name


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``embed`` subcommand."""
    embed = subparsers.add_parser("embed", help="sliding-window embeddings of video files, folders or manifests",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    embed.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, folder, or manifest (.txt/.lst/.csv)")
    embed.add_argument("--out", required=True, help="output folder")
    embed.add_argument("--model", default=None, help="registered name, checkpoint folder or hf-hub:org/repo "
                       "(default: the package's trained default encoder)")
    embed.add_argument("--branch", choices=("global", "region"), default="global")
    embed.add_argument("--random-init", action="store_true",
                       help="random weights (for a model without published weights; smoke tests)")
    embed.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    embed.add_argument("--clip-frames", type=positive_int, default=None,
                       help="frames per window (default: the weights')")
    embed.add_argument("--stride", type=positive_int, default=None, help="decoded frames between window starts")
    embed.add_argument("--batch-size", type=positive_int, default=8)
    embed.add_argument("--precision", choices=PRECISIONS, default="auto")
    embed.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    embed.add_argument("--overwrite", action="store_true",
                       help="recompute outputs that already exist (also those made with other settings)")
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = embed.add_argument_group("--engine ray (the `ray` extra)")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process (one rank of torchrun); ray: CPU decode tasks feeding a pool of model "
                          "actors on a Ray cluster, with retries (default: local)")
    ray.add_argument("--address", default=None,
                     help="Ray cluster to join from one of its machines: auto (the one running here) or HOST:6379 "
                          "(its GCS address); none: start a local one for the run. Not ray:// (Ray Data does not "
                          "run through Ray Client: submit the command as a Ray Job instead)")
    ray.add_argument("--actors", type=positive_int, default=None,
                     help="model actors (default: one per GPU of the cluster, else 1)")
    ray.add_argument("--actor-cpus", type=positive_float, default=1.0, help="CPUs of each CPU model actor")
    ray.add_argument("--decode-cpus", type=positive_float, default=1.0, help="CPUs of each decode task")
    embed.set_defaults(func=run_embed)
    return embed
