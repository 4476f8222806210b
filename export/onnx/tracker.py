"""ONNX export of a SiamFC tracker (:mod:`constcl_zoo.tasks.tracking`): two graphs and the tracker's config.

* ``exemplar.onnx``: ``exemplar [1, 3, T, Z, Z] -> exemplar_features [1, C, hz, wz]`` (backbone + exemplar-side
  1x1 adjust; run once per ``init``).
* ``search.onnx``: ``search [S, 3, T, X, X], exemplar_features -> responses [S, 1, h, w]`` (backbone +
  :meth:`~constcl_zoo.tasks.tracking.SiamFCHead.respond`: the search-side adjust folded into the exemplar side,
  the cross-correlation as a matrix product, the output scale; the whole head exports cleanly).
* ``tracker.json``: the tracking checkpoint's config (every SiamFC parameter, the preprocessing value range).

Shapes are fixed (S = the config's number of scales, Z / X its crop sizes): the crop sizes are part of the
tracker. Inputs are float32 clips in the weights' value range (what :class:`~constcl_zoo.tasks.tracking.SiamFC`
feeds). The export checks itself: ONNX Runtime must match PyTorch within ``1e-4 * max |torch|``.
``export.runtime.OnnxTracker`` runs the same tracking loop on these graphs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from constcl_zoo import __version__
from constcl_zoo.fileio import atomic_write
from constcl_zoo.tasks.tracking import SiamFCTracker

from .common import MIN_OPSET, TOLERANCE, ExportReport, add_metadata, compare_outputs, known_export_noise

EXEMPLAR_FILE, SEARCH_FILE, CONFIG_FILE = "exemplar.onnx", "search.onnx", "tracker.json"


class _Exemplar(nn.Module):
    def __init__(self, tracker: SiamFCTracker) -> None:
        super().__init__()
        self.tracker = tracker

    def forward(self, exemplar: torch.Tensor) -> torch.Tensor:
        return self.tracker.head.adjust_z(self.tracker.features(exemplar))


class _Search(nn.Module):
    def __init__(self, tracker: SiamFCTracker) -> None:
        super().__init__()
        self.tracker = tracker

    def forward(self, search: torch.Tensor, exemplar_features: torch.Tensor) -> torch.Tensor:
        return self.tracker.head.respond(exemplar_features, self.tracker.features(search))


@dataclass(frozen=True)
class TrackerExport:
    """The folder a tracker export wrote and the worst relative difference of its two graphs' self-checks."""

    folder: Path
    relative_diff: float

    def report(self, tracker: SiamFCTracker) -> ExportReport:
        """The export as an :class:`~export.onnx.common.ExportReport` (what ``python -m export onnx`` prints): the
        two graphs' input shapes and outputs, the relative difference only."""
        cfg = tracker.tracker_config
        inputs = {EXEMPLAR_FILE: [1, 3, cfg.num_frames, cfg.exemplar_size, cfg.exemplar_size],
                  SEARCH_FILE: [cfg.num_scales, 3, cfg.num_frames, cfg.search_size, cfg.search_size]}
        outputs = {EXEMPLAR_FILE: ["exemplar_features"], SEARCH_FILE: ["responses"]}
        return ExportReport(self.folder, inputs, outputs, None, self.relative_diff)


def export_tracker_onnx(tracker: SiamFCTracker, out: str | os.PathLike, *, opset: int = MIN_OPSET,
                        check: bool = True, seed: int = 0) -> TrackerExport:
    """Write ``exemplar.onnx``, ``search.onnx`` and ``tracker.json`` to the folder ``out`` (see the module doc)."""
    import onnx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tracker = tracker.float().eval()
    cfg = tracker.tracker_config
    t = cfg.num_frames
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(1, 3, t, cfg.exemplar_size, cfg.exemplar_size, generator=gen) * 2 - 1
    x = torch.rand(cfg.num_scales, 3, t, cfg.search_size, cfg.search_size, generator=gen) * 2 - 1
    config_json = json.dumps(tracker.config.to_dict())
    worst = 0.0
    with torch.no_grad():
        # .eval() on the wrappers: the exporter restores each wrapper's mode recursively, tracker included
        exemplar, search = _Exemplar(tracker).eval(), _Search(tracker).eval()
        zf = exemplar(z)
        graphs = ((EXEMPLAR_FILE, exemplar, (z,), ["exemplar"], ["exemplar_features"]),
                  (SEARCH_FILE, search, (x, zf), ["search", "exemplar_features"], ["responses"]))
        for name, module, args, inputs, outputs in graphs:
            with known_export_noise():
                program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=inputs,
                                            output_names=outputs, optimize=True, verbose=False)
            proto = program.model_proto
            add_metadata(proto, {"task": "tracking", "config": config_json, "graph": name, "version": __version__})
            onnx.checker.check_model(proto)
            atomic_write(out / name, proto.SerializeToString())
            if check:
                worst = max(worst, _check(out / name, module, args, inputs))
    atomic_write(out / CONFIG_FILE, json.dumps(tracker.config.to_dict(), indent=2) + "\n")
    return TrackerExport(out, worst)


def _check(path: Path, module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
    want = module(*args).numpy()
    return compare_outputs(path, got, want, TOLERANCE["fp32"])[1]
