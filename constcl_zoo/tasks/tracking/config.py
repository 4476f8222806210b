"""The tracker's parameters: :class:`TrackerConfig` (the head config of a tracking checkpoint, every SiamFC
parameter) and :class:`PixelTrackerConfig` (a training-free tracker checkpoint: ``config.json`` alone)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..base import TaskConfigError

CORRELATIONS = ("mean", "zncc")
ENDPOINTS = ("output", "res4", "res3")


@dataclass(frozen=True)
class TrackerConfig:
    """Every SiamFC parameter (the head config of a tracking checkpoint).

    Sizes in pixels of the crops fed to the backbone: ``exemplar_size`` / ``search_size``. ``context``: the
    exemplar crop's side is ``sqrt((w + p) * (h + p))`` with ``p = context * (w + h)``. ``num_scales`` search
    scales ``scale_step ** k``, k centred on 0; the non-unit scales' responses are multiplied by
    ``scale_penalty``; the box size moves ``scale_lr`` of the way to the winning scale. The response is upsampled
    ``response_upsample`` x (bicubic) and mixed with a cosine (Hann) window of weight ``window_influence``.
    ``temporal_radius``: n neighbours on each side of a frame (2n + 1 input frames); ``causal``: the 2n past
    frames instead (see the module doc). ``adjust_channels``: output channels of the 1x1 adjust convs (0: the
    encoder's feature channels, initialised to the identity). ``correlation``: ``"mean"`` (SiamFC's
    cross-correlation, scaled by ``1 / (C * hz * wz)``) or ``"zncc"`` (zero-mean normalised cross-correlation of the
    adjusted exemplar and each search window over channels and cells, in [-1, 1]: brightness-, contrast- and
    feature-scale-invariant, so a few strong background features cannot outvote the target; the response
    BatchNorm then only scales training logits). ``template_lr``: after each frame the exemplar moves this
    fraction of the way to the exemplar cut at the new box (0: SiamFC's fixed exemplar; costs one exemplar pass
    a frame). ``endpoint``: the features correlated: ``"output"`` (the encoder's
    output stage, res5 or the region res5, dilated), ``"res4"`` (dilated) or ``"res3"``, all at feature stride 8.

    Speed knob: ``num_scales=1`` (a fast mode, not the default) runs the backbone on one search crop instead of
    3, ~3x less backbone work; the box then keeps its initial size. On vot15_bag (random-init R3D-14, 63 / 127) it
    measured success 0.395 / precision 0.449 against 0.370 / 0.464 with 3 scales
    (``benchmarks/results/track_vot15_bag_1scale.json``). ``causal=True`` is no faster (the same 5 frames); it
    removes the n-frame look-ahead latency.
    """

    exemplar_size: int = 127
    search_size: int = 255
    context: float = 0.5
    num_scales: int = 3
    scale_step: float = 1.0375
    scale_penalty: float = 0.9745
    scale_lr: float = 0.59
    response_upsample: int = 16
    window_influence: float = 0.176
    temporal_radius: int = 2
    causal: bool = False
    adjust_channels: int = 0
    correlation: str = "mean"
    endpoint: str = "output"
    template_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.correlation not in CORRELATIONS:
            raise TaskConfigError(f"head.correlation must be one of {list(CORRELATIONS)}, got {self.correlation!r}")
        if self.endpoint not in ENDPOINTS:
            raise TaskConfigError(f"head.endpoint must be one of {list(ENDPOINTS)}, got {self.endpoint!r}")
        if not (0 < self.exemplar_size < self.search_size):
            raise TaskConfigError(f"head: need 0 < exemplar_size < search_size, got {self.exemplar_size}, "
                                  f"{self.search_size}")
        if self.num_scales < 1 or self.num_scales % 2 == 0:
            raise TaskConfigError(f"head.num_scales must be odd and >= 1, got {self.num_scales}")
        if self.temporal_radius < 0 or self.response_upsample < 1 or self.adjust_channels < 0:
            raise TaskConfigError("head: temporal_radius, adjust_channels must be >= 0 and response_upsample >= 1")
        if not all(0.0 <= v <= 1.0 for v in (self.window_influence, self.scale_lr, self.template_lr)):
            raise TaskConfigError("head: window_influence, scale_lr and template_lr must be in [0, 1]")

    @property
    def num_frames(self) -> int:
        return 2 * self.temporal_radius + 1

    @property
    def scale_factors(self) -> np.ndarray:
        half = self.num_scales // 2
        return self.scale_step ** np.linspace(-half, half, self.num_scales)



#: The training-free baseline's parameters: a template of the box's area (no context), a search window 3x its
#: side, one scale, the response at crop resolution, a Hann window of weight 0.3 (chosen on the validation
#: sequences: docs in the README's tracking section).
NCC_CONFIG = TrackerConfig(exemplar_size=32, search_size=96, context=0.0, num_scales=1, response_upsample=1,
                           window_influence=0.3, temporal_radius=0, correlation="zncc")


PIXEL_FEATURES = "pixels"


def is_pixel_tracker_config(data: Any) -> bool:
    """Whether a parsed ``config.json`` describes a training-free pixel tracker (a config, no weights)."""
    return isinstance(data, dict) and data.get("task") == "tracking" and data.get("features") == PIXEL_FEATURES


@dataclass(frozen=True)
class PixelTrackerConfig:
    """A training-free tracker checkpoint: ``config.json`` alone (``"task": "tracking", "features": "pixels"``,
    the :class:`TrackerConfig` under ``head``; no weights). ``load()`` returns it as an :class:`NCCTracker`."""

    head: TrackerConfig = field(default_factory=lambda: NCC_CONFIG)
    provenance: dict[str, Any] = field(default_factory=dict)
    task = "tracking"

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": 1, "task": self.task, "features": PIXEL_FEATURES,
                "head": dataclasses.asdict(self.head), "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> PixelTrackerConfig:
        if not is_pixel_tracker_config(data):
            raise TaskConfigError(f"{source}: not a pixel tracker config (needs task 'tracking', features 'pixels')")
        head = data.get("head") or {}
        names = {f.name for f in dataclasses.fields(TrackerConfig)}
        unknown = sorted(set(head) - names) if isinstance(head, dict) else ["(head is not an object)"]
        if unknown:
            raise TaskConfigError(f"{source}: unknown head field(s) {unknown}; fields: {sorted(names)}")
        provenance = data.get("provenance") or {}
        return cls(TrackerConfig(**head), dict(provenance) if isinstance(provenance, dict) else {})
