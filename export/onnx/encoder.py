"""ONNX export of a loaded ConST-CL network, with its config and preprocessing in the ONNX metadata.

Graphs (input ``clip`` is float32 ``[batch, 3, T, crop, crop]``, the weights' preprocessing; I/O stay float32
with ``--precision fp16``, which stores fp16 weights and computes in fp16):

* ``global``: ``clip -> embeddings [batch, D]``
* ``region``: ``clip -> features [batch, C, T', H', W']``
* ``region --with-rois``: ``clip, boxes [batch, num_boxes, 4] -> roi_features [batch, num_boxes, C]`` (normalised
  ``(x1, y1, x2, y2)`` boxes on the centre feature frame, the training ROIAlign)
* a recognition checkpoint (:class:`~constcl_zoo.tasks.recognition.VideoClassifier`): ``clip -> logits
  [batch, num_classes]``; the metadata also holds the task config (``task_config``) and the ``labels``

``batch`` (and ``num_boxes``) are dynamic axes. The graph comes from the exporter torch recommends,
``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript). It writes opset 18 and cannot go lower for
these graphs (asked for 17, ONNX's version converter stops at ``Pad``: "No Adapter To Version 17"), hence
``MIN_OPSET = 18``. The export checks itself: ONNX Runtime runs random inputs of a batch size (and box count)
different from the exported example's and must match PyTorch within
``max |ORT - torch| <= tol * max |torch|`` (``tol`` 1e-4 for fp32; 1e-2 for fp16, compared with fp32 PyTorch).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from constcl_zoo import ModelConfig, __version__
from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.fileio import atomic_write
from constcl_zoo.nn.model import ConstCLBase
from constcl_zoo.tasks.base import TaskModel

from .common import (
    TOLERANCE,
    ExportReport,
    add_metadata,
    check_opset,
    compare_outputs,
    graph_report,
    input_shape,
    known_export_noise,
)

FLOAT_PRECISIONS = ("fp32", "fp16")  # what export_onnx writes (int8: export.quantize, from an fp32 export)


class _Graph(nn.Module):
    """What goes into the ONNX file: the network's inference call, with float32 I/O."""

    def __init__(self, model: ConstCLBase, with_rois: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.with_rois, self.dtype = model, with_rois, dtype

    def forward(self, clip: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        clip = clip.to(self.dtype)
        if self.with_rois:
            return self.model.roi_features(clip, boxes.to(self.dtype)).float()
        return self.model(clip).float()


def _what(model: ConstCLBase | TaskModel, with_rois: bool) -> tuple[str | None, ModelConfig, str]:
    """``(task, encoder config, encoder branch)`` of a model export_onnx takes; InvalidArgumentError otherwise."""
    task = getattr(model, "task", None)
    if task is None and model.branch not in ("global", "region"):
        raise InvalidArgumentError(f"export takes a 'global' or 'region' network, got branch {model.branch!r}")
    if task not in (None, "recognition"):
        raise InvalidArgumentError(f"export_onnx exports encoders and recognition models, not {task!r} models")
    if with_rois and (task is not None or model.branch != "region"):
        raise InvalidArgumentError("--with-rois needs a region encoder (--branch region)")
    if task is None:
        return None, model.config, model.branch
    return task, model.config.encoder, model.config.encoder_branch


def export_onnx(model: ConstCLBase | TaskModel, out: str | os.PathLike, *, with_rois: bool = False,
                precision: str = "fp32", external_data: bool = False, opset: int | None = None, source: str = "",
                check: bool = True) -> ExportReport:
    """Export ``model`` (a ``global`` or ``region`` network, or a recognition model) to ``out``; self-check with
    ONNX Runtime.

    ``precision``: ``"fp32"`` or ``"fp16"`` (fp16 weights and compute, float32 I/O; int8 is
    :func:`export.quantize.export_int8`). ``opset``: the ONNX opset to write (default and minimum
    :data:`~export.onnx.common.MIN_OPSET`).
    """
    import onnx

    task, encoder_config, branch = _what(model, with_rois)
    if precision not in FLOAT_PRECISIONS:
        raise InvalidArgumentError(f"export_onnx writes precision {' or '.join(FLOAT_PRECISIONS)}, got "
                                   f"{precision!r} (int8: export.quantize.export_int8)")
    opset = check_opset(opset)
    out = Path(out)
    fp16 = precision == "fp16"
    model = model.float().eval()
    reference = model
    if fp16:  # a separate fp16 copy; the fp32 model is the self-check's reference
        reference = copy.deepcopy(model)
        model = model.half()
    graph = _Graph(model, with_rois, torch.float16 if fp16 else torch.float32).eval()
    args, names, dynamic = _example(encoder_config, with_rois, batch=2, boxes=3)
    output_name = ("logits" if task == "recognition" else "roi_features" if with_rois
                   else "embeddings" if branch == "global" else "features")
    with torch.no_grad(), known_export_noise():
        program = torch.onnx.export(graph, args, dynamo=True, opset_version=opset, input_names=names,
                                    output_names=[output_name], dynamic_shapes=dynamic, optimize=True,
                                    verbose=False)
    proto = program.model_proto
    config = encoder_config.to_dict()
    metadata = {"config": json.dumps(config), "preprocess": json.dumps(config["preprocess"]), "branch": branch,
                "with_rois": json.dumps(with_rois), "precision": precision, "source": source,
                "output": output_name, "version": __version__}
    if task is not None:
        metadata.update(task=task, task_config=json.dumps(model.config.to_dict()),
                        labels=json.dumps(list(model.config.labels)))
    add_metadata(proto, metadata)
    what = f"{task} model on the {branch} branch" if task else f"{branch} branch"
    proto.doc_string = f"ConST-CL {encoder_config.arch} ({what}) exported by constcl_zoo {__version__}"
    onnx.checker.check_model(proto)
    _save(proto, out, external_data)
    diffs = self_check(out, reference, with_rois, TOLERANCE[precision]) if check else None
    return graph_report(out, proto, diffs)


def _save(proto, out: Path, external_data: bool) -> None:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    if external_data:  # the weights go to <out>.data (named after the final file), then the graph is renamed in
        atomic_write(out, lambda tmp: onnx.save_model(proto, str(tmp), save_as_external_data=True,
                                                      all_tensors_to_one_file=True, location=out.name + ".data",
                                                      size_threshold=1024))
    else:
        atomic_write(out, lambda tmp: onnx.save_model(proto, str(tmp)))


def _example(config: ModelConfig, with_rois: bool, batch: int, boxes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clip = torch.randn(batch, *input_shape(config), generator=gen)
    batch_dim = torch.export.Dim("batch")
    if not with_rois:
        return (clip,), ["clip"], {"clip": {0: batch_dim}}
    xy = torch.rand(batch, boxes, 2, generator=gen) * 0.6
    box = torch.cat([xy, xy + 0.1 + torch.rand(batch, boxes, 2, generator=gen) * 0.3], dim=-1)
    # The boxes' batch axis is the clips' (roi_features checks it): Dim.DYNAMIC lets torch.export tie the two
    # together, where a second use of the named Dim would make the exporter warn that the name is a duplicate.
    return (clip, box), ["clip", "boxes"], {"clip": {0: batch_dim},
                                            "boxes": {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim("num_boxes")}}


def self_check(path: Path, reference: ConstCLBase | TaskModel, with_rois: bool,
               tolerance: float) -> tuple[float, float]:
    """Run ONNX Runtime (CPU) on a batch size and box count unlike the traced ones; compare with PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    config = reference.config.encoder if getattr(reference, "task", None) else reference.config
    args, names, _ = _example(config, with_rois, batch=3, boxes=5, seed=1)
    (got,) = session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    with torch.no_grad():
        want = (reference.roi_features(*args) if with_rois else reference(*args)).numpy()
    return compare_outputs(path, got, want, tolerance)
