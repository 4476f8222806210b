"""Pretraining configuration: nested dataclasses, named presets, ``key=value`` overrides, JSON round trip.

``PretrainConfig`` holds everything a run depends on. Presets (:data:`PRESETS`) are functions returning a full
config; any field can then be overridden with dotted keys (``data.batch_size=8``, ``optim.lr=0.5``,
``boxes.method=slic``). The resolved config is written to ``<run>/config.json`` and read back on ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from constcl_zoo.config import dataclass_from_dict, to_jsonable

BoxMethod = Literal["random", "random_official", "slic", "felzenszwalb", "detector", "hog"]
KeyFramePairing = Literal["center", "nearest", "random"]


@dataclass
class DataConfig:
    """Video input and temporal sampling (official: 16 frames at stride 2, two views per video)."""

    videos: str = ""  # folder (scanned recursively) or manifest (.csv with a 'path' column, or .txt one path a line)
    extensions: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
    decoder: Literal["opencv", "pyav"] = "opencv"
    num_frames: int = 16
    frame_stride: int = 2
    crop_size: int = 224
    decode_short_side: int = 0  # resize decoded frames so the shorter side is this (0: keep native size)
    min_video_frames: int = 0  # shorter videos are skipped; 0: one clip span ((num_frames - 1) * stride + 1)
    batch_size: int = 1024  # clips (2 views each) per optimizer step, summed over processes and accumulation
    num_workers: int = 8
    prefetch_factor: int = 2
    key_frames: KeyFramePairing = "center"  # Table 4: center (default), nearest, random
    index_cache: str = ""  # JSON file caching decoded frame counts ('' -> <run>/video_index.json)


@dataclass
class AugmentConfig:
    """Per-view augmentation, identical across the frames of a view (official VS/CC pipeline)."""

    crop_area: tuple[float, float] = (0.3, 1.0)
    crop_aspect: tuple[float, float] = (0.5, 2.0)
    crop_attempts: int = 100
    flip_p: float = 0.5
    jitter_p: float = 0.8
    jitter_strength: float = 1.0
    grayscale_p: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)  # (view 1, view 2)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: tuple[float, float] = (0.0, 0.2)


@dataclass
class BoxConfig:
    """Region boxes on each view's key frame (paper §3.3)."""

    method: BoxMethod = "random"
    num_boxes: int = 8  # per view (paper: 8 random boxes, 16 slic/felzenszwalb regions)
    detector_dir: str = ""  # 'detector': folder of per-video box files (see training/regions.py)
    segment_short_side: int = 128  # slic/felzenszwalb run on the key frame resized to this short side
    hog_short_side: int = 600  # hog: people must be >= 128 px tall (its 64x128 window), so detect at this size
    min_size: float = 0.02  # boxes narrower/shorter than this (normalised) after crop are replaced


@dataclass
class ModelSection:
    """The network: a registered ``constcl_zoo`` architecture plus optional head overrides."""

    arch: str = "constcl_r3d50"
    context_length: int = -1  # -1: the architecture's; 0: vanilla region contrast (Table 6)
    init_seed: int = 0


@dataclass
class LossConfig:
    """Official ``ConstCLLosses``; ``local_weight`` 0.001 in the official code, 0.01 in the paper."""

    global_temperature: float = 0.1
    local_temperature: float = 0.2
    global_weight: float = 1.0
    local_weight: float = 0.001


@dataclass
class OptimConfig:
    """SGD with momentum, linear warm-up then cosine decay to 0 (schedule on the global step)."""

    lr: float = 40.96
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-6  # on conv/linear kernels only (official: 1e-6 * l2_loss on 'kernel' variables)
    warmup_steps: int = 2500
    # "sum": the update is the sum of per-replica gradients, as the official Keras/TPU recipe (loss not divided
    # by the replica count); "mean": the gradient of the global-batch mean loss (DDP's default). See optim.py.
    grad_reduction: Literal["sum", "mean"] = "sum"
    clip_grad_norm: float = 0.0  # 0: off (official: off)


@dataclass
class RunConfig:
    """Steps, precision, parallelism, checkpoints and logging."""

    steps: int = 100_000
    accum_steps: int = 1  # micro-batches per optimizer step (negatives come from one micro-batch)
    seed: int = 0
    device: str = "auto"  # auto: cuda if available else cpu
    precision: Literal["bf16", "fp32"] = "bf16"
    channels_last: bool = True  # channels_last_3d memory format
    sync_bn: bool = False
    compile: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs are deterministic anyway)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    progress: bool = True
    threads: int = 0  # torch intra-op threads per process (0: torch's default)


@dataclass
class PretrainConfig:
    """A complete pretraining run."""

    preset: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    boxes: BoxConfig = field(default_factory=BoxConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        return dataclass_from_dict(cls, data, "config", numbers_as_str=True)

    @classmethod
    def load(cls, path: str | Path) -> PretrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def replace(self, overrides: Iterable[str]) -> PretrainConfig:
        """A copy with ``section.field=value`` overrides applied (values parsed as JSON, else as strings)."""
        data = self.to_dict()
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not of the form section.field=value")
            parts = key.strip().split(".")
            node = data
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ValueError(f"override {item!r}: unknown section {p!r}; sections: {_sections(data)}")
                node = node[p]
            if parts[-1] not in node or isinstance(node[parts[-1]], dict):
                raise ValueError(f"override {item!r}: unknown field {key!r}; fields here: {sorted(node)}")
            node[parts[-1]] = _parse_value(raw)
        return PretrainConfig.from_dict(data)

    @property
    def clip_span(self) -> int:
        """Decoded frames covered by one view."""
        return (self.data.num_frames - 1) * self.data.frame_stride + 1


def _sections(data: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in data.items() if isinstance(v, dict))


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def paper_k400() -> PretrainConfig:
    """The paper's recipe: R3D-50 ConST-CL, batch 1024 clips, 16x224x224 at stride 2, SGD LR 40.96 with 2500
    warm-up steps and cosine decay over 100k steps (``run.steps=200000`` for the 200k model), official losses."""
    return PretrainConfig(
        preset="paper_k400",
        model=ModelSection(arch="constcl_r3d50", context_length=5),
        data=DataConfig(decode_short_side=256, batch_size=1024, num_workers=16),
        boxes=BoxConfig(method="random", num_boxes=8),
        loss=LossConfig(local_weight=0.001),
        optim=OptimConfig(lr=40.96, warmup_steps=2500),
        run=RunConfig(steps=100_000, checkpoint_every=1000, sync_bn=True, precision="bf16"),
    )


def cpu_smoke() -> PretrainConfig:
    """A small ConST-CL (``constcl_r3d14_w16``) on 8x64x64 clips, 4 clips a step: minutes on 2 CPU cores."""
    return PretrainConfig(
        preset="cpu_smoke",
        model=ModelSection(arch="constcl_r3d14_w16", context_length=3),
        data=DataConfig(num_frames=8, frame_stride=2, crop_size=64, decode_short_side=80, batch_size=4,
                        num_workers=1, prefetch_factor=2),
        boxes=BoxConfig(method="random", num_boxes=8),
        loss=LossConfig(local_weight=0.01),
        optim=OptimConfig(lr=0.5, warmup_steps=5, weight_decay=1e-6, grad_reduction="mean"),
        run=RunConfig(steps=40, checkpoint_every=20, keep_checkpoints=2, log_every=5, precision="fp32",
                      channels_last=False, threads=2),
    )


PRESETS: dict[str, Callable[[], PretrainConfig]] = {"paper_k400": paper_k400, "cpu_smoke": cpu_smoke}


def get_preset(name: str) -> PretrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name]()
