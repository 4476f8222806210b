"""ONNX export of every model ``load()`` returns, self-checked with ONNX Runtime (``python -m export onnx``).

* :mod:`export.onnx.common`: the opset floor, the metadata prefix, the self-check's tolerances and comparison, the
  report (every exporter imports it; it imports none of them);
* :mod:`export.onnx.encoder`: encoders (``global``, ``region``, ``--with-rois``) and recognition models, fp32 or
  fp16 (:func:`export_onnx`; int8 is :mod:`export.quantize`, from an fp32 export);
* :mod:`export.onnx.tracker`: a SiamFC tracker as ``exemplar.onnx`` + ``search.onnx`` (:func:`export_tracker_onnx`);
* :mod:`export.onnx.localizer`: an action localizer, clip + boxes -> scores (:func:`export_localizer_onnx`);
* here: :func:`export_from_name`, a name loaded and sent to the exporter of what it loads as.
"""

from __future__ import annotations

import os

from constcl_zoo import load
from constcl_zoo.errors import InvalidArgumentError

from .common import MIN_OPSET, PRECISIONS, ExportCheckError, ExportReport, known_export_noise
from .encoder import export_onnx

__all__ = ["MIN_OPSET", "PRECISIONS", "ExportCheckError", "ExportReport", "export_from_name", "export_onnx",
           "known_export_noise"]


def export_from_name(name: str, out: str | os.PathLike, *, branch: str | None = None, with_rois: bool = False,
                     precision: str = "fp32", external_data: bool = False, opset: int | None = None,
                     random_init: bool = False, seed: int = 0) -> ExportReport:
    """Export ``load(name, branch=branch)`` (``random_init``: ``pretrained=False``), by what it loads as: an
    encoder (``branch`` default ``"global"``) or a recognition checkpoint through :func:`export_onnx`
    (``precision`` ``"fp32"`` or ``"fp16"``); a tracking checkpoint through
    :func:`export.onnx.tracker.export_tracker_onnx` (exemplar / search graphs); a localization checkpoint through
    :func:`export.onnx.localizer.export_localizer_onnx` (clip + boxes -> action scores). The last two are fp32
    graphs with their weights inside: other options are refused by name."""
    from constcl_zoo.tasks.localization import ActionLocalizer

    model = load(name, branch=branch, pretrained=not random_init, seed=seed)
    source = name + (f" (random init, seed {seed})" if random_init else "")
    encoder_only = [flag for flag, on in (("--with-rois", with_rois), (f"--precision {precision}", precision != "fp32"),
                                          ("--external-data", external_data)) if on]
    if getattr(model, "task", None) == "tracking":  # a folder of graphs, same self-check
        from .tracker import export_tracker_onnx

        if encoder_only:
            raise InvalidArgumentError(f"a tracker exports as fp32 exemplar / search graphs: drop "
                                       f"{', '.join(encoder_only)}")
        return export_tracker_onnx(model, out, opset=opset or MIN_OPSET, seed=seed).report(model)
    if isinstance(model, ActionLocalizer):
        from .localizer import export_localizer_onnx

        if encoder_only:
            raise InvalidArgumentError(f"{name} is an action localizer (clip + boxes -> action scores); "
                                       f"{', '.join(encoder_only)} apply to encoder exports only: drop them")
        return export_localizer_onnx(model, out, opset=opset, source=source)
    return export_onnx(model, out, with_rois=with_rois, precision=precision, external_data=external_data, opset=opset,
                       source=source)
