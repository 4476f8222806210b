"""A TF2 checkpoint writer for tests (no TensorFlow): ``prefix.index`` + ``prefix.data-00000-of-00001``.

The inverse of :mod:`constcl_zoo.tf_checkpoint`, written as TF's ``BundleWriter`` does: a LevelDB-format table
(uncompressed blocks, CRC32C trailers, 48-byte footer) whose empty key holds the ``BundleHeaderProto`` and whose
other keys hold ``BundleEntryProto`` records pointing into one data shard. ``test_download`` checks once that
TensorFlow itself reads what this writes (when the TF venv exists), so fixtures built with it are real checkpoints.
Also: the CVRL backbone variables in the published layout (``backbone/layer_with_weights-N/...``) at any size.
"""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import numpy as np

from constcl_zoo.tf_checkpoint import _TABLE_MAGIC, _crc32c, _masked

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A table block with a restart point at every entry (no key sharing)."""
    body, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    restarts = restarts or [0]
    return bytes(body) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def _with_trailer(block: bytes) -> bytes:
    return block + b"\x00" + struct.pack("<I", _masked(_crc32c(block + b"\x00")))


def write_tf_checkpoint(prefix: str | Path, tensors: dict[str, np.ndarray]) -> Path:
    """Write float32 ``tensors`` (full TF keys) as the checkpoint ``prefix``; returns the prefix."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data, entries = bytearray(), []
    for name in sorted(tensors, key=lambda k: k.encode()):
        raw = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        shape = b"".join(_field(2, _field(1, d)) for d in tensors[name].shape)
        entry = (_field(1, 1) + _field(2, shape) + _field(4, len(data)) + _field(5, len(raw))
                 + _varint(6 << 3 | 5) + struct.pack("<I", _masked(_crc32c(raw))))
        entries.append((name.encode(), entry))
        data += raw
    header = _field(1, 1) + _field(3, _field(1, 1))  # num_shards 1, little endian, version {producer: 1}
    data_block = _block([(b"", header), *entries])
    index_block = _block([(entries[-1][0], _varint(0) + _varint(len(data_block)))])
    table = _with_trailer(data_block)
    meta_offset, meta_block = len(table), _block([])
    table += _with_trailer(meta_block)
    index_offset = len(table)
    table += _with_trailer(index_block)
    handles = _varint(meta_offset) + _varint(len(meta_block)) + _varint(index_offset) + _varint(len(index_block))
    table += handles.ljust(40, b"\x00") + struct.pack("<Q", _TABLE_MAGIC)
    Path(f"{prefix}.index").write_bytes(table)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    return prefix


def cvrl_backbone_shapes(width: int = 16, kernels: tuple[tuple[int, ...], ...] = ((1,), (1,), (3,), (3,)),
                         stem: tuple[int, int, int] = (5, 7, 7)) -> dict[str, tuple[int, ...]]:
    """The variables of CVRL's functional ResNet3D in the published layout (``backbone/layer_with_weights-N``,
    without ``/.ATTRIBUTES/VARIABLE_VALUE``): stem conv and BN, then bottleneck blocks numbered on."""
    shapes: dict[str, tuple[int, ...]] = {"backbone/layer_with_weights-0/kernel": (*stem, 3, width)}

    def bn(prefix: str, c: int) -> None:
        for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
            shapes[f"{prefix}/{attr}"] = (c,)

    bn("backbone/layer_with_weights-1", width)
    n, channels = 2, width
    for stage, stage_kernels in enumerate(kernels):
        mid = width * 2 ** stage
        for i, kt in enumerate(stage_kernels):
            p = f"backbone/layer_with_weights-{n}"
            if i == 0:
                shapes[f"{p}/_shortcut_conv/kernel"] = (1, 1, 1, channels, 4 * mid)
                bn(f"{p}/_norm0", 4 * mid)
            shapes[f"{p}/_temporal_conv/kernel"] = (kt, 1, 1, channels, mid)
            shapes[f"{p}/_spatial_conv/kernel"] = (1, 3, 3, mid, mid)
            shapes[f"{p}/_expand_conv/kernel"] = (1, 1, 1, mid, 4 * mid)
            bn(f"{p}/_norm1", mid)
            bn(f"{p}/_norm2", mid)
            bn(f"{p}/_norm3", 4 * mid)
            channels, n = 4 * mid, n + 1
    return shapes


def write_cvrl_tarball(path: str | Path, name: str = "r3d_1x_k600_800ep", seed: int = 0, **shape_kwargs) -> Path:
    """A CVRL backbone tarball as published: ``<name>/<name>_backbone-1.{index,data-00000-of-00001}``, random
    values (BN variances positive)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    tensors = {}
    for key, shape in cvrl_backbone_shapes(**shape_kwargs).items():
        value = rng.standard_normal(shape).astype(np.float32) * 0.1
        tensors[key + _SUFFIX] = np.abs(value) + 0.5 if key.endswith("moving_variance") else value
    work = path.parent / f".{path.name}.build"
    prefix = write_tf_checkpoint(work / f"{name}_backbone-1", tensors)
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(prefix.parent.iterdir()):
            tar.add(f, arcname=f"{name}/{f.name}")
    for f in prefix.parent.iterdir():
        f.unlink()
    prefix.parent.rmdir()
    return path
