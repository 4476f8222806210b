"""Pooled global-branch features of every video of a labelled split, multi-view, cached on disk.

Each video gives ``clips x crops`` views: ``clips`` windows of the weights' temporal sampling (``num_frames``
frames every ``frame_stride``) evenly spaced from the first to the last decoded frame, each cut into ``crops``
spatial crops (:func:`constcl_zoo.nn.preprocess.spatial_views`). A frozen encoder (``model(clip) -> [B, D]``, in
``inference_mode``) embeds each view; every view's feature is kept (``[N, clips * crops, D]``, clip-major) so the
probe can average scores over views.

Frames are decoded with ``constcl_zoo.inference.video`` (PyAV): a first pass counts the decoded frames (container
headers are not trusted), a second keeps only the frames some view uses and preprocesses each as it decodes. A video
shorter than one window repeats its last frame. Videos that fail to decode are skipped with a warning naming the
file and counted in ``skipped``.

The features of a split are cached as one safetensors file named by a fingerprint of the encoder (config and
a sha256 of its weights), the view settings and the video list (paths, sizes, modification times): a rerun with
the same inputs reads the file instead of decoding anything.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write
from constcl_zoo.inference.clips import clip_indices, clip_span
from constcl_zoo.inference.video import VideoError, iter_av_frames, iter_video_file
from constcl_zoo.nn.preprocess import ClipPreprocess, spatial_views

from .data import LabelledSplit

log = logging.getLogger(__name__)

FEATURES_FORMAT = 1


class FeatureError(ConstclZooError, ValueError):
    """Features cannot be extracted as asked (wrong model branch, bad view settings, no usable video)."""


@dataclass(frozen=True)
class ViewSettings:
    """Views per video: ``clips`` windows along the video x ``crops`` spatial crops (1 = the centre crop)."""

    clips: int = 1
    crops: int = 1

    def __post_init__(self) -> None:
        for name in ("clips", "crops"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FeatureError(f"{name} must be a positive integer, got {value!r}")

    @property
    def views(self) -> int:
        return self.clips * self.crops


@dataclass(frozen=True)
class SplitFeatures:
    """``features[i, v]`` is view ``v`` (clip-major: ``clip * crops + crop``) of video ``paths[i]``, label
    ``labels[i]``. ``features`` ``[N, V, D]`` float32, ``labels`` ``[N]`` int64."""

    name: str
    features: torch.Tensor
    labels: torch.Tensor
    paths: tuple[str, ...]
    classes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    settings: ViewSettings
    fingerprint: str
    cache_file: Path | None = None


# -- sampling -------------------------------------------------------------------------------------------------
def clip_frame_indices(num_decoded: int, num_frames: int, frame_stride: int, clips: int) -> list[list[int]]:
    """Decoded-frame indices of ``clips`` windows of ``num_frames`` frames every ``frame_stride``, their starts
    evenly spaced so the first window starts at frame 0 and the last ends at the last frame. Indices past the
    end (a video shorter than one window) repeat the last frame."""
    if num_decoded < 1:
        raise FeatureError("a video needs at least one decoded frame")
    room = max(0, num_decoded - clip_span(num_frames, frame_stride))
    starts = [round(i * room / (clips - 1)) if clips > 1 else room // 2 for i in range(clips)]
    return [clip_indices(s, num_frames, frame_stride, num_decoded, past_end="clamp") for s in starts]


def count_decoded_frames(path: str | os.PathLike) -> int:
    """Frames the video decodes to (no RGB conversion); raises :class:`~constcl_zoo.inference.video.VideoError`."""
    return sum(1 for _ in iter_av_frames(path))


def video_views(path: str | os.PathLike, preprocess: ClipPreprocess, settings: ViewSettings) -> torch.Tensor:
    """All views of one video: ``[clips * crops, 3, num_frames, crop, crop]`` float32 (clip-major)."""
    cfg = preprocess.cfg
    indices = clip_frame_indices(count_decoded_frames(path), cfg.num_frames, cfg.frame_stride, settings.clips)
    wanted = {i for clip in indices for i in clip}
    last = max(wanted)
    kept: dict[int, torch.Tensor] = {}  # decoded index -> [crops, 3, crop, crop]
    for frame in iter_video_file(path):
        if frame.index in wanted:
            kept[frame.index] = spatial_views(preprocess, frame.rgb[None], settings.crops)[:, :, 0]
        if frame.index >= last:
            break
    missing = sorted(wanted - kept.keys())
    if missing:  # the second decode ended earlier than the first: a flaky file
        raise VideoError(f"{path}: frame {missing[0]} decoded when counting but not when reading")
    clips = [torch.stack([kept[i] for i in clip], dim=2) for clip in indices]  # each [crops, 3, T, crop, crop]
    return torch.cat(clips)


# -- fingerprint and cache ------------------------------------------------------------------------------------
def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and bytes, in key order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def features_fingerprint(model: torch.nn.Module, split: LabelledSplit, settings: ViewSettings,
                         digest: str | None = None) -> str:
    """sha256 of what the features depend on: the encoder (config, weights), the views, the videos (path, size,
    modification time). Labels are not part of it: relabelling a split reuses its features."""
    videos = []
    for path in split.paths:
        stat = path.stat()
        videos.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    payload = {"format": FEATURES_FORMAT, "config": model.config.to_dict(),
               "weights": digest or weights_digest(model), "views": asdict(settings), "videos": videos}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$CONSTCL_ZOO_CACHE`` (else ``~/.cache/constcl_zoo``) ``/features``."""
    root = os.environ.get("CONSTCL_ZOO_CACHE") or Path.home() / ".cache" / "constcl_zoo"
    return Path(root).expanduser() / "features"


def _cache_path(cache_dir: Path, split: LabelledSplit, fingerprint: str) -> Path:
    return cache_dir / f"{split.name}-{fingerprint[:24]}.safetensors"


def _read_cache(path: Path, split: LabelledSplit, settings: ViewSettings, fingerprint: str) -> SplitFeatures | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            features = f.get_tensor("features")
    except (OSError, ValueError, RuntimeError) as exc:  # a foreign or damaged file: recompute it
        log.warning("features cache %s is unreadable (%s); extracting again", path, exc)
        return None
    if meta.get("fingerprint") != fingerprint:
        return None
    kept = json.loads(meta["kept"])  # positions in split.paths: the fingerprint fixed that list and its order
    skipped = tuple((str(split.paths[i]), reason) for i, reason in json.loads(meta["skipped"]))
    return _split_features(split, features, kept, skipped, settings, fingerprint, path)


def _split_features(split: LabelledSplit, features: torch.Tensor, kept: list[int],
                    skipped: tuple[tuple[str, str], ...], settings: ViewSettings, fingerprint: str,
                    path: Path) -> SplitFeatures:
    labels = torch.tensor([split.labels[i] for i in kept], dtype=torch.int64)
    return SplitFeatures(split.name, features, labels, tuple(str(split.paths[i]) for i in kept), split.classes,
                         split.skipped + skipped, settings, fingerprint, path)


# -- extraction ------------------------------------------------------------------------------------------------
def prefetched(paths: list[Path], work: Callable[[Path], torch.Tensor], depth: int
                ) -> Iterator[tuple[Path, torch.Tensor | Exception]]:
    """``(path, work(path) or its VideoError / OSError)`` in order, up to ``depth`` videos done ahead in threads
    (``depth=0``: in this thread)."""

    def guarded(path: Path) -> torch.Tensor | Exception:
        try:
            return work(path)
        except (VideoError, OSError) as exc:
            return exc

    if depth < 1:
        yield from ((path, guarded(path)) for path in paths)
        return
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="recognition-decode") as pool:
        pending: collections.deque[tuple[Path, Future]] = collections.deque()
        for path in paths:
            pending.append((path, pool.submit(guarded, path)))
            if len(pending) > depth:
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()


def extract_features(model: torch.nn.Module, split: LabelledSplit, settings: ViewSettings, *,
                     cache_dir: str | os.PathLike | None = None, batch_size: int = 16, decode_workers: int = 1,
                     progress: bool = True) -> SplitFeatures:
    """Features ``[N, clips * crops, D]`` of ``split``'s videos from a global-branch encoder (frozen: eval mode,
    ``inference_mode``, on the model's device), read from ``cache_dir`` when an extraction with the same
    fingerprint is there, else computed and written there (``cache_dir=None``: :func:`default_cache_dir`).
    ``decode_workers`` videos are decoded in threads ahead of the network (0: in this thread)."""
    if getattr(model, "branch", None) != "global":
        raise FeatureError(f"features come from the global branch; load the encoder with branch='global' "
                           f"(got branch {getattr(model, 'branch', None)!r})")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise FeatureError(f"batch_size must be a positive integer, got {batch_size!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = weights_digest(model)
    fingerprint = features_fingerprint(model, split, settings, digest)
    target = _cache_path(cache, split, fingerprint)
    if target.is_file():
        cached = _read_cache(target, split, settings, fingerprint)
        if cached is not None:
            log.info("split %s: features from the cache %s", split.name, target)
            return cached

    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows: list[torch.Tensor] = []
    kept: list[int] = []  # positions in split.paths
    failed: dict[int, str] = {}
    bar = tqdm(total=len(split), unit="video", desc=f"features {split.name}", disable=not progress)
    try:
        for index, (path, views) in enumerate(prefetched(
                list(split.paths), lambda p: video_views(p, model.preprocess, settings), decode_workers)):
            bar.update(1)
            if isinstance(views, Exception):
                log.warning("split %s: skipping %s: %s", split.name, path, " ".join(str(views).split()))
                failed[index] = f"{type(views).__name__}: {views}"
                continue
            with torch.inference_mode():
                out = [model(chunk.to(device)).float().cpu() for chunk in views.split(batch_size)]
            rows.append(torch.cat(out))
            kept.append(index)
    finally:
        bar.close()
        model.train(was_training)
    if not rows:
        raise FeatureError(f"split {split.name!r}: none of its {len(split)} videos decoded "
                           f"(first failure: {next(iter(failed.values()), 'none')})")
    features = torch.stack(rows).contiguous()
    meta = {"format": str(FEATURES_FORMAT), "fingerprint": fingerprint, "split": split.name,
            "kept": json.dumps(kept), "skipped": json.dumps(list(failed.items())),
            "views": json.dumps(asdict(settings)), "weights_sha256": digest, "arch": model.config.arch}
    atomic_write(target, lambda tmp: save_file({"features": features}, str(tmp), metadata=meta))
    log.info("split %s: %d videos (%d skipped) -> %s", split.name, len(kept), len(failed), target)
    skipped = tuple((str(split.paths[i]), reason) for i, reason in failed.items())
    return _split_features(split, features, kept, skipped, settings, fingerprint, target)
