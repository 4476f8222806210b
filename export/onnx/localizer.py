"""ONNX export of an action localizer: ``clip, boxes -> scores``.

Inputs: ``clip`` float32 ``[batch, 3, T, H, W]`` (whole frames, the localizer's ``clip_preprocess`` with
``crop=False``; H and W are fixed at export — ``height``/``width``, default the head's short side and 4:3 — because
the network's TF-"same" padding is computed from the input size), ``boxes`` float32 ``[batch, num_boxes, 4]``
normalised ``(x1, y1, x2, y2)`` on the key frame. Output: ``scores`` float32 ``[batch, num_boxes, C]``, sigmoid
probabilities. ``batch`` and ``num_boxes`` are dynamic. The task config (labels, AVA ids, head, encoder) and the
clip preprocessing are in the ONNX metadata (``constcl_zoo.*``). Like every export, it checks itself: ONNX Runtime
on another batch size and box count must match PyTorch within ``1e-4 * max |torch|``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from constcl_zoo import __version__
from constcl_zoo.errors import InvalidTypeError
from constcl_zoo.tasks.localization import ActionLocalizer

from .common import (
    TOLERANCE,
    ExportReport,
    add_metadata,
    check_opset,
    compare_outputs,
    graph_report,
    known_export_noise,
)


class _LocalizerGraph(nn.Module):
    def __init__(self, model: ActionLocalizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(clip, boxes))


def _example(model: ActionLocalizer, size: tuple[int, int], batch: int, boxes: int, seed: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = model.clip_preprocess.cfg.num_frames
    clip = torch.rand(batch, 3, t, *size, generator=gen) * 2 - 1
    xy = torch.rand(batch, boxes, 2, generator=gen) * 0.6
    return clip, torch.cat([xy, xy + 0.1 + torch.rand(batch, boxes, 2, generator=gen) * 0.3], dim=-1)


def export_localizer_onnx(model: ActionLocalizer, out: str | os.PathLike, *, height: int | None = None,
                          width: int | None = None, opset: int | None = None, source: str = "",
                          check: bool = True) -> ExportReport:
    """Export ``model`` to ``out`` (module docstring) and self-check it with ONNX Runtime."""
    import onnx

    if not isinstance(model, ActionLocalizer):
        raise InvalidTypeError(f"export_localizer_onnx takes an ActionLocalizer, got {type(model).__name__}")
    opset = check_opset(opset)
    short = model.clip_preprocess.cfg.resize_short_side
    size = (height or short, width or round(short * 4 / 3))
    model = model.float().eval()
    graph = _LocalizerGraph(model).eval()
    args = _example(model, size, batch=2, boxes=3, seed=0)
    # The boxes' batch axis is the clips' (forward_head checks it): Dim.DYNAMIC lets torch.export tie the two, as
    # in export.onnx.encoder._example.
    dynamic = {"clip": {0: torch.export.Dim("batch")},
               "boxes": {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim("num_boxes")}}
    with torch.no_grad(), known_export_noise():
        program = torch.onnx.export(graph, args, dynamo=True, opset_version=opset, input_names=["clip", "boxes"],
                                    output_names=["scores"], dynamic_shapes=dynamic, optimize=True, verbose=False)
    proto = program.model_proto
    metadata = {"task": "localization", "config": json.dumps(model.config.to_dict()),
                "preprocess": json.dumps(asdict(model.clip_preprocess.cfg)), "crop": "false",
                "labels": json.dumps(list(model.labels)), "label_ids": json.dumps(list(model.label_ids)),
                "input_size": json.dumps(list(size)), "precision": "fp32", "source": source, "output": "scores",
                "version": __version__}
    add_metadata(proto, metadata)
    proto.doc_string = f"ConST-CL {model.config.arch} action localizer exported by constcl_zoo {__version__}"
    onnx.checker.check_model(proto)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out))
    diffs = self_check_localizer(out, model, size, TOLERANCE["fp32"]) if check else None
    return graph_report(out, proto, diffs)


def self_check_localizer(path: Path, model: ActionLocalizer, size: tuple[int, int], tolerance: float
                         ) -> tuple[float, float]:
    """ONNX Runtime (CPU) on a batch size and box count unlike the traced ones, against PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    clip, boxes = _example(model, size, batch=1, boxes=5, seed=1)
    (got,) = session.run(None, {"clip": clip.numpy(), "boxes": boxes.numpy()})
    with torch.no_grad():
        want = torch.sigmoid(model(clip, boxes)).numpy()
    return compare_outputs(path, got, want, tolerance)
