"""Spatio-temporal action localization (``task="localization"``): who does what, where and when.

>>> localizer = load("my_localizer/")                            # a localization checkpoint (python -m training)
>>> result = localizer.localize("video.mp4")                      # person boxes from the built-in detector
>>> for frame in result.frames: print(frame.time_s, [(p.track_id, p.actions[:2]) for p in frame.persons])
>>> fresh = load("constcl_r3d50", task="localization", labels=["walk", "stand"], pretrained=False)

``forward(clip [B, 3, T, H, W], boxes [B, N, 4]) -> logits [B, N, C]`` (multi-label: sigmoid, trained with binary
cross-entropy); boxes are normalised ``(x1, y1, x2, y2)`` on the clip's key frame (its centre). The clip is whole
frames resized to ``short_side`` (no crop: people anywhere in the frame count), ``num_frames`` frames every
``frame_stride`` decoded frames around the key frame — see :meth:`ActionLocalizer.clip_preprocess`.

Two heads on the encoder's dense features ``[B, C, T', H', W']`` (region branch by default, as in the paper;
``load(..., branch="global")`` puts the head on the global res5 instead):

* ``"transformer"`` — the action transformer of Girdhar et al. 2019 ("Video Action Transformer Network", the
  AVA-Kinetics baseline the paper uses): each person's key-frame ROI feature (ROIAlign 7x7, a 1x1 reduction, a
  linear map to ``D``) is the query; the feature map, with a learned location embedding of each cell's (t, y, x)
  concatenated, projected to ``D``, gives keys and values. ``num_layers`` (3) layers, each a ``num_heads`` (2) head
  unit of width ``D`` (128): attention -> dropout -> residual + LayerNorm -> FFN -> dropout -> residual + LayerNorm.
  Then dropout and a linear classifier.
* ``"roi"`` — SlowFast's ROI head: temporal average pool, ROIAlign 7x7, spatial max pool, dropout 0.5, linear.

Both use the package's ROIAlign (:func:`constcl_zoo.nn.layers.roi_align`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...formats.boxes import check_boxes
from ...nn.layers import roi_align
from ...nn.preprocess import ClipPreprocess
from ..base import TaskConfig, TaskConfigError, TaskModel
from .infer import Localization, localize

DEFAULT_SCORE_THRESHOLD = 0.5  # an action's probability threshold when neither the caller nor the model sets one


@dataclass(frozen=True)
class LocalizationHeadConfig:
    """The head and the clips it reads.

    ``type``: ``"transformer"`` or ``"roi"``; ``dim``/``num_layers``/``num_heads``/``dropout``: the transformer's
    width D, layers, heads per unit and dropout; ``query_channels``: its 1x1 reduction of the 7x7 ROI before the
    query's linear map; ``roi_size``: ROIAlign bins per side; ``roi_dropout``: the ROI head's dropout.
    ``label_ids``: the AVA action id of each label (default 1..C). ``num_frames``, ``frame_stride``,
    ``short_side``: the clip around a key frame (0: the encoder's ``num_frames``, ``frame_stride`` and
    ``resize_short_side``; the paper: 32, 2, 400 at test). ``score_thresholds``: one probability threshold per
    label, in label order, that :meth:`ActionLocalizer.localize` reports an action above when the caller gives no
    ``score_threshold`` (written by ``python -m training calibrate-localizer``: the lowest threshold reaching a
    target precision on held-out data; 1.0: never reported). Empty: not calibrated (then
    :data:`DEFAULT_SCORE_THRESHOLD` for every class).
    """

    type: Literal["transformer", "roi"] = "transformer"
    dim: int = 128
    num_layers: int = 3
    num_heads: int = 2
    dropout: float = 0.3
    query_channels: int = 32
    roi_size: int = 7
    roi_dropout: float = 0.5
    label_ids: tuple[int, ...] = ()
    num_frames: int = 0
    frame_stride: int = 0
    short_side: int = 0
    score_thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise TaskConfigError(f"head.dim ({self.dim}) must be divisible by head.num_heads ({self.num_heads})")
        for name in ("dropout", "roi_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise TaskConfigError(f"head.{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("dim", "num_layers", "num_heads", "query_channels", "roi_size"):
            if getattr(self, name) < 1:
                raise TaskConfigError(f"head.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_frames", "frame_stride", "short_side"):
            if getattr(self, name) < 0:
                raise TaskConfigError(f"head.{name} must be >= 0 (0: the encoder's), got {getattr(self, name)}")
        bad = [t for t in self.score_thresholds if not 0.0 <= t <= 1.0]
        if bad:
            raise TaskConfigError(f"head.score_thresholds must be probabilities in [0, 1], got {bad}")


def _seeded_init(module: nn.Module, generator: torch.Generator) -> None:
    """Glorot-uniform linear / conv kernels, zero biases, LayerNorm (1, 0); the classifier N(0, 0.01)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                tmp = torch.empty(m.weight.shape)
                nn.init.xavier_uniform_(tmp, generator=generator)
                m.weight.copy_(tmp)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        fc = module.fc
        fc.weight.copy_(torch.empty(fc.weight.shape).normal_(0.0, 0.01, generator=generator))
        fc.bias.zero_()


class RoiActionHead(nn.Module):
    """SlowFast's head: ``features [B, C, T', H', W']``, ``boxes [B, N, 4]`` -> logits ``[B, N, classes]``."""

    def __init__(self, in_dim: int, num_classes: int, cfg: LocalizationHeadConfig) -> None:
        super().__init__()
        self.roi_size = cfg.roi_size
        self.dropout = nn.Dropout(cfg.roi_dropout)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        rois = roi_align(features.mean(dim=2), boxes, self.roi_size)  # [B, N, C, S, S]
        return self.fc(self.dropout(rois.amax(dim=(-2, -1))))


class TxUnit(nn.Module):
    """One transformer unit of Girdhar et al.: ``num_heads`` heads of width ``dim / num_heads`` attend from the
    person queries ``[B, N, D]`` to the clip's keys/values ``[B, M, D]``; attention -> dropout -> residual +
    LayerNorm -> FFN (D -> D -> D, ReLU) -> dropout -> residual + LayerNorm."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn1, self.ffn2 = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # [B, h, n, d/h]

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(query)), self._split(self.k(memory)), self._split(self.v(memory))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(query.shape)  # heads concatenated: [B, N, D]
        x = self.norm1(query + self.dropout1(out))
        return self.norm2(x + self.dropout2(self.ffn2(F.relu(self.ffn1(x)))))


class ActionTransformerHead(nn.Module):
    """The action transformer head: ``features [B, C, T', H', W']``, ``boxes [B, N, 4]`` -> ``[B, N, classes]``."""

    def __init__(self, in_dim: int, num_classes: int, cfg: LocalizationHeadConfig) -> None:
        super().__init__()
        d, loc = cfg.dim, cfg.dim // 4
        self.roi_size = cfg.roi_size
        self.query_reduce = nn.Conv2d(in_dim, cfg.query_channels, 1)
        self.query_proj = nn.Linear(cfg.query_channels * cfg.roi_size ** 2, d)
        self.location = nn.Sequential(nn.Linear(3, loc), nn.ReLU(), nn.Linear(loc, loc))
        self.memory_proj = nn.Linear(in_dim + loc, d)
        self.layers = nn.ModuleList(TxUnit(d, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(d, num_classes)

    def queries(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Key-frame (centre time step) ROI features -> ``[B, N, D]``."""
        key = features[:, :, features.shape[2] // 2]
        rois = roi_align(key, boxes, self.roi_size)  # [B, N, C, S, S]
        b, n = rois.shape[:2]
        reduced = F.relu(self.query_reduce(rois.flatten(0, 1)))  # [B*N, q, S, S]
        return self.query_proj(reduced.reshape(b, n, -1))

    def memory(self, features: torch.Tensor) -> torch.Tensor:
        """Feature map cells with the location embedding, projected: ``[B, T'*H'*W', D]`` in (t, y, x) order."""
        b, _, t, h, w = features.shape
        axes = [torch.linspace(-1.0, 1.0, s, device=features.device, dtype=features.dtype) if s > 1 else
                torch.zeros(1, device=features.device, dtype=features.dtype) for s in (t, h, w)]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, 3)
        tokens = features.flatten(2).transpose(1, 2)  # [B, M, C]
        loc = self.location(coords).expand(b, -1, -1)
        return self.memory_proj(torch.cat([tokens, loc], dim=-1))

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        x, memory = self.queries(features, boxes), self.memory(features)
        for layer in self.layers:
            x = layer(x, memory)
        return self.fc(self.dropout(x))


HEADS: dict[str, type[nn.Module]] = {"transformer": ActionTransformerHead, "roi": RoiActionHead}


class ActionLocalizer(TaskModel):
    """Clip + person boxes -> multi-label action logits per person; :meth:`localize` for whole videos."""

    task = "localization"
    head_config_class = LocalizationHeadConfig
    default_branch = "region"
    needs_labels = True

    def __init__(self, config: TaskConfig, encoder: Any = None) -> None:
        ids = config.head.label_ids
        if ids and len(ids) != len(config.labels):
            raise TaskConfigError(f"head.label_ids has {len(ids)} ids for {len(config.labels)} labels")
        if len(set(ids)) != len(ids):
            raise TaskConfigError(f"head.label_ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
        thresholds = config.head.score_thresholds
        if thresholds and len(thresholds) != len(config.labels):
            raise TaskConfigError(f"head.score_thresholds has {len(thresholds)} thresholds for "
                                  f"{len(config.labels)} labels (one per label, in label order)")
        super().__init__(config, encoder)

    def build_head(self, config: TaskConfig) -> nn.Module:
        return HEADS[config.head.type](config.encoder.feature_dim, len(config.labels), config.head)

    def init_head(self, generator: torch.Generator) -> None:
        _seeded_init(self.head, generator)

    # -- what the head reads --------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def label_ids(self) -> tuple[int, ...]:
        """AVA action id of each label (``head.label_ids``, default 1..C)."""
        return self.config.head.label_ids or tuple(range(1, self.num_classes + 1))

    @property
    def calibrated(self) -> bool:
        """Whether the checkpoint carries per-class thresholds (``head.score_thresholds``)."""
        return bool(self.config.head.score_thresholds)

    def action_thresholds(self, score_threshold: float | None = None) -> np.ndarray:
        """Per-class probability thresholds ``[C]`` that :meth:`localize` reports actions at: ``score_threshold``
        for every class when given, else the checkpoint's calibrated ``head.score_thresholds``, else
        :data:`DEFAULT_SCORE_THRESHOLD`. An action is reported when its probability >= its class's threshold and
        that threshold is below 1 (1.0: never)."""
        if score_threshold is not None:
            return np.full(self.num_classes, float(score_threshold))
        if self.calibrated:
            return np.asarray(self.config.head.score_thresholds, dtype=np.float64)
        return np.full(self.num_classes, DEFAULT_SCORE_THRESHOLD)

    @property
    def clip_preprocess(self) -> ClipPreprocess:
        """Whole-frame preprocessing of the clips around key frames: the encoder's value range and interpolation,
        this head's ``num_frames``, ``frame_stride`` and ``short_side``; call it with ``crop=False``."""
        head, enc = self.config.head, self.config.preprocess
        short = head.short_side or enc.resize_short_side
        cfg = enc.__class__(num_frames=head.num_frames or enc.num_frames,
                            frame_stride=head.frame_stride or enc.frame_stride,
                            crop_size=min(short, enc.crop_size), resize_short_side=short,
                            value_range=enc.value_range, interpolation=enc.interpolation)
        return ClipPreprocess(cfg)

    # -- network --------------------------------------------------------------------------------------------
    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """Dense encoder features ``[B, C, T', H', W']`` (region res5, or the global res5 before pooling)."""
        endpoint = self.encoder.output_endpoint
        return self.encoder.forward_features(clip, (endpoint,))[endpoint]

    def forward_head(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``[B, C, T', H', W']`` features, ``[B, N, 4]`` boxes -> logits ``[B, N, classes]``."""
        check_boxes(boxes, batch=features.shape[0])
        return self.head(features, boxes.to(features.dtype))

    def forward(self, clip: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(clip), boxes)

    def localize(self, video: Any, boxes: Any = None, times: Sequence[float] | None = None, *,
                 score_threshold: float | None = None, top_k: int = 5, detector: Any = None,
                 person_threshold: float = 0.0,
                 interval_s: float = 1.0, fps: float | None = None, progress: Any = None) -> Localization:
        """Actions of every person at key frames of ``video`` (a file path, or uint8 ``[T, H, W, 3]`` frames with
        ``fps``), linked into person tracks.

        ``boxes``: ``{time_s: [N, 4 or 5]}`` normalised (x1, y1, x2, y2[, score]) person boxes, or a list of them
        with ``times=``; ``None``: ``detector`` (default :class:`~constcl_zoo.inference.detection.HogPersonDetector`)
        finds persons with score >= ``person_threshold`` on key frames every ``interval_s`` seconds (or at ``times``).
        Each person lists at most ``top_k`` actions whose probability reaches its class's threshold
        (:meth:`action_thresholds`): ``score_threshold`` for every class when given, else the checkpoint's
        calibrated per-class thresholds, else 0.5; a threshold of 1.0 reports nothing. A person with no action
        above threshold is still reported (box, track, ``probs``) with ``actions == []``. Returns a
        :class:`~constcl_zoo.tasks.localization.infer.Localization` (``.frames``, ``.to_dict()``).
        """
        return localize(self, video, boxes=boxes, times=times, score_threshold=score_threshold, top_k=top_k,
                        detector=detector, person_threshold=person_threshold, interval_s=interval_s, fps=fps,
                        progress=progress)
