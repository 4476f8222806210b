"""``python -m export triton MODEL --out model_repository/``: a Triton Inference Server model repository.

Layout: ``<out>/<name>/config.pbtxt`` and ``<out>/<name>/1/model.onnx`` (plus ``model.onnx.data`` for an export
with external data). The config uses the ``onnxruntime`` backend, Triton's dynamic batcher and the input and
output dims of the ONNX graph (batch axis implicit, other dynamic axes ``-1``). Clients preprocess with
``constcl_zoo.ClipPreprocess``; the config and preprocessing also ride in the ONNX metadata.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from constcl_zoo.errors import InvalidArgumentError

from .runtime import OnnxMetadataError

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
                  onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32"}


def _tensor_lines(value_info, kind: str) -> str:
    tensor = value_info.type.tensor_type
    dims = tensor.shape.dim
    if not dims or not dims[0].dim_param:
        raise InvalidArgumentError(f"{kind} {value_info.name!r}: the first axis must be the dynamic batch axis")
    rest = [d.dim_value if d.dim_value > 0 else -1 for d in dims[1:]]
    if tensor.elem_type not in ONNX_TO_TRITON:
        raise InvalidArgumentError(
            f"{kind} {value_info.name!r}: ONNX element type {tensor.elem_type} has no Triton mapping")
    return (f'  {{\n    name: "{value_info.name}"\n    data_type: {ONNX_TO_TRITON[tensor.elem_type]}\n'
            f'    dims: [ {", ".join(map(str, rest))} ]\n  }}')


def triton_config(model: onnx.ModelProto, name: str, max_batch: int = 8, preferred_batch: tuple[int, ...] = (),
                  max_queue_delay_us: int = 2000, instances: int = 1) -> str:
    """The ``config.pbtxt`` text for an exported model."""
    if max_batch < 1:
        raise InvalidArgumentError(f"max_batch must be >= 1, got {max_batch}")
    preferred = [b for b in (preferred_batch or (max_batch // 2, max_batch)) if 1 <= b <= max_batch]
    inputs = ",\n".join(_tensor_lines(v, "input") for v in model.graph.input)
    outputs = ",\n".join(_tensor_lines(v, "output") for v in model.graph.output)
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch}\n'
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, sorted(set(preferred))))} ]\n"
            f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
            f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_AUTO\n  }}\n]\n")


def write_repository(onnx_path: str | os.PathLike, out: str | os.PathLike, name: str | None = None,
                     max_batch: int = 8, max_queue_delay_us: int = 2000, instances: int = 1) -> Path:
    """Copy an exported ONNX file into a Triton repository under ``out``; returns the model's folder."""
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "constcl_zoo.config" not in meta:
        raise OnnxMetadataError(f"{onnx_path}: not a `python -m export onnx` file (no constcl_zoo.config "
                                f"metadata); export the model with `python -m export onnx`")
    name = name or onnx_path.stem
    folder = Path(out) / name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version / "model.onnx")
    data = onnx_path.with_name(onnx_path.name + ".data")
    if data.is_file():
        shutil.copyfile(data, version / data.name)
    text = triton_config(model, name, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us,
                         instances=instances)
    (folder / "config.pbtxt").write_text(text)
    return folder
