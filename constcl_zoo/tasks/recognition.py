"""Action recognition: a linear classifier on pooled encoder features (``task="recognition"``).

>>> clf = load("my_probe/")                          # a recognition checkpoint (python -m training probe/finetune)
>>> clf.classify("video.mp4", top_k=5)               # labels with probabilities, averaged over the video's windows
>>> clf = load("constcl_r3d50", task="recognition", labels=["walk", "run"], pretrained=False)   # a fresh head

``forward(clip [B, 3, T, H, W]) -> logits [B, C]``, split like timm's models into ``forward_features`` (pooled
features ``[B, D]``) and ``forward_head(features, pre_logits=False)``; ``reset_classifier(labels)`` puts a new
head on for other classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import TaskConfig, TaskConfigError, TaskModel

if TYPE_CHECKING:
    from ..inference.embed import VideoInput


@dataclass(frozen=True)
class RecognitionHeadConfig:
    """``normalize_features``: L2-normalise the pooled features before the linear layer (a linear-probe option);
    ``dropout``: before the linear layer, in training only."""

    normalize_features: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise TaskConfigError(f"head.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class Classification:
    """The result of :meth:`VideoClassifier.classify` for one video.

    ``top``: ``[(label, probability), ...]``, best first; ``probs``: ``[C]`` class probabilities averaged over
    the windows; ``window_probs``: ``[N, C]``; ``start_s`` / ``end_s``: ``[N]`` seconds of each window.
    """

    top: list[tuple[str, float]]
    probs: np.ndarray
    window_probs: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    labels: tuple[str, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, object]:
        return {"top": [{"label": k, "prob": round(v, 6)} for k, v in self.top], "windows": len(self.start_s)}


class ClassifierHead(nn.Module):
    """``[..., D]`` pooled features -> logits ``[..., C]``: (L2-normalise) -> dropout -> linear."""

    def __init__(self, in_dim: int, num_classes: int, config: RecognitionHeadConfig) -> None:
        super().__init__()
        self.normalize = config.normalize_features
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.normalize:
            features = F.normalize(features, dim=-1)
        features = self.dropout(features)
        return features if pre_logits else self.fc(features)


class VideoClassifier(TaskModel):
    """Clip -> class logits ``[B, C]``; ``classify(video)`` for whole videos. Labels travel with the weights."""

    task = "recognition"
    head_config_class = RecognitionHeadConfig
    default_branch = "global"
    needs_labels = True

    def build_head(self, config: TaskConfig) -> nn.Module:
        return ClassifierHead(config.encoder.feature_dim, len(config.labels), config.head)

    def init_head(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.head.fc.weight.normal_(0.0, 0.01, generator=generator)
            self.head.fc.bias.zero_()

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features ``[B, D]`` (the region branch is averaged over T', H', W' too)."""
        features = self.encoder(clip)
        return features if features.ndim == 2 else features.mean(dim=(2, 3, 4))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``[B, D]`` features -> logits ``[B, C]`` (or the head's input after normalisation when ``pre_logits``)."""
        return self.head(features, pre_logits=pre_logits)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(clip))

    def reset_classifier(self, labels: list[str] | tuple[str, ...], seed: int = 0) -> None:
        """Replace the head with a fresh, seeded one for ``labels`` (same head config)."""
        self.config = self.config.replace(labels=tuple(labels))
        if not self.config.labels:
            raise TaskConfigError("reset_classifier needs at least one label")
        param = self.head.fc.weight
        self.head = self.build_head(self.config).to(device=param.device, dtype=param.dtype)
        self.init_head(torch.Generator().manual_seed(seed))

    def classify(self, video: VideoInput, top_k: int = 5, *, clip_frames: int | None = None,
                 stride: int | None = None, batch_size: int = 8, precision: str = "auto",
                 fps: float | None = None) -> Classification:
        """Classify a whole video: softmax of every window (see :func:`constcl_zoo.inference.embed.embed_video`; windows
        tile the video by default), averaged. ``video``: a file path or uint8 ``[T, H, W, 3]`` frames (``fps``)."""
        from ..inference.embed import embed_video

        if top_k < 1:
            raise TaskConfigError(f"top_k must be >= 1, got {top_k}")
        result = embed_video(self, video, forward=lambda clips: self(clips).softmax(dim=-1),
                             clip_frames=clip_frames, stride=stride, batch_size=batch_size, precision=precision,
                             fps=fps)
        window_probs = result.embeddings.numpy()
        probs = window_probs.mean(axis=0)
        order = np.argsort(-probs, kind="stable")[:top_k]
        return Classification(top=[(self.labels[i], float(probs[i])) for i in order], probs=probs,
                              window_probs=window_probs, start_s=result.start_s, end_s=result.end_s,
                              labels=self.labels)
