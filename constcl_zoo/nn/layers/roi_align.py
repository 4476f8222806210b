"""ROIAlign with the official ConST-CL sampling, in pure torch (ONNX-exportable, no torchvision).

Semantics (TF Model Garden ``multilevel_crop_and_resize`` with one level, as used by ConST-CL's
``InstanceReconstructor``), for a feature map of ``H x W`` cells and a box in feature-cell units
``(x1, y1, x2, y2) = normalised box * (W, H, W, H)``:

* the box is split into ``crop_size x crop_size`` bins and each bin is sampled once, at
  ``y = y1 + (i + sample_offset) * (y2 - y1) / crop_size`` (and likewise for x); there is no -0.5 pixel shift
  (feature cell ``k`` is taken to sit at coordinate ``k``) and no minimum box size (a box may be narrower than one
  cell, or empty);
* bilinear interpolation with ``y0 = clip(floor(y), 0, H - 1)``, ``y1 = min(y0 + 1, H - 1)`` and weights
  ``(1 - (y - y0), y - y0)``; a sample past the last cell therefore reads the last cell.

``torchvision.ops.roi_align(aligned=False)`` differs: it forces boxes to be at least one cell wide and averages
several samples per bin.
"""

from __future__ import annotations

import torch


def _interp_coords(start: torch.Tensor, length: torch.Tensor, size: int, crop_size: int,
                   sample_offset: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample positions along one axis: integer neighbours ``[..., S]`` x2 and the far-neighbour weight."""
    steps = torch.arange(crop_size, device=start.device, dtype=start.dtype) + sample_offset
    pos = start[..., None] + steps * (length[..., None] / crop_size)
    low = pos.floor().clamp(0, size - 1)
    high = (low + 1).clamp(max=size - 1)
    return low.long(), high.long(), pos - low


def roi_align(features: torch.Tensor, boxes: torch.Tensor, crop_size: int = 4,
              sample_offset: float = 0.5) -> torch.Tensor:
    """Crop ``crop_size x crop_size`` bilinear samples per box.

    Args:
        features: ``[B, C, H, W]`` feature map.
        boxes: ``[B, N, 4]`` boxes normalised to [0, 1], ``(x1, y1, x2, y2)``.
        crop_size: bins per side.
        sample_offset: position of the single sample inside a bin, in bin units.

    Returns:
        ``[B, N, C, crop_size, crop_size]``.
    """
    b, c, h, w = features.shape
    n = boxes.shape[1]
    boxes = boxes.to(features.dtype)
    x1, y1, x2, y2 = boxes.unbind(-1)
    ylo, yhi, ly = _interp_coords(y1 * h, (y2 - y1) * h, h, crop_size, sample_offset)
    xlo, xhi, lx = _interp_coords(x1 * w, (x2 - x1) * w, w, crop_size, sample_offset)

    flat = features.flatten(2)  # [B, C, H*W]

    def gather(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        index = (yy[..., :, None] * w + xx[..., None, :]).reshape(b, 1, n * crop_size * crop_size)
        out = torch.gather(flat, 2, index.expand(b, c, index.shape[-1]))
        return out.reshape(b, c, n, crop_size, crop_size)

    wy = ly[:, None, :, :, None]  # [B, 1, N, S, 1]
    wx = lx[:, None, :, None, :]  # [B, 1, N, 1, S]
    out = ((1 - wy) * (1 - wx) * gather(ylo, xlo) + (1 - wy) * wx * gather(ylo, xhi)
           + wy * (1 - wx) * gather(yhi, xlo) + wy * wx * gather(yhi, xhi))
    return out.permute(0, 2, 1, 3, 4)


def roi_align_mean(features: torch.Tensor, boxes: torch.Tensor, crop_size: int = 4,
                   sample_offset: float = 0.5) -> torch.Tensor:
    """ROIAlign followed by the mean over the crop, as in ConST-CL: ``[B, C, H, W]``, ``[B, N, 4]`` -> ``[B, N, C]``."""
    return roi_align(features, boxes, crop_size, sample_offset).mean(dim=(-2, -1))
