"""Per-view augmentation of the official pipeline, on whole clips (one set of parameters per view).

Order (VS ``video_ssl_input`` + CC parser): random resized crop (area 0.3-1, aspect 0.5-2, 100 attempts, full
frame as fallback; bilinear resize, truncated back to uint8 as ``tf.cast``), horizontal flip, scale to [0, 1],
colour jitter with p 0.8 (brightness x U[0.2, 1.8], contrast, saturation, hue +-0.2 in random order, clipped
after each op; contrast uses the clip's per-channel mean), grayscale with p 0.2, Gaussian blur (sigma U(0.1, 2),
kernel ``2 * int(crop // 10 / 2) + 1``, zero padding) with p 1.0 / 0.1 for views 1 / 2, solarize (x >= 0.5 ->
1 - x) with p 0 / 0.2, clip to [0, 1], map to [-1, 1]. Every op acts on the ``[T, 3, H, W]`` tensor at once
(torch / kornia), with parameters drawn from a per-sample ``numpy`` generator so a sample is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F

from constcl_zoo.errors import InvalidArgumentError

from ..engine.config import AtLeastOne, Fraction, Interval, NonNegative, Probability


@dataclass
class AugmentConfig:
    """Per-view augmentation, identical across the frames of a view (official VS/CC pipeline). Pretraining's
    ``augment`` section; fine-tuning uses its crop and flip with the other ops off."""

    crop_area: Annotated[tuple[float, float], Interval(upper=1)] = (0.3, 1.0)
    crop_aspect: Annotated[tuple[float, float], Interval()] = (0.5, 2.0)
    crop_attempts: AtLeastOne = 100
    flip_p: Probability = 0.5
    jitter_p: Probability = 0.8
    jitter_strength: Annotated[float, NonNegative()] = 1.0
    grayscale_p: Probability = 0.2
    blur_p: Annotated[tuple[float, float], Fraction()] = (1.0, 0.1)  # (view 1, view 2)
    blur_sigma: Annotated[tuple[float, float], Interval()] = (0.1, 2.0)
    solarize_p: Annotated[tuple[float, float], Fraction()] = (0.0, 0.2)


@dataclass(frozen=True)
class ViewGeometry:
    """Where a view came from: crop ``window`` (normalised x1, y1, x2, y2 of the decoded frame) and flip."""

    window: tuple[float, float, float, float]
    flipped: bool


def sample_crop(height: int, width: int, cfg: AugmentConfig, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Pixel crop ``(top, left, h, w)`` as ``tf.image.sample_distorted_bounding_box`` (uniform area and aspect)."""
    area = height * width
    for _ in range(cfg.crop_attempts):
        target = area * rng.uniform(*cfg.crop_area)
        aspect = rng.uniform(*cfg.crop_aspect)  # width / height
        h = round(math.sqrt(target / aspect))
        w = round(math.sqrt(target * aspect))
        if 0 < h <= height and 0 < w <= width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return 0, 0, height, width


def _blur_kernel(crop_size: int) -> int:
    return 2 * int((crop_size // 10) / 2) + 1


def _jitter(x: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """SimCLRv2 colour jitter in random order on ``[T, 3, H, W]`` in [0, 1]."""
    from kornia.enhance import adjust_hue, adjust_saturation  # imported when used: configs import this module
    s = cfg.jitter_strength
    b, c, sat, hue = 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s
    for op in rng.permutation(4):
        if op == 0 and b > 0:
            x = x * rng.uniform(max(1.0 - b, 0.0), 1.0 + b)
        elif op == 1 and c > 0:
            mean = x.mean(dim=(0, 2, 3), keepdim=True)  # per channel, over the whole clip (TF's [T*H, W] image)
            x = (x - mean) * rng.uniform(1.0 - c, 1.0 + c) + mean
        elif op == 2 and sat > 0:
            x = adjust_saturation(x, float(rng.uniform(1.0 - sat, 1.0 + sat)))
        elif op == 3 and hue > 0:
            x = adjust_hue(x, float(rng.uniform(-hue, hue)) * 2.0 * math.pi)  # TF hue units -> radians
        x = x.clamp(0.0, 1.0)
    return x


def augment_view(frames: np.ndarray, view: int, crop_size: int, cfg: AugmentConfig,
                 rng: np.random.Generator) -> tuple[torch.Tensor, ViewGeometry]:
    """uint8 RGB ``[T, H, W, 3]`` -> clip ``[3, T, crop_size, crop_size]`` in [-1, 1], and its geometry.

    ``view`` is 0 or 1 (the view-specific blur and solarize probabilities).
    """
    from kornia.color import rgb_to_grayscale
    from kornia.filters import gaussian_blur2d

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidArgumentError(f"augment_view expects uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
    t, height, width, _ = frames.shape
    top, left, h, w = sample_crop(height, width, cfg, rng)
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + h, left:left + w])).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(crop_size, crop_size), mode="bilinear", align_corners=False).clamp(0, 255).floor()
    flipped = bool(rng.random() < cfg.flip_p)
    if flipped:
        x = x.flip(-1)
    x = x / 255.0
    if rng.random() < cfg.jitter_p:
        x = _jitter(x, cfg, rng)
    if rng.random() < cfg.grayscale_p:
        x = rgb_to_grayscale(x).expand(-1, 3, -1, -1)
    # Draws happen whether or not an op applies, so one op's probability does not shift the others' randomness.
    sigma = float(rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.blur_p[view]:
        k = _blur_kernel(crop_size)
        x = gaussian_blur2d(x, (k, k), torch.tensor([[sigma, sigma]]).expand(t, 2), border_type="constant")
        x = x.clamp(0.0, 1.0)
    if rng.random() < cfg.solarize_p[view]:
        x = torch.where(x < 0.5, x, 1.0 - x)
    x = x.clamp(0.0, 1.0) * 2.0 - 1.0
    window = (left / width, top / height, (left + w) / width, (top + h) / height)
    return x.permute(1, 0, 2, 3).contiguous(), ViewGeometry(window, flipped)
