"""Embedding many videos into a folder, resumable and sharded: the run behind ``constcl-zoo embed``, the same for
both runners (``--runner local``: this process, :func:`run_local`; ``--runner ray``: a Ray cluster,
:mod:`.embed_ray`).

Inputs are video files, folders (searched recursively for video extensions) or manifests (``.txt`` / ``.lst``:
one path a line, blank lines and ``#`` comments ignored; or ``.csv`` with a ``path`` column; relative to the
manifest's folder): :func:`collect_jobs`. Each video ``V`` gives ``DIR/<name>.safetensors`` (the format:
:mod:`constcl_zoo.formats.embeddings`) where ``<name>`` is ``V``'s path relative to the folder it was found in, as
written in the manifest, or its file name. A file that exists is complete: a rerun checks it (readable, same
settings) and skips it; an unreadable one is recomputed. A rerun whose settings differ from those of the outputs
already in ``DIR`` is refused before any work (``overwrite`` recomputes them). Each run writes an index
(``index.json``, or ``index-rank{R}-of-{W}.json`` when sharded) listing every finished and failed video of its
share, plus the finished ones of earlier runs still in ``DIR``; it is written even when the run stops early (a full
disk stops it; a bad video only fails itself), so it always describes the folder. Under ``torchrun`` (``RANK`` /
``WORLD_SIZE`` in the environment) rank ``R`` takes every ``W``-th video of the sorted input list.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConstclZooError, InvalidArgumentError, InvalidTypeError, UsageError
from ..fileio import prepare_output_dir
from ..formats.embeddings import (
    FORMAT,
    OUTPUT_SUFFIX,
    CorruptOutputError,
    check_output,
    index_name,
    read_index,
    save_embeddings,
    settings_differences,
    write_index,
)
from ..inference.embed import VideoEmbeddings, WindowSpec
from ..inference.precision import resolve_precision
from ..inference.video import ManifestError, find_videos, read_manifest

MANIFEST_SUFFIXES = (".txt", ".lst", ".csv")
RUNNERS = ("local", "ray")  # what embeds the videos (--runner): this process, or a Ray cluster (embed_ray)
# Write errors that no later video can escape: the run stops instead of failing every remaining video.
_STOP_ERRNOS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name)}
# The errors that fail one video only (a bad file, a decoder error, an unwritable subfolder); others stop the run.
VIDEO_ERRORS = (ConstclZooError, OSError, RuntimeError, ValueError)


class OutputError(ConstclZooError, OSError):
    """Outputs cannot be written (a full disk, a read-only file system): the run stops; the index is kept true."""


@dataclass(frozen=True)
class EmbedOptions:
    """What to embed and how (the ``constcl-zoo embed`` flags): ``inputs`` (files, folders, manifests), the output
    folder ``out``, the ``model`` (``None``: the package's default encoder) and its ``branch`` (``random_init`` with
    ``seed``: a seeded random init), the windows (``clip_frames``, ``stride``; ``None``: the weights'),
    ``batch_size``, ``precision``, ``device`` (``None``: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU),
    ``overwrite`` (recompute existing outputs) and ``progress`` (a progress bar)."""

    inputs: Sequence[str | os.PathLike]
    out: str | os.PathLike
    model: str | None = None
    branch: str = "global"
    random_init: bool = False
    seed: int = 0
    clip_frames: int | None = None
    stride: int | None = None
    batch_size: int = 8
    precision: str = "auto"
    device: str | None = None
    overwrite: bool = False
    progress: bool = True

    def model_name(self) -> str:
        """``model``, or the package's default encoder (what the outputs record)."""
        if self.model is not None:
            return self.model
        from ..registry import default_model_name

        if self.random_init:
            raise UsageError("--random-init needs --model (an architecture name, e.g. constcl_r3d14_w16)")
        return default_model_name()


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


def progress_bar(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if enabled:
            print("(install tqdm for a progress bar: pip install 'constcl-zoo[video]')", file=sys.stderr)
        return None
    return tqdm(total=total, unit="video", disable=not enabled, dynamic_ncols=True)


def say(message: str) -> None:
    """A line on stderr; with tqdm, through ``tqdm.write`` so that a progress bar is cleared first and redrawn
    below (no half-drawn bar in front of the message)."""
    line = f"constcl-zoo embed: {message}"
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(line, file=sys.stderr)
        return
    tqdm.write(line, file=sys.stderr)


def _earlier_outputs(out_dir: Path, in_run: set[str], index_path: Path, world_size: int) -> list[str]:
    """Output files (relative names) in ``out_dir`` that this run does not produce: every one when the run is not
    sharded; under ``torchrun``, those this rank's previous index lists (the other ranks' indexes list theirs)."""
    if world_size == 1:
        found = [p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*" + OUTPUT_SUFFIX)]
    else:
        previous = read_index(index_path)
        if previous is None and index_path.is_file():
            say(f"warning: {index_path} is unreadable; it is rewritten from the files of this run")
        found = [str(v.get("file")) for v in (previous or {}).get("videos", []) if isinstance(v, dict)]
    return sorted(f for f in set(found) - in_run
                  if not Path(f).is_absolute() and ".." not in Path(f).parts and (out_dir / f).is_file())


def _write_index(path: Path, index: dict) -> bool:
    """Write the index; if that fails (a full disk), remove the old one rather than leave a wrong one."""
    try:
        write_index(path, index)
        return True
    except OSError as exc:
        try:
            path.unlink(missing_ok=True)
            fate = "the old index was removed (it no longer matched the folder)"
        except OSError:
            fate = "the old index could not be removed either and is out of date"
        say(f"error: cannot write {path} ({exc.strerror or exc}); {fate}. Free space and rerun: finished files "
            f"are kept and the rerun skips them")
        return False


@dataclass(frozen=True)
class Setup:
    """What every runner needs before any work: the jobs, the output folder, the model (on ``device``) and the
    settings recorded in each output's metadata."""

    jobs: list[Job]
    out_dir: Path
    rank: int
    world_size: int
    model: torch.nn.Module
    spec: WindowSpec
    spec_meta: dict[str, str]
    device: str


def setup(opts: EmbedOptions, *, rank: int, world_size: int, device: str) -> Setup:
    """Collect the jobs (this rank's share), check ``out`` and load the model, before any work."""
    from .._factory import load

    name = opts.model_name()
    jobs = shard(collect_jobs(opts.inputs), rank, world_size)
    out_dir = prepare_output_dir(opts.out, "--out")
    model = load(name, branch=opts.branch, pretrained=not opts.random_init, seed=opts.seed, device=device)
    spec = WindowSpec.from_preprocess(model.preprocess, opts.clip_frames, opts.stride)
    if spec.clip_frames < model.min_frames:
        raise UsageError(f"--clip-frames {spec.clip_frames}: this model needs at least {model.min_frames} frames")
    spec_meta = {"model": name + (f" (random init, seed {opts.seed})" if opts.random_init else ""),
                 "branch": opts.branch, "clip_frames": str(spec.clip_frames), "frame_stride": str(spec.frame_stride),
                 "stride": str(spec.stride)}
    return Setup(jobs, out_dir, rank, world_size, model, spec, spec_meta, device)


def _runner_argument(runner: str | None, engine: str | None) -> str:
    """``EmbedRun``'s runner, given as ``runner=`` or by its deprecated name ``engine=`` (a DeprecationWarning)."""
    if engine is not None:
        warnings.warn("EmbedRun(engine=...) is deprecated: use EmbedRun(runner=...)", DeprecationWarning,
                      stacklevel=3)
        if runner not in (None, engine):
            raise InvalidArgumentError(f"EmbedRun got runner={runner!r} and engine={engine!r}; give runner only")
        runner = engine
    if runner is None:
        raise InvalidTypeError("EmbedRun() needs the keyword argument runner= (one of RUNNERS)")
    return runner


class EmbedRun:
    """One run's bookkeeping, the same for every runner (:data:`RUNNERS`): which outputs are already done (skipped),
    writing a finished video (:meth:`save`), recording a failed one (:meth:`fail`), and the index
    (:meth:`write_index`, which records the runner), so the folder one runner leaves cannot be told apart from
    another's. ``engine=`` is the deprecated name of ``runner=``."""

    def __init__(self, s: Setup, *, overwrite: bool, runner: str | None = None, engine: str | None = None) -> None:
        """Check what the folder already holds: a run with other settings is refused untouched (UsageError)."""
        self.s, self.runner = s, _runner_argument(runner, engine)
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
                if differs := settings_differences(meta, spec_meta):
                    conflicts.append(f"{target} was made with {differs}")
                self.existing[job.name] = meta
        for name in _earlier_outputs(out_dir, in_run, self.index_path, s.world_size):
            try:
                meta = check_output(out_dir / name)
            except CorruptOutputError:
                continue  # not an output of this command (or a damaged one): not listed
            if differs := settings_differences(meta, spec_meta):
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
            say(f"warning: {stale} output(s) made with other settings are not inputs of this run: they stay in "
                f"{out_dir} but are not listed in {self.index_path.name}")

    @property
    def engine(self) -> str:
        """Deprecated: :attr:`runner`."""
        warnings.warn("EmbedRun.engine is deprecated: use EmbedRun.runner", DeprecationWarning, stacklevel=2)
        return self.runner

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
            say(f"{self.corrupt[job.name]}; recomputing it")
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
        say(f"FAILED {job.source}: {message}")

    def write_index(self) -> bool:
        """Write the index (every finished video in the folder, this run's failed ones); False if it failed."""
        videos = sorted(self.kept + self.done, key=lambda v: v["file"])
        index = {"format": FORMAT, "rank": self.s.rank, "world_size": self.s.world_size, "runner": self.runner,
                 **self.s.spec_meta, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "videos": videos, "failed": self.failed}
        return _write_index(self.index_path, index)

    def report(self, label: str, index_written: bool) -> int:
        """Say what the run did; the exit status (2: no index, 1: some video failed, else 0)."""
        earlier = f"; {len(self.kept)} finished by earlier runs kept in the index" if self.kept else ""
        say(f"{label}: {len(self.done)} video(s) done ({self.skipped} skipped as already done, "
            f"{len(self.done) - self.skipped} embedded), {len(self.failed)} failed{earlier}; "
            f"{f'index {self.index_path}' if index_written else 'no index written'}")
        if not index_written:
            return 2
        return 1 if self.failed else 0


def run_local(opts: EmbedOptions) -> int:
    """Embed in this process (one rank of ``torchrun``); the exit status (1 when any video failed)."""
    rank, world_size = dist_env()
    s = setup(opts, rank=rank, world_size=world_size, device=resolve_device(opts.device))
    run = EmbedRun(s, overwrite=opts.overwrite, runner="local")
    precision = str(resolve_precision(opts.precision, s.device))
    bar = progress_bar(len(s.jobs), opts.progress)
    index_written = False
    try:
        for job in s.jobs:
            try:
                if job.name in run.existing:
                    run.skip(job)
                else:
                    result = s.model.embed(job.source, clip_frames=s.spec.clip_frames, stride=s.spec.stride,
                                           batch_size=opts.batch_size, precision=opts.precision)
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


def resolve_device(name: str | None) -> str:
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
