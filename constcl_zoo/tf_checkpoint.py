"""A reader for TensorFlow 2 checkpoints (``prefix.index`` + ``prefix.data-*``) that needs no TensorFlow.

Why our own: users converting the published CVRL checkpoints should not have to install a 600 MB TensorFlow wheel
(and its numpy/protobuf pins) next to PyTorch. The format is small and stable:

* ``prefix.index`` is a LevelDB-format sorted table (footer with block handles, prefix-compressed blocks with
  restart points, 5-byte block trailers holding a compression type and a masked CRC32C). Keys are variable paths
  such as ``backbone/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``; the empty key holds the
  ``BundleHeaderProto`` and every other value is a ``BundleEntryProto`` (dtype, shape, shard, offset, size, crc32c).
* ``prefix.data-SSSSS-of-NNNNN`` hold the raw little-endian tensor bytes at the given offsets.

Every block and tensor is checked against its CRC32C. Reading never executes anything from the file. String
tensors (e.g. the object graph) are listed but not decoded; partitioned (sliced) variables are rejected.

Bounded resources: a tensor is read from its shard with a seek and bounded chunks (never the whole shard), after
its recorded size has been checked against its shape and dtype and against the shard's length. A ``.tar.gz`` is
extracted member by member in bounded chunks, with caps on each member and on the total written
(:data:`MAX_TAR_MEMBER_BYTES`, :data:`MAX_TAR_TOTAL_BYTES`, :data:`MAX_TAR_MEMBERS`; the environment variable
``CONSTCL_ZOO_MAX_EXTRACT_MB`` or the ``max_*`` arguments of :func:`open_tf_checkpoint` change the byte caps):
a small gzip bomb is refused as soon as it passes a cap, not after filling the disk.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConstclZooError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5
_NUMPY_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2",
                 19: "<f2", 22: "<u4", 23: "<u8"}
_DT_BFLOAT16 = 14
_DT_STRING = 7
_CHUNK = 1 << 22  # bytes read (and CRC-checked) at a time from shards and tarball members

MAX_TAR_MEMBER_BYTES = 2 * 2**30
"""Largest file extracted from a checkpoint tarball (a ConST-CL R3D-50 trainer shard with optimizer slots is
~0.6 GB)."""
MAX_TAR_TOTAL_BYTES = 4 * 2**30
"""Largest total extracted from one tarball."""
MAX_TAR_MEMBERS = 10_000
"""Most entries (files and folders) in one tarball (a checkpoint has a handful)."""
MAX_INDEX_BYTES = 256 * 2**20
"""Largest ``.index`` file read (it holds names and offsets only: the published ones are ~100 KB)."""
EXTRACT_LIMIT_ENV = "CONSTCL_ZOO_MAX_EXTRACT_MB"


class TFCheckpointError(ConstclZooError, ValueError):
    """The file is not a readable TF2 checkpoint (names the file and what is wrong)."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: TF dtype enum, shape, data shard, byte offset and size, masked CRC32C."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


def _crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of ``data``, continuing ``crc`` (the CRC of the bytes before it)."""
    import google_crc32c

    return google_crc32c.extend(crc, data)


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Decode protobuf wire format into (field number, wire type, value) triples."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, _, value in _proto_fields(buf):
        if field == 2:  # Dim
            size = 0
            for f, _, v in _proto_fields(value):
                if f == 1:
                    size = _signed64(v)
            dims.append(size)
        elif field == 3 and value:
            raise TFCheckpointError("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(buf: bytes) -> TensorEntry:
    fields = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc32c": None, "sliced": False}
    for field, _, value in _proto_fields(buf):
        if field == 1:
            fields["dtype"] = value
        elif field == 2:
            fields["shape"] = _parse_shape(value)
        elif field == 3:
            fields["shard"] = value
        elif field == 4:
            fields["offset"] = value
        elif field == 5:
            fields["size"] = value
        elif field == 6:
            fields["crc32c"] = value
        elif field == 7:
            fields["sliced"] = True
    return TensorEntry(**fields)


class _Table:
    """Minimal LevelDB table iterator (uncompressed blocks, as TF's BundleWriter writes them)."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        if len(data) < _FOOTER_SIZE:
            raise TFCheckpointError(f"{path}: too short to be a checkpoint index ({len(data)} bytes)")
        footer = data[-_FOOTER_SIZE:]
        lo, hi = struct.unpack("<II", footer[-8:])
        if (hi << 32) | lo != _TABLE_MAGIC:
            raise TFCheckpointError(f"{path}: not a TensorFlow checkpoint index (bad table magic)")
        _, pos = _varint(footer, 0)  # metaindex offset
        _, pos = _varint(footer, pos)  # metaindex size
        offset, pos = _varint(footer, pos)
        size, _ = _varint(footer, pos)
        self.index = (offset, size)

    def _block(self, offset: int, size: int) -> bytes:
        end = offset + size + _BLOCK_TRAILER
        if end > len(self.data):
            raise TFCheckpointError(f"{self.path}: block at {offset} runs past the end of the file")
        block = self.data[offset:offset + size]
        kind, crc = struct.unpack_from("<BI", self.data, offset + size)
        if kind != 0:
            raise TFCheckpointError(f"{self.path}: compressed index blocks (type {kind}) are not supported")
        if _masked(_crc32c(self.data[offset:offset + size + 1])) != crc:
            raise TFCheckpointError(f"{self.path}: block at {offset} fails its CRC32C check (corrupted file)")
        return block

    @staticmethod
    def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
        (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
        limit = len(block) - 4 * (num_restarts + 1)
        pos, key = 0, b""
        while pos < limit:
            shared, pos = _varint(block, pos)
            unshared, pos = _varint(block, pos)
            length, pos = _varint(block, pos)
            key = key[:shared] + block[pos:pos + unshared]
            pos += unshared
            yield key, block[pos:pos + length]
            pos += length

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for _, handle in self._entries(self._block(*self.index)):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            yield from self._entries(self._block(offset, size))


class TFCheckpoint:
    """Read-only access to the tensors of one TF2 checkpoint prefix (e.g. ``.../ckpt-1``)."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(str(prefix).removesuffix(".index"))
        index = Path(f"{self.prefix}.index")
        if not index.is_file():
            raise TFCheckpointError(f"{index}: no such checkpoint index")
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise TFCheckpointError(f"{index}: {index.stat().st_size} bytes, over the limit of {MAX_INDEX_BYTES} "
                                    f"for a checkpoint index (which holds names and offsets only)")
        self.num_shards = 1
        self.entries: dict[str, TensorEntry] = {}
        for key, value in _Table(index.read_bytes(), index).items():
            if key == b"":
                for field, _, v in _proto_fields(value):
                    if field == 1:
                        self.num_shards = v
                    elif field == 2 and v != 0:
                        raise TFCheckpointError(f"{index}: big-endian checkpoints are not supported")
                continue
            self.entries[key.decode("utf-8")] = _parse_entry(value)

    def keys(self) -> list[str]:
        return sorted(self.entries)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: e.shape for k, e in sorted(self.entries.items())}

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def _shard_path(self, shard: int) -> Path:
        path = Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")
        if not path.is_file():
            raise TFCheckpointError(f"{path}: data shard missing")
        return path

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array (bfloat16 is widened to float32)."""
        if name not in self.entries:
            raise TFCheckpointError(f"{self.prefix}: no variable {name!r}")
        entry = self.entries[name]
        if entry.sliced:
            raise TFCheckpointError(f"{self.prefix}: {name} is a partitioned variable, which is not supported")
        if entry.dtype == _DT_STRING or (entry.dtype not in _NUMPY_DTYPES and entry.dtype != _DT_BFLOAT16):
            raise TFCheckpointError(f"{self.prefix}: {name} has TF dtype {entry.dtype}, not readable as numbers")
        dtype = np.dtype("<u2" if entry.dtype == _DT_BFLOAT16 else _NUMPY_DTYPES[entry.dtype])
        if any(d < 0 for d in entry.shape) or entry.size != math.prod(entry.shape) * dtype.itemsize:
            raise TFCheckpointError(f"{self.prefix}: {name} records {entry.size} bytes for shape "
                                    f"{list(entry.shape)} of {dtype.itemsize}-byte values (corrupted index)")
        path = self._shard_path(entry.shard)
        if entry.offset + entry.size > path.stat().st_size:
            raise TFCheckpointError(f"{self.prefix}: {name} runs past the end of its data shard (truncated file)")
        data = bytearray(entry.size)
        view, crc = memoryview(data), 0
        with open(path, "rb") as f:
            f.seek(entry.offset)
            for start in range(0, entry.size, _CHUNK):
                chunk = f.read(min(_CHUNK, entry.size - start))
                if len(chunk) != min(_CHUNK, entry.size - start):
                    raise TFCheckpointError(f"{self.prefix}: {name} runs past the end of its data shard "
                                            f"(truncated file)")
                crc = _crc32c(chunk, crc)
                view[start:start + len(chunk)] = chunk
        if entry.crc32c is not None and _masked(crc) != entry.crc32c:
            raise TFCheckpointError(f"{self.prefix}: {name} fails its CRC32C check (corrupted data)")
        array = np.frombuffer(data, dtype)
        if entry.dtype == _DT_BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array.reshape(entry.shape)


def is_tf_checkpoint(path: Path) -> bool:
    """Whether ``path`` names a TF checkpoint: a ``.tar.gz``/``.tgz`` file, an ``.index`` file, a prefix, or a
    folder with an ``.index`` and no ``config.json``."""
    if path.is_dir():  # a folder holding a TF checkpoint rather than one of ours
        return not (path / "config.json").exists() and any(path.glob("*.index"))
    return (path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".index"))) or Path(f"{path}.index").is_file()


def find_checkpoint_prefix(path: Path) -> Path:
    """The checkpoint prefix inside ``path``: a prefix, an ``.index`` file, or a folder holding one checkpoint."""
    if Path(f"{path}.index").is_file():
        return path
    if path.suffix == ".index" and path.is_file():
        return path.with_suffix("")
    if path.is_dir():
        indexes = sorted(path.rglob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise TFCheckpointError(f"{path}: no TF checkpoint (*.index) inside")
        raise TFCheckpointError(f"{path}: several checkpoints inside, pass one prefix: "
                                f"{[str(i.with_suffix('')) for i in indexes]}")
    raise TFCheckpointError(f"{path}: not a TF checkpoint prefix, .index file, folder or .tar.gz")


def _extract(tar: tarfile.TarFile, dest: Path, source: Path, max_member_bytes: int, max_total_bytes: int) -> None:
    """Extract the files and folders of ``tar`` into ``dest``, streaming each member in bounded chunks and
    stopping at the caps (checked against the header's size first, then on the bytes actually written)."""
    def over(what: str, limit: int) -> TFCheckpointError:
        return TFCheckpointError(f"{source}: {what} is over the limit of {limit} bytes; this is not a checkpoint "
                                 f"tarball, or a larger one than expected (raise the limit with {EXTRACT_LIMIT_ENV}="
                                 f"<MB>, or extract it yourself and pass the folder)")

    total = 0
    for count, member in enumerate(tar, start=1):
        if count > MAX_TAR_MEMBERS:
            raise TFCheckpointError(f"{source}: more than {MAX_TAR_MEMBERS} entries; not a checkpoint tarball")
        try:  # 'data' refuses absolute paths, '..', links out of the folder and device files (PEP 706)
            member = tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as exc:
            raise TFCheckpointError(f"{source}: refused unsafe member {member.name!r} ({exc})") from exc
        target = dest / member.name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if not member.isfile():
            raise TFCheckpointError(f"{source}: member {member.name!r} is not a regular file or folder (a link or "
                                    f"device); a checkpoint tarball holds only files")
        if member.size > max_member_bytes:
            raise over(f"member {member.name!r} ({member.size} bytes)", max_member_bytes)
        if total + member.size > max_total_bytes:
            raise over(f"the extracted total (at least {total + member.size} bytes, at {member.name!r})",
                       max_total_bytes)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with tar.extractfile(member) as src, open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                total += len(chunk)
                if written > max_member_bytes:
                    raise over(f"member {member.name!r}", max_member_bytes)
                if total > max_total_bytes:
                    raise over("the extracted total", max_total_bytes)
                out.write(chunk)


def _extract_limits(max_member_bytes: int | None, max_total_bytes: int | None) -> tuple[int, int]:
    env = os.environ.get(EXTRACT_LIMIT_ENV, "").strip()
    if env:
        try:
            env_bytes = int(float(env) * 2**20)
        except ValueError:
            raise TFCheckpointError(f"{EXTRACT_LIMIT_ENV}={env!r}: expected a size in MB, e.g. 8192") from None
        return max_member_bytes or env_bytes, max_total_bytes or env_bytes
    return max_member_bytes or MAX_TAR_MEMBER_BYTES, max_total_bytes or MAX_TAR_TOTAL_BYTES


@contextlib.contextmanager
def open_tf_checkpoint(source: str | Path, *, max_member_bytes: int | None = None,
                       max_total_bytes: int | None = None) -> Iterator[TFCheckpoint]:
    """Open a checkpoint given as a prefix, ``.index`` file, folder, or the published ``.tar.gz`` itself.

    A tarball is extracted into a temporary folder (removed afterwards) with caps on each member and on the total
    (defaults :data:`MAX_TAR_MEMBER_BYTES` and :data:`MAX_TAR_TOTAL_BYTES`, or ``$CONSTCL_ZOO_MAX_EXTRACT_MB``
    for both); going over one raises :class:`TFCheckpointError`.
    """
    source = Path(source).expanduser()
    if source.is_file() and tarfile.is_tarfile(source):
        member_cap, total_cap = _extract_limits(max_member_bytes, max_total_bytes)
        with tempfile.TemporaryDirectory(prefix="constcl-tf-") as tmp:
            try:
                with tarfile.open(source) as tar:
                    _extract(tar, Path(tmp), source, member_cap, total_cap)
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise TFCheckpointError(f"{source}: not a readable tarball ({exc})") from exc
            yield TFCheckpoint(find_checkpoint_prefix(Path(tmp)))
        return
    yield TFCheckpoint(find_checkpoint_prefix(source))
