"""The SiamFC tracker on an encoder (``task="tracking"``): a :class:`~constcl_zoo.tasks.base.TaskModel` whose head
is :class:`~.head.SiamFCHead`, tracking through the :class:`~.siamfc.SiamFC` loop (see the package doc)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ...nn.backbone import dilate_backbone
from ..base import TaskConfig, TaskModel
from .config import TrackerConfig
from .head import SiamFCHead, stage_time_slice
from .results import TrackResult
from .siamfc import FrameByFrame, FrameSource, SiamFC


class SiamFCTracker(FrameByFrame, TaskModel):
    """A SiamFC tracker on an encoder (see the module doc). ``forward(exemplar, search) -> responses`` for
    training; ``init`` / ``update`` / ``track`` for tracking."""

    task = "tracking"
    head_config_class = TrackerConfig
    default_branch = "region"

    def __init__(self, config: TaskConfig, encoder: Any = None) -> None:
        super().__init__(config, encoder)
        dilate_backbone(self.encoder.backbone)
        self.precision = "auto"
        self._loop: SiamFC | None = None

    def build_head(self, config: TaskConfig) -> nn.Module:
        endpoint = config.head.endpoint
        channels = config.encoder.feature_dim if endpoint == "output" else \
            config.encoder.backbone.stage_channels[{"res3": 1, "res4": 2}[endpoint]]
        return SiamFCHead(channels, config.head)

    def init_head(self, generator: torch.Generator) -> None:
        head = self.head
        with torch.no_grad():
            for conv in (head.adjust_z, head.adjust_x):
                out_c, in_c = conv.weight.shape[:2]
                if out_c == in_c:
                    conv.weight.copy_(torch.eye(in_c).view(in_c, in_c, 1, 1))
                else:
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / math.sqrt(in_c))
                conv.bias.zero_()
            head.norm.reset_parameters()  # gain 1, bias 0, running mean 0 / var 1: the identity in eval mode

    @property
    def tracker_config(self) -> TrackerConfig:
        return self.config.head

    @property
    def feature_stride(self) -> int:
        """Input pixels per feature cell (8 for the R3D backbones: res4 / res5 dilated)."""
        bb = self.config.encoder.backbone
        return bb.stem_stride[1] * bb.stem_pool_stride[1] * 2

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, S, S]`` preprocessed clips -> ``[B, C, S/8, S/8]``: the centre time slice of the encoder's
        dense features at the head's ``endpoint`` (the last one in causal mode).

        The output stage (res5) runs only on the time slices that slice depends on (:func:`stage_time_slice`):
        the same numbers as the whole stage's slice, e.g. res5 on 1 of 3 slices for R3D-14 (its one block has a
        temporal kernel of 3, so it needs all 3 res4 slices but computes 1)."""
        enc = self.encoder
        head_cfg = self.config.head
        if head_cfg.endpoint != "output":
            fmap = enc.forward_features(clips, (head_cfg.endpoint,))[head_cfg.endpoint]
            return fmap[:, :, -1] if head_cfg.causal else fmap[:, :, fmap.shape[2] // 2]
        endpoint = getattr(enc, "output_endpoint", None)
        stage = getattr(getattr(enc, "backbone", None), endpoint or "", None)
        if endpoint is None or not isinstance(stage, nn.Sequential):
            fmap = enc.forward_features(clips, (endpoint,))[endpoint] if endpoint else enc(clips)
            return fmap[:, :, -1] if self.config.head.causal else fmap[:, :, fmap.shape[2] // 2]
        x = enc.forward_features(clips, ("res4",))["res4"]
        return stage_time_slice(stage, x, x.shape[2] - 1 if self.config.head.causal else x.shape[2] // 2)

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        """Responses ``[B, 1, h, w]`` (logits) of exemplar clips ``[B, 3, T, Z, Z]`` in search clips
        ``[B, 3, T, X, X]``."""
        return self.head(self.features(exemplar), self.features(search))

    # -- tracking -------------------------------------------------------------------------------------------
    def _features_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from ...inference.precision import plan_context, prepare_model, resolve_precision, to_input

        device = next(self.parameters()).device
        plan = resolve_precision(self.precision, device)
        prepare_model(self.encoder, plan)

        def run(clips: torch.Tensor) -> torch.Tensor:
            with plan_context(plan, device):
                return self.features(to_input(clips, self.encoder, plan)).float()

        return run

    def _new_loop(self) -> SiamFC:
        self.eval()
        features = self._features_fn()
        head = self.head
        dtype = next(head.parameters()).dtype

        def exemplar(z: torch.Tensor) -> torch.Tensor:
            feats = features(z)
            with torch.inference_mode():
                return head.adjust_z(feats.to(dtype))

        def respond(zf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            feats = features(x)
            with torch.inference_mode():
                return head.respond(zf, feats.to(dtype))

        return SiamFC(self.config.head, tuple(self.config.preprocess.value_range), self.feature_stride,
                      exemplar, respond)

    def track(self, video: FrameSource, init_box: Sequence[float], *, precision: str | None = None,
              **kwargs: Any) -> TrackResult:
        """Track through a whole video (file, image folder, array or iterable of frames): :meth:`SiamFC.track`."""
        if precision is not None:
            self.precision = precision
        return super().track(video, init_box, **kwargs)
