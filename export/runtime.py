"""ONNX Runtime for files written by ``python -m export onnx``: sessions on the best provider, the embedder
(:class:`OnnxEmbedder`) and the SiamFC tracker (:class:`OnnxTracker`).

An encoder's config (and with it the preprocessing) is read from the ONNX metadata, and frames go through
``constcl_zoo``'s own :class:`~constcl_zoo.ClipPreprocess` and sliding windows
(:func:`constcl_zoo.inference.embed.embed_frames`): there is one preprocessing implementation, not two.

Providers: TensorRT, then CUDA, then CPU — each accepted only if an inference session actually starts on it
(``onnxruntime.get_device()`` says "GPU" for the ``onnxruntime-gpu`` wheel even on machines without a GPU, and
ORT silently falls back to the CPU when a CUDA session cannot start).

The tracker runs the graphs of :mod:`export.onnx.tracker` in the same tracking loop
(:class:`constcl_zoo.tasks.tracking.SiamFC`) as the PyTorch tracker, with the same ``init`` / ``update`` /
``track``:

>>> tracker = OnnxTracker("tracker_onnx/")
>>> tracker.init(frame, (x, y, w, h)); box, score = tracker.update(next_frame)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constcl_zoo import ClipPreprocess, ModelConfig
from constcl_zoo.errors import ConstclZooError, InvalidArgumentError
from constcl_zoo.inference.embed import VideoEmbeddings, VideoInput, embed_frames
from constcl_zoo.tasks.base import TaskConfig
from constcl_zoo.tasks.tracking import FrameByFrame, FrameSource, SiamFC, TrackResult

from .onnx.common import META_PREFIX, input_shape
from .onnx.tracker import CONFIG_FILE, EXEMPLAR_FILE, SEARCH_FILE

log = logging.getLogger(__name__)
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class ProviderError(ConstclZooError, RuntimeError):
    """No ONNX Runtime execution provider could create a session for the model."""


class OnnxMetadataError(ConstclZooError, ValueError):
    """The ONNX file lacks the metadata ``python -m export onnx`` writes (names the missing key)."""


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``constcl_zoo.*`` metadata of an exported model (keys without the prefix)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


def session_options(threads: int | None = None, spinning: bool = True):
    """ORT session options: all graph optimisations; ``threads`` intra-op threads (default: ORT's, one per core);
    ``spinning=False`` makes idle intra-op threads sleep instead of spinning between runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None,
                   spinning: bool = True):
    """An inference session on the first provider that works (default: TensorRT, CUDA, then CPU).

    Each candidate is tried by creating a session with it; one whose session reports another provider first
    (ORT's silent fallback) is rejected. Returns ``(session, provider)``. ``threads``, ``spinning``: see
    :func:`session_options`.
    """
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    candidates = providers or [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
    errors = []
    for provider in candidates:
        if provider not in available:
            errors.append(f"{provider}: not in this onnxruntime build ({sorted(available)})")
            continue
        chain = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(path), sess_options=session_options(threads, spinning),
                                           providers=chain)
        except Exception as exc:  # ORT raises plain RuntimeError/Fail subclasses for provider problems
            errors.append(f"{provider}: {exc}")
            continue
        if session.get_providers()[0] == provider:
            return session, provider
        errors.append(f"{provider}: the session fell back to {session.get_providers()[0]}")
    raise ProviderError(f"{path}: no execution provider could run the model: " + "; ".join(errors))


class OnnxEmbedder:
    """Embeddings from an exported ConST-CL ONNX file.

    ``run(clips)``: preprocessed float32 clips ``[B, 3, T, crop, crop]`` -> outputs ``[B, ...]`` (numpy).
    ``embed(video)``: sliding-window embeddings of a video file or frames, like ``model.embed``.
    ``preprocess``: the weights' :class:`~constcl_zoo.ClipPreprocess` (uint8 ``[T, H, W, 3]`` -> clip).
    ``spinning=False``: ORT's idle threads sleep between runs instead of spinning; use it where other sessions or
    PyTorch share the cores in the same process (spinning threads of an idle session steal their CPU time).
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None,
                 threads: int | None = None, spinning: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        self.metadata = read_metadata(self.path)
        if "config" not in self.metadata:
            raise OnnxMetadataError(f"{self.path}: no '{META_PREFIX}config' metadata; export the model with "
                                    f"`python -m export onnx`")
        self.config = ModelConfig.from_dict(json.loads(self.metadata["config"]))
        self.preprocess = ClipPreprocess(self.config.preprocess)
        self.branch = self.metadata.get("branch", "global")
        self.with_rois = json.loads(self.metadata.get("with_rois", "false"))
        self.spinning = spinning
        self.session, self.provider = create_session(self.path, providers, threads, spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self.clip_shape = input_shape(self.config)
        log.info("%s on %s", self.path, self.provider)

    def check_clips(self, clips: np.ndarray) -> np.ndarray:
        """Float32 ``[B, 3, T, crop, crop]`` clips, or ``ValueError`` naming the expected shape."""
        clips = np.asarray(clips)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != self.clip_shape:
            raise InvalidArgumentError(f"clips must have shape [B, {', '.join(map(str, self.clip_shape))}] "
                             f"(preprocessed), got {tuple(clips.shape)}")
        if not np.issubdtype(clips.dtype, np.floating):
            raise InvalidArgumentError(f"clips must be float (preprocessed to {self.config.preprocess.value_range}), "
                             f"got {clips.dtype}")
        return np.ascontiguousarray(clips, dtype=np.float32)

    def run(self, clips: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """Network outputs for a batch of preprocessed clips (``boxes [B, N, 4]`` for a ``--with-rois`` model)."""
        feeds = {"clip": self.check_clips(clips)}
        if self.with_rois:
            if boxes is None:
                raise InvalidArgumentError(f"{self.path} takes boxes [B, N, 4] with the clips (exported --with-rois)")
            feeds["boxes"] = np.asarray(boxes, dtype=np.float32)
        return self.session.run([self.output_name], feeds)[0]

    def embed(self, video: VideoInput, *, clip_frames: int | None = None, stride: int | None = None,
              batch_size: int = 8, fps: float | None = None) -> VideoEmbeddings:
        """Sliding-window features of a whole video (see :func:`constcl_zoo.inference.embed.embed_frames`)."""
        if self.with_rois:
            raise InvalidArgumentError(f"{self.path} needs boxes per clip; embed() works on the global/region graphs")
        if clip_frames not in (None, self.config.preprocess.num_frames):
            raise InvalidArgumentError(
                f"this ONNX graph takes clips of exactly {self.config.preprocess.num_frames} frames")

        def run(clips: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.run(clips.numpy()))

        return embed_frames(run, video, self.preprocess, clip_frames=clip_frames, stride=stride,
                            batch_size=batch_size, fps=fps)


class OnnxTracker(FrameByFrame):
    """SiamFC on ONNX Runtime from an exported folder; ``providers`` / ``threads`` as
    :func:`export.runtime.create_session`."""

    def __init__(self, folder: str | os.PathLike, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG_FILE} (export a tracker with export_tracker_onnx)")
        self.config = TaskConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        self.exemplar_session, self.provider = create_session(folder / EXEMPLAR_FILE, providers, threads)
        self.search_session, _ = create_session(folder / SEARCH_FILE, providers, threads)
        bb = self.config.encoder.backbone
        self.feature_stride = bb.stem_stride[1] * bb.stem_pool_stride[1] * 2
        self._loop: SiamFC | None = None

    def _new_loop(self) -> SiamFC:
        def exemplar(z: torch.Tensor) -> np.ndarray:
            return self.exemplar_session.run(None, {"exemplar": z.numpy().astype(np.float32)})[0]

        def respond(zf: np.ndarray, x: torch.Tensor) -> torch.Tensor:
            out = self.search_session.run(None, {"search": x.numpy().astype(np.float32), "exemplar_features": zf})
            return torch.from_numpy(out[0])

        return SiamFC(self.config.head, tuple(self.config.preprocess.value_range), self.feature_stride,
                      exemplar, respond)

    def track(self, video: FrameSource, init_box: Sequence[float], **kwargs: Any) -> TrackResult:
        self._loop = self._new_loop()
        return self._loop.track(video, init_box, **kwargs)
