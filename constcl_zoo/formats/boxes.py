"""Box conventions and checks.

Model-facing boxes are ``[..., 4]`` tensors, normalised to [0, 1] by the frame's width and height, in
``(x1, y1, x2, y2)`` order (left, top, right, bottom). The official TF code stores ``(y1, x1, y2, x2)``; the
conversion lives here and nowhere else. Tracking speaks ``(x, y, w, h)`` in pixels (the OTB / GOT-10k convention);
``xywh_to_xyxy`` / ``xyxy_to_xywh`` and ``box_iou`` are the project's only copies of that box math.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from ..errors import InvalidArgumentError, InvalidTypeError, UsageError

Array = TypeVar("Array", np.ndarray, torch.Tensor)

_TOLERANCE = 1e-6


def check_boxes(boxes: object, batch: int | None = None, name: str = "boxes") -> torch.Tensor:
    """Validate normalised ``(x1, y1, x2, y2)`` boxes ``[B, N, 4]``; raise ``ValueError`` naming the bad box."""
    if not isinstance(boxes, torch.Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor [B, N, 4], got {type(boxes).__name__}")
    if not boxes.is_floating_point():
        raise InvalidTypeError(f"{name} must be floating point, normalised to [0, 1]; got dtype {boxes.dtype}")
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise InvalidArgumentError(f"{name} must have shape [B, N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if batch is not None and boxes.shape[0] != batch:
        raise InvalidArgumentError(f"{name} has {boxes.shape[0]} box sets for a batch of {batch} clips")
    if boxes.shape[1] == 0:
        raise InvalidArgumentError(f"{name} has no boxes (N = 0)")
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return boxes
    finite = torch.isfinite(boxes).all(-1)
    if not finite.all():
        b, n = _first(~finite)
        raise InvalidArgumentError(f"{name}[{b}, {n}] = {boxes[b, n].tolist()} is not finite")
    outside = ((boxes < -_TOLERANCE) | (boxes > 1 + _TOLERANCE)).any(-1)
    if outside.any():
        b, n = _first(outside)
        raise InvalidArgumentError(
            f"{name}[{b}, {n}] = {_fmt(boxes[b, n])} lies outside [0, 1]; boxes are normalised "
            f"(x1, y1, x2, y2) — divide pixel boxes by (W, H, W, H)")
    flipped = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    if flipped.any():
        b, n = _first(flipped)
        raise InvalidArgumentError(
            f"{name}[{b}, {n}] = {_fmt(boxes[b, n])} has x2 < x1 or y2 < y1; expected (x1, y1, x2, y2)")
    return boxes


def xyxy_to_yxyx(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` <-> ``(y1, x1, y2, x2)`` (the official TF order); its own inverse."""
    return boxes[..., [1, 0, 3, 2]]


def _first(mask: torch.Tensor) -> tuple[int, int]:
    b, n = mask.nonzero()[0].tolist()
    return b, n


def _fmt(box: torch.Tensor) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in box.tolist()) + ")"


def crop_boxes(boxes: torch.Tensor, window: tuple[float, float, float, float]) -> torch.Tensor:
    """Express boxes ``[..., 4]`` in the coordinates of a crop ``window = (x1, y1, x2, y2)`` of the same frame.

    Both are normalised ``(x1, y1, x2, y2)``; the result is clipped to the crop, so a box outside it collapses to
    zero width or height (callers decide what to do with those).
    """
    x1, y1, x2, y2 = window
    if not (x2 > x1 and y2 > y1):
        raise InvalidArgumentError(f"crop window {window} is empty; expected (x1, y1, x2, y2) with x2 > x1, y2 > y1")
    origin = boxes.new_tensor([x1, y1, x1, y1])
    scale = boxes.new_tensor([x2 - x1, y2 - y1, x2 - x1, y2 - y1])
    return ((boxes - origin) / scale).clamp(0.0, 1.0)


def hflip_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Mirror normalised ``(x1, y1, x2, y2)`` boxes ``[..., 4]`` left-right (a horizontally flipped frame)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([1.0 - x2, y1, 1.0 - x1, y2], dim=-1)


# -- box formats and overlap: the one copy, for tracking (x, y, w, h pixels) and localization (x1, y1, x2, y2) ---
# These accept numpy arrays or torch tensors ``[..., 4]`` and return the same kind.

def xywh_to_xyxy(boxes: Array) -> Array:
    """``(x, y, w, h)`` (top-left corner, width, height) -> ``(x1, y1, x2, y2)``; any units."""
    xy, wh = boxes[..., :2], boxes[..., 2:]
    return _cat([xy, xy + wh], boxes)


def xyxy_to_xywh(boxes: Array) -> Array:
    """``(x1, y1, x2, y2)`` -> ``(x, y, w, h)``; any units."""
    xy1, xy2 = boxes[..., :2], boxes[..., 2:]
    return _cat([xy1, xy2 - xy1], boxes)


def box_area(boxes: Array) -> Array:
    """Areas ``[...]`` of ``(x1, y1, x2, y2)`` boxes ``[..., 4]`` (0 for empty or flipped boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clip(min=0) * (boxes[..., 3] - boxes[..., 1]).clip(min=0)


def box_iou(a: Array, b: Array, *, pairwise: bool = True) -> Array:
    """Intersection over union of ``(x1, y1, x2, y2)`` boxes.

    ``pairwise=True``: ``a [N, 4]``, ``b [M, 4]`` -> ``[N, M]``; ``pairwise=False``: ``a``, ``b`` ``[..., 4]`` of
    the same shape -> ``[...]`` (box i with box i). Continuous coordinates (no "+1" pixel convention); a pair
    whose union is empty has IoU 0.
    """
    if pairwise:
        a, b = a[:, None, :], b[None, :, :]
    lt_x, lt_y = _maximum(a[..., 0], b[..., 0]), _maximum(a[..., 1], b[..., 1])
    rb_x, rb_y = _minimum(a[..., 2], b[..., 2]), _minimum(a[..., 3], b[..., 3])
    inter = (rb_x - lt_x).clip(min=0) * (rb_y - lt_y).clip(min=0)
    union = box_area(a) + box_area(b) - inter
    return _where(union > 0, inter / _where(union > 0, union, 1), 0 * inter)


def _is_torch(x: object) -> bool:
    return isinstance(x, torch.Tensor)


def _cat(parts: list[Array], like: Array) -> Array:
    return torch.cat(parts, dim=-1) if _is_torch(like) else np.concatenate(parts, axis=-1)


def _maximum(a: Array, b: Array) -> Array:
    return torch.maximum(a, b) if _is_torch(a) else np.maximum(a, b)


def _minimum(a: Array, b: Array) -> Array:
    return torch.minimum(a, b) if _is_torch(a) else np.minimum(a, b)


def _where(cond: Array, a: Array, b: Array | float) -> Array:
    return torch.where(cond, a, b) if _is_torch(cond) else np.where(cond, a, b)


def parse_box(text: str, name: str = "--box") -> tuple[float, float, float, float]:
    """``"x,y,w,h"`` (commas or spaces) -> 4 floats; raises :class:`UsageError` (naming the field ``name``)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise UsageError(f"{name} {text!r}: expected x,y,w,h (4 numbers, pixels, on the first frame)")
    return values  # type: ignore[return-value]
