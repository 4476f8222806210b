"""``constcl-zoo embed INPUT... --out DIR --runner ray``: the same outputs, computed on a Ray cluster (the `ray`
extra; imported only for this runner).

Where ``torchrun`` splits the sorted input list statically (the slowest rank sets the wall time; a dead rank's
share is missing), Ray Data streams it: each video is decoded and cut into preprocessed windows by a CPU task
(:func:`constcl_zoo.inference.embed.iter_windows`, the package's one window path), the windows of all videos are batched
(``--batch-size``) into a pool of model actors (``--actors``: one per GPU with ``num_gpus=1`` when the cluster
has GPUs, else N on CPU) running :func:`constcl_zoo.inference.embed.inference_runner`, and the driver groups the
features back per video and writes them with :class:`~constcl_zoo.workflows.embed_run.EmbedRun` — the local runner's
writer, skip rules and index — so the folder cannot be told from the local runner's (``index.json`` says ``runner``).

Failures: a video that fails to decode is recorded in the index's ``failed`` list with its error and the job goes
on. A decode task or model actor whose process dies is retried by Ray with Ray Data's defaults (a task 3
times; an actor is restarted and its batch retried without limit; the per-call ``ray_remote_args`` that would
change these are deprecated); a video whose work still fails after that is recorded as failed, and a rerun
retries it while skipping the finished ones. ``--address`` picks the cluster to join from a machine of that cluster
(``auto``: the one running here, as ``ray start`` recorded it; ``HOST:6379``: its GCS address); without it a local
cluster is started for the run (its services listen on all interfaces, as Ray's always do) and shut down after.
Ray Client addresses (``ray://``) are refused: Ray Data does not run through Ray Client (its streaming executor
needs a full driver), so from outside the cluster submit the command as a Ray Job. Launch it once, not under
``torchrun``.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConstclZooError, UsageError
from ..inference.embed import WindowSpec, assemble, frames_of, inference_runner, iter_windows
from ..nn.preprocess import ClipPreprocess
from .embed_run import VIDEO_ERRORS, EmbedOptions, EmbedRun, Job, OutputError, dist_env, progress_bar, setup

# Test hook: when this variable names a file that exists, the first model actor call to remove it exits its
# process (as a killed worker would); Ray restarts the actor and retries the batch.
FAULT_ENV = "CONSTCL_ZOO_RAY_FAULT_FILE"
MAX_BLOCKS = 10_000  # input blocks: one video each up to this many videos, so a long video never holds up others


class RunnerError(ConstclZooError, RuntimeError):
    """The Ray job stopped (the cluster went away, or an actor could not start): finished videos are kept."""


def __getattr__(name: str):  # EngineError: the deprecated name of RunnerError
    if name == "EngineError":
        warnings.warn("constcl_zoo.workflows.embed_ray.EngineError is deprecated: use RunnerError", DeprecationWarning,
                      stacklevel=2)
        return RunnerError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _placeholder(clip_shape: tuple[int, ...]) -> np.ndarray:
    # Rows that are not windows (a video's end or error) carry a zero clip: a column has one shape.
    return np.zeros(clip_shape, dtype=np.float32)


def video_rows(row: dict[str, Any], *, preprocess: ClipPreprocess, spec: WindowSpec,
               clip_shape: tuple[int, ...]) -> Iterator[dict[str, Any]]:
    """Decode task: one row per preprocessed window (``clip`` ``[3, T, crop, crop]`` float32, ``k``, frame
    indices, times), then one ``end`` row (``k`` = the number of windows, ``num_frames``), or an ``error`` row."""
    base = {"job": int(row["job"]), "k": -1, "start_frame": -1, "end_frame": -1, "start_s": math.nan,
            "end_s": math.nan, "num_frames": -1, "error_type": "", "error": ""}
    counter, count = [0], 0
    try:
        frames, source = frames_of(row["source"])
        for k, window in enumerate(iter_windows(frames, preprocess, spec, source, counter)):
            yield {**base, "kind": "window", "k": k, "clip": window.clip.numpy(), "start_frame": window.start_frame,
                   "end_frame": window.end_frame, "start_s": window.start_s, "end_s": window.end_s}
            count = k + 1
    except VIDEO_ERRORS as exc:  # this video's problem only, as with the local runner
        yield {**base, "kind": "error", "clip": _placeholder(clip_shape), "error_type": type(exc).__name__,
               "error": str(exc)}
        return
    yield {**base, "kind": "end", "k": count, "clip": _placeholder(clip_shape), "num_frames": counter[0]}


class ModelActor:
    """A model on one device; ``__call__`` embeds the window rows of a batch (``features`` column, ``[B, ...]``
    float32) and passes the other rows through."""

    def __init__(self, model: str, branch: str, pretrained: bool, seed: int, precision: str, device: str,
                 clip_shape: tuple[int, ...]) -> None:
        from .._factory import load
        from ..inference.precision import resolve_precision

        self._context = contextlib.ExitStack()
        net = load(model, branch=branch, pretrained=pretrained, seed=seed, device=device)
        self.run = self._context.enter_context(inference_runner(net, precision=precision))
        self.precision = str(resolve_precision(precision, device))
        # The feature shape, so rows that are not windows get a placeholder of the same shape.
        self.feature_shape = tuple(self.run(torch.zeros(1, *clip_shape)).shape[1:])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fault = os.environ.get(FAULT_ENV)
        if fault:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fault)
                os._exit(1)
        clips = batch.pop("clip")
        windows = batch["kind"] == "window"
        features = np.zeros((len(clips), *self.feature_shape), dtype=np.float32)
        if windows.any():
            try:
                features[windows] = self.run(torch.from_numpy(np.ascontiguousarray(clips[windows]))).cpu().numpy()
            except RuntimeError as exc:  # e.g. out of memory: the videos of this batch fail, the job goes on
                batch["kind"] = np.where(windows, "error", batch["kind"])
                batch["error_type"] = np.where(windows, type(exc).__name__, batch["error_type"])
                batch["error"] = np.where(windows, str(exc), batch["error"])
        batch["features"] = features
        batch["precision"] = np.full(len(clips), self.precision)
        return batch


@dataclass
class _Video:
    windows: dict[int, tuple] = field(default_factory=dict)  # k -> (features, start_frame, end_frame, start_s, end_s)
    count: int | None = None  # windows in the video, once its end row came
    num_frames: int = 0
    precisions: set[str] = field(default_factory=set)


class _Collector:
    """Groups the actors' rows back per video and hands each finished video to :class:`EmbedRun`."""

    def __init__(self, run: EmbedRun, todo: list[Job], spec: WindowSpec, bar: Any) -> None:
        self.run, self.todo, self.spec, self.bar = run, todo, spec, bar
        self.pending: dict[int, _Video] = {}
        self.closed: set[int] = set()

    def add(self, row: dict[str, Any]) -> None:
        job = int(row["job"])
        if job in self.closed:
            return  # a retried task's duplicate, or a window of a video that already failed
        kind = str(row["kind"])
        if kind == "error":
            self._close(job)
            self.run.fail(self.todo[job], str(row["error_type"]), str(row["error"]))
            return
        video = self.pending.setdefault(job, _Video())
        if kind == "window":
            video.windows[int(row["k"])] = (row["features"], int(row["start_frame"]), int(row["end_frame"]),
                                            float(row["start_s"]), float(row["end_s"]))
            video.precisions.add(str(row["precision"]))
        else:
            video.count, video.num_frames = int(row["k"]), int(row["num_frames"])
        if video.count is not None and len(video.windows) == video.count:
            self._finish(job, video)

    def _finish(self, job_id: int, video: _Video) -> None:
        job = self.todo[job_id]
        self._close(job_id)
        rows = [video.windows[k] for k in range(video.count)]
        features = torch.from_numpy(np.stack([r[0] for r in rows]))
        result = assemble(features, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                          [r[4] for r in rows], video.num_frames, str(job.source), self.spec)
        try:
            self.run.save(job, result, ", ".join(sorted(video.precisions)))
        except OutputError:
            raise
        except VIDEO_ERRORS as exc:  # e.g. an unwritable subfolder: this video only
            self.run.fail(job, type(exc).__name__, str(exc))

    def _close(self, job_id: int) -> None:
        self.closed.add(job_id)
        self.pending.pop(job_id, None)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(windows=self.run.windows, failed=len(self.run.failed))

    def unfinished(self) -> list[int]:
        return [i for i in range(len(self.todo)) if i not in self.closed]


def _connect(address: str | None) -> bool:
    """Connect to (or start) the cluster unless this process already did; True when this call did."""
    import ray

    if address is not None and address.startswith("ray://"):
        raise UsageError(f"--address {address}: Ray Data does not run through Ray Client (ray://). Run the command on "
                         "a machine of the cluster with --address auto or HOST:6379 (the GCS address), for example "
                         "submitted as a Ray Job (`ray job submit -- constcl-zoo embed ...`)")
    if ray.is_initialized():
        return False
    ray.init(address=address, log_to_driver=False)
    return True


@dataclass(frozen=True)
class RayOptions:
    """The Ray runner's own settings: the cluster to join (``address``: ``"auto"``, ``HOST:PORT``; ``None``: start
    one for the run), model ``actors`` (``None``: one per GPU of the cluster, else 1), CPUs per CPU model actor and
    per decode task."""

    address: str | None = None
    actors: int | None = None
    actor_cpus: float = 1.0
    decode_cpus: float = 1.0


def run_ray(opts: EmbedOptions, ray_opts: RayOptions) -> int:
    """``constcl-zoo embed --runner ray``; the exit status as the local runner's (:func:`.embed_run.run_local`)."""
    import ray  # ModuleNotFoundError names the `ray` extra (errors.EXTRAS)
    import ray.data

    if dist_env()[1] != 1:
        raise UsageError("--runner ray runs the whole job from one driver: launch it without torchrun "
                         "(unset RANK / WORLD_SIZE)")
    started = _connect(ray_opts.address)
    try:
        if opts.device not in (None, "cpu", "cuda"):
            raise UsageError(f"--device {opts.device}: with --runner ray use cpu or cuda (each actor gets one GPU)")
        gpus = ray.cluster_resources().get("GPU", 0)
        if opts.device == "cuda" and not gpus:
            raise UsageError("--device cuda: the Ray cluster has no GPU; use --device cpu")
        use_gpu = gpus > 0 and opts.device != "cpu"
        s = setup(opts, rank=0, world_size=1, device="cpu")  # the driver's model: settings and config only
        embed_run = EmbedRun(s, overwrite=opts.overwrite, runner="ray")
        todo = []
        for job in s.jobs:
            if job.name in embed_run.existing:
                embed_run.skip(job)
            else:
                todo.append(job)
        bar = progress_bar(len(todo), opts.progress)
        index_written = False
        try:
            if todo:
                collector = _Collector(embed_run, todo, s.spec, bar)
                _execute(opts, ray_opts, s, todo, collector, actors=ray_opts.actors or (int(gpus) if use_gpu else 1),
                         use_gpu=use_gpu)
                for job_id in collector.unfinished():
                    embed_run.fail(todo[job_id], "RunnerError", "its Ray task failed after Ray's retries (see the "
                                   "Ray logs); rerun to retry it")
        finally:
            if bar is not None:
                bar.close()
            index_written = embed_run.write_index()
        return embed_run.report("ray", index_written)
    finally:
        if started:
            ray.shutdown()


def _execute(opts: EmbedOptions, ray_opts: RayOptions, s: Any, todo: list[Job], collector: _Collector, *,
             actors: int, use_gpu: bool) -> None:
    """Build the Ray Data pipeline (decode tasks -> model actors) and feed its rows to ``collector``."""
    import ray.data
    import ray.exceptions

    crop = s.model.preprocess.cfg.crop_size
    clip_shape = (3, s.spec.clip_frames, crop, crop)
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.max_errored_blocks, ctx.enable_progress_bars)
    # A block (a video) whose task still fails after Ray's retries is dropped, not fatal: its video is then
    # recorded as failed (Collector.unfinished) and the others finish.
    ctx.max_errored_blocks, ctx.enable_progress_bars = -1, False
    try:
        items = [{"job": i, "source": str(job.source)} for i, job in enumerate(todo)]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_BLOCKS))
        ds = ds.flat_map(video_rows, fn_kwargs={"preprocess": s.model.preprocess, "spec": s.spec,
                                                "clip_shape": clip_shape},
                         num_cpus=ray_opts.decode_cpus)
        ds = ds.map_batches(
            ModelActor, batch_size=opts.batch_size, batch_format="numpy", concurrency=actors,
            fn_constructor_kwargs={"model": opts.model, "branch": opts.branch, "pretrained": not opts.random_init,
                                   "seed": opts.seed, "precision": opts.precision,
                                   "device": "cuda" if use_gpu else "cpu", "clip_shape": clip_shape},
            num_gpus=1 if use_gpu else 0, num_cpus=1 if use_gpu else ray_opts.actor_cpus)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for i in range(len(batch["job"])):
                    collector.add({key: column[i] for key, column in batch.items()})
        except ray.exceptions.RayError as exc:
            raise RunnerError(f"the Ray job stopped ({type(exc).__name__}: {str(exc).splitlines()[0]}); the finished "
                              f"videos are written and listed in the index, and a rerun skips them") from exc
    finally:
        ctx.max_errored_blocks, ctx.enable_progress_bars = saved
