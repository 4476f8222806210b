"""int8 ONNX for CPUs: static quantization of an exported fp32 graph, calibrated on windows of real videos.

``python -m export onnx MODEL --precision int8 --calibration VIDEOS...``:

1. the fp32 graph is exported (and self-checked) by :func:`~export.onnx.encoder.export_onnx` into a temporary folder;
2. ``onnxruntime.quantization.quant_pre_process`` (shape inference, graph optimisation) prepares it;
3. ``onnxruntime.quantization.quantize_static`` writes QDQ (``QuantizeLinear``/``DequantizeLinear`` pairs; ORT
   fuses them into integer kernels) with per-channel int8 weights and uint8 activations whose ranges come from
   calibration windows: preprocessed clips cut from the ``--calibration`` videos by :mod:`constcl_zoo.inference.embed`'s
   own window code (the weights' preprocessing and sampling; no second copy of it);
4. the self-check embeds windows of *held-out* videos (``--held-out``, default: the second half of the given
   videos, not used for calibration) with the int8 graph and with fp32 PyTorch and compares them by cosine
   similarity per window. Below ``min_cosine`` (mean; default :data:`MIN_COSINE` 0.99) the export fails with
   :class:`~export.onnx.common.ExportCheckError` and nothing is written. It also reports whether retrieval among
   the held-out windows survives: top-1 agreement is the share of windows whose nearest other window (cosine) is
   the same under int8 and fp32.

The metadata records ``precision`` ``int8``, ``int8_calibration`` (videos, window count, method, activation and
weight types) and ``int8_check`` (held-out videos, windows, min/mean cosine, top-1 agreement).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from constcl_zoo import load
from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.fileio import atomic_write
from constcl_zoo.inference.embed import WindowSpec, frames_of, iter_windows
from constcl_zoo.nn.model import ConstCLBase
from constcl_zoo.nn.preprocess import ClipPreprocess
from constcl_zoo.tasks.base import TaskModel

from .onnx.common import META_PREFIX, ExportCheckError
from .onnx.encoder import export_onnx

MIN_COSINE = 0.99
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION_WINDOWS = 32


@dataclass(frozen=True)
class Int8Report:
    """What :func:`export_int8` wrote and measured on the held-out windows (int8 ORT vs fp32 PyTorch)."""

    path: Path
    calibration_videos: list[str]
    calibration_windows: int
    method: str
    held_out_videos: list[str]
    held_out_windows: int
    min_cosine: float
    mean_cosine: float
    top1_agreement: float
    threshold: float
    quantized_nodes: int


def sample_windows(videos: Sequence[str | os.PathLike], preprocess: ClipPreprocess, limit: int) -> np.ndarray:
    """Up to ``limit`` preprocessed windows ``[N, 3, T, crop, crop]`` (float32), spread evenly over each video.

    Each video gets an equal share of ``limit``; its windows come from :func:`constcl_zoo.inference.embed.iter_windows`
    (the weights' sampling, windows tiling the video) and are thinned as they stream (every window kept, then
    every 2nd, 4th, ... once the share is exceeded), so memory stays bounded on long videos.
    """
    if limit < 1:
        raise InvalidArgumentError(f"the number of windows must be positive, got {limit}")
    spec = WindowSpec.from_preprocess(preprocess)
    share = max(1, math.ceil(limit / len(videos)))
    clips: list[torch.Tensor] = []
    for video in videos:
        frames, source = frames_of(video)
        kept, step = [], 1
        for index, window in enumerate(iter_windows(frames, preprocess, spec, source)):
            if index % step:
                continue
            kept.append(window.clip)
            if len(kept) > 2 * share:
                kept, step = kept[::2], step * 2
        picks = np.linspace(0, len(kept) - 1, min(share, len(kept))).round().astype(int)
        clips += [kept[i] for i in picks]
    return torch.stack(clips[:limit]).numpy().astype(np.float32, copy=False)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def nearest_neighbours(features: np.ndarray) -> np.ndarray:
    """For each row of ``features [N, ...]``, the index of its most cosine-similar *other* row ``[N]``."""
    x = features.reshape(len(features), -1).astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def compare(int8: np.ndarray, fp32: np.ndarray) -> tuple[float, float, float]:
    """``(min cosine, mean cosine, top-1 agreement)`` of int8 vs fp32 outputs ``[N, ...]`` of the same windows.

    Top-1 agreement: the share of windows whose nearest other window is the same under both (NaN if ``N < 3``,
    where every window has at most one other).
    """
    cos = _cosines(int8, fp32)
    agree = float((nearest_neighbours(int8) == nearest_neighbours(fp32)).mean()) if len(fp32) >= 3 else math.nan
    return float(cos.min()), float(cos.mean()), agree


class _Windows:
    """``onnxruntime.quantization.CalibrationDataReader`` over preprocessed windows, ``batch`` at a time."""

    def __init__(self, clips: np.ndarray, batch: int = 4) -> None:
        self._batches: Iterator[np.ndarray] = iter([clips[i:i + batch] for i in range(0, len(clips), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"clip": batch}


def quantize(fp32_path: Path, out: Path, clips: np.ndarray, method: str = "minmax") -> int:
    """QDQ int8 (per-channel int8 weights, uint8 activations) of ``fp32_path`` into ``out``, activations
    calibrated on ``clips`` with ``method``; returns the number of ``QuantizeLinear`` nodes."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise InvalidArgumentError(f"calibration method must be one of {list(CALIBRATION_METHODS)}, got {method!r}")
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    prepared = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    proto = onnx.load(str(prepared))
    infinite = non_finite_consumers(proto)
    # The calibrators collect every tensor of the op types to quantize; leaving out the op types of the nodes with
    # infinite ranges keeps those tensors out of calibration (the histogram methods fail on them, MinMax gets NaN).
    op_types = sorted({n.op_type for n in proto.graph.node} - {n.op_type for n in proto.graph.node
                                                                if n.name in infinite})
    quantize_static(str(prepared), str(out), _Windows(clips), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate,
                    op_types_to_quantize=op_types, nodes_to_exclude=stem_convs(proto) + infinite)
    prepared.unlink()
    proto = onnx.load(str(out))
    return sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)


def stem_convs(proto) -> list[str]:
    """Names of the convolutions reading a graph input (the stem conv on the 3-channel clip).

    Kept fp32 for speed: with 3 input channels its im2col GEMM is tiny in K, and ONNX Runtime's int8 conv
    (QLinearConv) ran the tiny model's stem 6x *slower* than the fp32 conv on the AVX2 CPU of
    ``benchmarks/embed.py`` (1646 vs 273 ms per batch of 8), more than the whole rest of the int8 network; it also
    spares the raw clip an int8 rounding.
    """
    inputs = {i.name for i in proto.graph.input}
    return [n.name for n in proto.graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def non_finite_consumers(proto) -> list[str]:
    """Names of the nodes that take a non-finite constant, e.g. the ``Pad(-inf)`` before the stem's max pool
    (TF "SAME" pooling), and of the nodes reading their outputs: those tensors' range is infinite, which int8
    cannot represent (the calibrated scale would be NaN), so these nodes stay float."""
    import onnx

    constants = {t.name: t for t in proto.graph.initializer}
    constants.update({n.output[0]: a.t for n in proto.graph.node if n.op_type == "Constant"
                      for a in n.attribute if a.name == "value"})
    bad = {name for name, t in constants.items() if not np.isfinite(onnx.numpy_helper.to_array(t)).all()}
    padded = [n for n in proto.graph.node if bad & set(n.input)]
    outputs = {o for n in padded for o in n.output}
    return [n.name for n in padded] + [n.name for n in proto.graph.node if outputs & set(n.input)]


def _torch_outputs(model: ConstCLBase | TaskModel, clips: np.ndarray, batch: int = 8) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(clips[i:i + batch])).float()
                          for i in range(0, len(clips), batch)]).numpy()


def export_int8(model: ConstCLBase | TaskModel, out: str | os.PathLike, calibration: Sequence[str | os.PathLike], *,
                held_out: Sequence[str | os.PathLike] | None = None,
                calibration_windows: int = DEFAULT_CALIBRATION_WINDOWS, method: str = "minmax",
                min_cosine: float = MIN_COSINE, opset: int | None = None, source: str = "") -> Int8Report:
    """Export ``model`` as a QDQ int8 ONNX graph at ``out``, calibrated on windows of ``calibration`` videos and
    checked against fp32 PyTorch on windows of ``held_out`` videos (default: the second half of ``calibration``,
    the first half calibrates). Fails (:class:`ExportCheckError`, ``out`` untouched) if the mean cosine is below
    ``min_cosine``. ``calibration_windows``: at most this many windows for calibration, and for the check.
    """
    import onnx
    import onnxruntime as ort

    calibration = [str(v) for v in calibration]
    if held_out is None:
        if len(calibration) < 2:
            raise InvalidArgumentError("int8 export needs held-out videos for its check: give two or more "
                                       "--calibration videos (the second half is held out) or --held-out VIDEOS")
        half = math.ceil(len(calibration) / 2)
        calibration, held_out = calibration[:half], calibration[half:]
    held_out = [str(v) for v in held_out]
    if overlap := sorted(set(calibration) & set(held_out)):
        raise InvalidArgumentError(f"held-out videos must not be calibration videos: {overlap}")
    if not 0 < min_cosine:
        raise InvalidArgumentError(f"--int8-min-cosine must be positive, got {min_cosine}")
    if method not in CALIBRATION_METHODS:
        raise InvalidArgumentError(f"calibration method must be one of {list(CALIBRATION_METHODS)}, got {method!r}")
    out = Path(out)
    model = model.float().eval()
    preprocess = ClipPreprocess(model.config.encoder.preprocess if getattr(model, "task", None)
                                else model.config.preprocess)
    calib_clips = sample_windows(calibration, preprocess, calibration_windows)
    check_clips = sample_windows(held_out, preprocess, calibration_windows)
    with tempfile.TemporaryDirectory(prefix="constcl-int8-") as tmp:
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, fp32_path, opset=opset, source=source)
        quantized_nodes = quantize(fp32_path, int8_path, calib_clips, method)
        session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
        got = np.concatenate([session.run(None, {"clip": check_clips[i:i + 8]})[0]
                              for i in range(0, len(check_clips), 8)])
        low, mean, agree = compare(got, _torch_outputs(model, check_clips))
        report = Int8Report(out, calibration, len(calib_clips), method, held_out, len(check_clips), low, mean, agree,
                            min_cosine, quantized_nodes)
        if not mean >= min_cosine:
            raise ExportCheckError(f"int8 vs fp32 PyTorch on {len(check_clips)} held-out windows: mean cosine "
                                   f"{mean:.4f} (min {low:.4f}) is below --int8-min-cosine {min_cosine:g}; nothing "
                                   f"written to {out}. Try --calibration-method entropy/percentile or more "
                                   f"--calibration videos, or keep fp32")
        proto = onnx.load(str(int8_path))
    fp32_meta = {p.key: p.value for p in proto.metadata_props}
    fp32_meta[META_PREFIX + "precision"] = "int8"
    fp32_meta[META_PREFIX + "int8_calibration"] = json.dumps(
        {"videos": [Path(v).name for v in calibration], "windows": len(calib_clips), "method": method,
         "format": "QDQ", "weights": "int8 per-channel", "activations": "uint8 per-tensor"})
    fp32_meta[META_PREFIX + "int8_check"] = json.dumps(
        {"held_out_videos": [Path(v).name for v in held_out], "windows": len(check_clips),
         "min_cosine": round(low, 6), "mean_cosine": round(mean, 6), "top1_agreement": agree,
         "threshold": min_cosine, "reference": "fp32 PyTorch"})
    del proto.metadata_props[:]
    for key, value in fp32_meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write(out, proto.SerializeToString())
    return report


def export_int8_from_name(name: str, out: str | os.PathLike, calibration: Sequence[str | os.PathLike], *,
                          branch: str | None = None, random_init: bool = False, seed: int = 0,
                          **options) -> Int8Report:
    """:func:`export_int8` of ``load(name, branch=branch)`` (``random_init``: ``pretrained=False``)."""
    model = load(name, branch=branch, pretrained=not random_init, seed=seed)
    return export_int8(model, out, calibration, source=name + (f" (random init, seed {seed})" if random_init else ""),
                       **options)


def report_line(report: Int8Report) -> str:
    """The CLI's one-line summary."""
    return (f"wrote {report.path}: int8 (QDQ, {report.quantized_nodes} QuantizeLinear nodes, {report.method} "
            f"calibration on {report.calibration_windows} windows); vs fp32 PyTorch on {report.held_out_windows} "
            f"held-out windows: mean cosine {report.mean_cosine:.4f}, min {report.min_cosine:.4f}, top-1 retrieval "
            f"agreement {report.top1_agreement:.1%} (threshold mean {report.threshold:g})")

