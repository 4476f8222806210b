"""ONNX export of a loaded ConST-CL network, with its config and preprocessing in the ONNX metadata.

Graphs (input ``clip`` is float32 ``[batch, 3, T, crop, crop]``, the weights' preprocessing; I/O stay float32
with ``--fp16``, which stores fp16 weights and computes in fp16):

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

import contextlib
import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from constcl_zoo import ModelConfig, __version__, load
from constcl_zoo.errors import ConstclZooError, InvalidArgumentError
from constcl_zoo.fileio import atomic_write
from constcl_zoo.nn.model import ConstCLBase
from constcl_zoo.tasks.base import TaskModel

MIN_OPSET = 18
META_PREFIX = "constcl_zoo."
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


class ExportCheckError(ConstclZooError, RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""


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


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how far ONNX Runtime is from PyTorch on the self-check (``max_abs_diff`` is
    ``None`` where only the relative difference is measured: the tracker's graphs)."""

    path: Path
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    max_abs_diff: float | None
    relative_diff: float

    def check_line(self) -> str:
        """The self-check as the command prints it."""
        if self.max_abs_diff is None:
            return f"ONNX Runtime vs PyTorch relative diff {self.relative_diff:.3g}"
        return f"ONNX Runtime vs PyTorch max abs diff {self.max_abs_diff:.3g} ({self.relative_diff:.3g} relative)"


def input_shape(config: ModelConfig) -> tuple[int, int, int, int]:
    """``(3, T, crop, crop)``: one preprocessed clip."""
    p = config.preprocess
    return 3, p.num_frames, p.crop_size, p.crop_size


def export_onnx(model: ConstCLBase | TaskModel, out: str | os.PathLike, *, with_rois: bool = False, fp16: bool = False,
                external_data: bool = False, opset: int | None = None, source: str = "",
                check: bool = True) -> ExportReport:
    """Export ``model`` (a ``global`` or ``region`` network, or a recognition model) to ``out``; self-check with
    ONNX Runtime.

    ``opset``: the ONNX opset to write (default and minimum :data:`MIN_OPSET`).
    """
    import onnx

    task = getattr(model, "task", None)
    if task is None and model.branch not in ("global", "region"):
        raise InvalidArgumentError(f"export takes a 'global' or 'region' network, got branch {model.branch!r}")
    if task not in (None, "recognition"):
        raise InvalidArgumentError(f"export_onnx exports encoders and recognition models, not {task!r} models")
    if with_rois and (task is not None or model.branch != "region"):
        raise InvalidArgumentError("--with-rois needs a region encoder (--branch region)")
    encoder_config = model.config if task is None else model.config.encoder
    branch = model.branch if task is None else model.config.encoder_branch
    opset = MIN_OPSET if opset is None else opset
    if opset < MIN_OPSET:
        raise InvalidArgumentError(f"opset must be >= {MIN_OPSET} (the dynamo ONNX exporter's minimum), got {opset}")
    out = Path(out)
    precision = "fp16" if fp16 else "fp32"
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
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    what = f"{task} model on the {branch} branch" if task else f"{branch} branch"
    proto.doc_string = f"ConST-CL {encoder_config.arch} ({what}) exported by constcl_zoo {__version__}"
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    if external_data:  # the weights go to <out>.data (named after the final file), then the graph is renamed in
        atomic_write(out, lambda tmp: onnx.save_model(proto, str(tmp), save_as_external_data=True,
                                                      all_tensors_to_one_file=True, location=out.name + ".data",
                                                      size_threshold=1024))
    else:
        atomic_write(out, lambda tmp: onnx.save_model(proto, str(tmp)))
    shapes = {i.name: value_dims(i) for i in proto.graph.input}
    out_shapes = {o.name: value_dims(o) for o in proto.graph.output}
    if not check:
        return ExportReport(out, shapes, out_shapes, float("nan"), float("nan"))
    abs_diff, rel = self_check(out, reference, with_rois, TOLERANCE[precision])
    return ExportReport(out, shapes, out_shapes, abs_diff, rel)


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


def value_dims(value_info) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


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


def compare_outputs(path: Path, got: np.ndarray, want: np.ndarray, tolerance: float) -> tuple[float, float]:
    """``(max |ORT - torch|, that / max |torch|)``; :class:`ExportCheckError` on a shape mismatch or when the
    relative difference is above ``tolerance`` (the one comparison every export self-check uses)."""
    if got.shape != want.shape:
        raise ExportCheckError(f"{path}: ONNX Runtime output shape {got.shape} != PyTorch {want.shape}")
    abs_diff = float(np.abs(got - want).max())
    rel = abs_diff / max(float(np.abs(want).max()), 1e-12)
    if not rel <= tolerance:
        raise ExportCheckError(f"{path}: max |ORT - torch| = {abs_diff:.3g} = {rel:.3g} of max |torch|, above the "
                               f"tolerance {tolerance:g}; the export is wrong")
    return abs_diff, rel


@contextlib.contextmanager
def known_export_noise() -> Iterator[None]:
    """Silence the two messages torch 2.13's dynamo exporter prints on a normal export, and nothing else.

    * ``torchvision is not installed. Skipping torchvision::nms`` (and ``roi_align``, ...): logged while the
      exporter builds its operator registry; we use no torchvision operator (our ROIAlign is pure torch).
    * ``FutureWarning: `isinstance(treespec, LeafSpec)` is deprecated``: raised inside ``torch.export``'s own
      ``run_decompositions`` (a ``copy.deepcopy`` of its module call graph), not by anything we pass; torch fixes
      these internal uses one by one (pytorch/pytorch#167470, #169421).
    """
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("torchvision is not installed")

    registry_log.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        registry_log.removeFilter(keep)


def export_from_name(name: str, out: str | os.PathLike, *, branch: str | None = None, with_rois: bool = False,
                     fp16: bool = False, external_data: bool = False, opset: int | None = None,
                     random_init: bool = False, seed: int = 0) -> ExportReport:
    """Export ``load(name, branch=branch)`` (``random_init``: ``pretrained=False``), by what it loads as: an
    encoder (``branch`` default ``"global"``) or a recognition checkpoint through :func:`export_onnx`; a tracking
    checkpoint through :func:`export.tracking_onnx.export_tracker_onnx` (exemplar / search graphs); a localization
    checkpoint through :func:`export.localization_onnx.export_localizer_onnx` (clip + boxes -> action scores)."""
    from constcl_zoo.tasks.localization import ActionLocalizer

    model = load(name, branch=branch, pretrained=not random_init, seed=seed)
    source = name + (f" (random init, seed {seed})" if random_init else "")
    if getattr(model, "task", None) == "tracking":  # a folder of graphs (export.tracking_onnx), same self-check
        from .tracking_onnx import EXEMPLAR_FILE, SEARCH_FILE, export_tracker_onnx

        if with_rois or fp16 or external_data:
            raise InvalidArgumentError("a tracker exports as fp32 exemplar / search graphs: drop --with-rois, "
                                       "--fp16 and --external-data")
        done = export_tracker_onnx(model, out, opset=opset or MIN_OPSET, seed=seed)
        cfg = model.tracker_config
        return ExportReport(Path(out), {EXEMPLAR_FILE: [1, 3, cfg.num_frames, cfg.exemplar_size, cfg.exemplar_size],
                                        SEARCH_FILE: [cfg.num_scales, 3, cfg.num_frames, cfg.search_size,
                                                      cfg.search_size]},
                            {EXEMPLAR_FILE: ["exemplar_features"], SEARCH_FILE: ["responses"]},
                            None, done.relative_diff)
    if isinstance(model, ActionLocalizer):
        from .localization_onnx import export_localizer_onnx

        unused = [flag for flag, on in (("--with-rois", with_rois), ("--fp16", fp16),
                                        ("--external-data", external_data)) if on]
        if unused:
            raise InvalidArgumentError(f"{name} is an action localizer (clip + boxes -> action scores); "
                                       f"{', '.join(unused)} apply to encoder exports only: drop them")
        return export_localizer_onnx(model, out, opset=opset, source=source)
    return export_onnx(model, out, with_rois=with_rois, fp16=fp16, external_data=external_data, opset=opset,
                       source=source)
