"""What every ONNX export shares: the opset floor, the metadata prefix, the self-check's tolerances and comparison,
the report, and the exporter's known noise. Imports nothing of the exporters (they import this)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from constcl_zoo import ModelConfig
from constcl_zoo.errors import ConstclZooError, InvalidArgumentError

MIN_OPSET = 18
META_PREFIX = "constcl_zoo."
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # of max |torch|, by the precision the graph computes in
PRECISIONS = ("fp32", "fp16", "int8")  # what an ONNX export stores and computes in (metadata key "precision")


class ExportCheckError(ConstclZooError, RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""


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


def check_opset(opset: int | None) -> int:
    """``opset`` (default :data:`MIN_OPSET`), or :class:`InvalidArgumentError` below the minimum."""
    opset = MIN_OPSET if opset is None else opset
    if opset < MIN_OPSET:
        raise InvalidArgumentError(f"opset must be >= {MIN_OPSET} (the dynamo ONNX exporter's minimum), got {opset}")
    return opset


def add_metadata(proto, metadata: Mapping[str, str]) -> None:
    """Append ``metadata`` to the graph's metadata, each key under :data:`META_PREFIX`."""
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value


def value_dims(value_info) -> list[int | str]:
    """The dims of a graph input or output: sizes, or the names of dynamic axes."""
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def graph_report(path: str | os.PathLike, proto, diffs: tuple[float, float] | None) -> ExportReport:
    """The :class:`ExportReport` of a graph written to ``path``; ``diffs`` ``(max abs, relative)`` from the
    self-check, ``None`` when it did not run (NaN in the report)."""
    abs_diff, rel = diffs if diffs is not None else (float("nan"), float("nan"))
    return ExportReport(Path(path), {i.name: value_dims(i) for i in proto.graph.input},
                        {o.name: value_dims(o) for o in proto.graph.output}, abs_diff, rel)


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
