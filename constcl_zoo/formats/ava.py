"""The AVA v2.2 file formats (also AVA-Kinetics'), read and written: annotations, detections, person boxes,
label maps and excluded timestamps (training and evaluation use them; ``constcl-zoo localize --boxes`` too).

* **Annotations** ``ava_{train,val}_v2.2.csv``, no header: ``video_id, timestamp, x1, y1, x2, y2, action_id,
  person_id`` — one row per person and action at a key frame (AVA: 1 fps, whole seconds; fractional seconds are
  read too), box corners normalised to [0, 1] by the frame's width and height. A row of only ``video_id, timestamp``
  marks a key frame without actions (the current official evaluator scores detections there as false positives).
* **Detections / predictions**, no header: ``video_id, timestamp, x1, y1, x2, y2, action_id, score`` (the 8th column
  is a score). Person boxes from a detector use the same layout with an empty or ``-1`` ``action_id`` (``score``:
  the person score; :func:`read_person_boxes` keeps those above a threshold).
* **Label map** (pbtxt): blocks ``item { name: "..." id: N }`` (the 60 evaluated classes,
  ``ava_action_list_v2.2_for_activitynet_2019.pbtxt``) or ``label { name: "..." label_id: N label_type: ... }``
  (all 80, ``ava_action_list_v2.2.pbtxt``).
* **Excluded timestamps**, no header: ``video_id, timestamp``.

A key frame is identified like the current official evaluator does (ActivityNet ``get_ava_performance.py`` since
2020): ``"video_id,%.6f" % timestamp`` (:func:`image_key`); the 2018 evaluator's ``"video_id,%04d" % int(timestamp)``
is :func:`image_key_2018`.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConstclZooError, UsageError
from ..fileio import atomic_write

PathLike = str | os.PathLike


class AvaFormatError(ConstclZooError, ValueError):
    """A file that is not in the AVA format; the message names the file, the line and the fix."""


def image_key(video_id: str, timestamp: float | str) -> str:
    """The official key of a key frame: ``"video_id,%.6f" % timestamp`` (six decimals: fractional timestamps)."""
    return f"{video_id},{float(timestamp):.6f}"


def image_key_2018(video_id: str, timestamp: float | str) -> str:
    """The 2018 evaluator's key: ``"video_id,%04d" % int(timestamp)`` (whole seconds only)."""
    return f"{video_id},{int(float(timestamp)):04d}"


def split_key(key: str) -> tuple[str, float]:
    """``(video_id, timestamp)`` of a key made by :func:`image_key` (or :func:`image_key_2018`)."""
    video_id, timestamp = key.rsplit(",", 1)
    return video_id, float(timestamp)


@dataclass(frozen=True)
class AvaLabel:
    id: int
    name: str


@dataclass(frozen=True)
class AvaRow:
    """One CSV row. ``box``: normalised ``(x1, y1, x2, y2)``; ``action_id``: ``None`` for a person box without an
    action; ``value``: the 8th column — ``person_id`` in annotations, ``score`` in detections (``None`` if absent)."""

    video_id: str
    timestamp: float
    box: tuple[float, float, float, float]
    action_id: int | None
    value: float | None = None

    @property
    def key(self) -> str:
        return image_key(self.video_id, self.timestamp)


@dataclass
class Person:
    """A person at one key frame: box, the set of action ids and an id (``person_id`` or a running index)."""

    box: tuple[float, float, float, float]
    actions: set[int] = field(default_factory=set)
    person_id: int = -1
    score: float = 1.0


MAX_LINE_BYTES = 1 << 20  # an AVA row is under 100 bytes; a longer "line" is a binary or damaged file
MAX_LABELMAP_BYTES = 10 << 20  # the 80-class label map is 8 KB


def _rows(path: PathLike) -> Iterable[tuple[int, list[str]]]:
    """``(line number, stripped cells)`` of the non-blank rows of an AVA CSV; a line that is not UTF-8 text, holds
    a NUL or is over :data:`MAX_LINE_BYTES` raises :class:`AvaFormatError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no AVA file at {path}")
    with open(path, "rb") as f:
        for line in itertools.count(1):
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise AvaFormatError(f"{path}:{line}: a line over {MAX_LINE_BYTES} bytes — not an AVA CSV")
            try:
                text = raw.decode("utf-8")
                row = next(csv.reader([text]), [])
            except UnicodeDecodeError:
                raise AvaFormatError(f"{path}:{line}: not UTF-8 text — is this an AVA CSV (video_id,timestamp,"
                                     f"x1,y1,x2,y2,action_id,score)?") from None
            except csv.Error as exc:
                raise AvaFormatError(f"{path}:{line}: not a CSV row ({exc})") from None
            if row and any(cell.strip() for cell in row):
                yield line, [cell.strip() for cell in row]


def _shown(row: list[str]) -> list[str]:
    """A row for an error message: long cells cut to 40 characters, at most 10 cells."""
    return [c if len(c) <= 40 else c[:37] + "..." for c in row[:10]]


MAX_TIMESTAMP = 10_000_000.0  # seconds (116 days): far beyond any video, far below float precision trouble


def _timestamp(path: PathLike, line: int, text: str) -> float:
    """The timestamp cell ``text`` of ``path:line`` in seconds: a finite number in ``[0, MAX_TIMESTAMP]``."""
    try:
        value = float(text)
    except ValueError:
        hint = " — AVA CSVs have no header line" if line == 1 else ""
        raise AvaFormatError(f"{path}:{line}: timestamp {text[:40]!r} is not a number{hint}") from None
    if not 0 <= value <= MAX_TIMESTAMP:  # also refuses nan and inf
        raise AvaFormatError(f"{path}:{line}: timestamp {text[:40]!r} is not a number of seconds in "
                             f"[0, {MAX_TIMESTAMP:.0f}]")
    return value


@dataclass
class AvaFile:
    """An annotation or detection CSV: its box ``rows`` and the ``keys`` (:func:`image_key`) of every key frame it
    names — those of the box rows and of the ``video_id, timestamp`` rows that mark key frames without actions."""

    rows: list[AvaRow]
    keys: set[str]


def read_ava_file(path: PathLike) -> AvaFile:
    """Rows of an annotation or detection CSV (no header): 7 or 8 columns, or 2 (a key frame without actions)."""
    rows, keys = [], set()
    for line, row in _rows(path):
        if len(row) not in (2, 7, 8):
            raise AvaFormatError(f"{path}:{line}: expected 7 or 8 columns (video_id, timestamp, x1, y1, x2, y2, "
                                 f"action_id[, person_id or score]) or 2 (video_id, timestamp: a key frame without "
                                 f"actions), got {len(row)}: {_shown(row)}")
        timestamp = _timestamp(path, line, row[1])
        try:
            if len(row) == 2:
                keys.add(image_key(row[0], timestamp))
                continue
            box = tuple(float(v) for v in row[2:6])
            action = int(row[6]) if row[6] not in ("", "-1") else None
            value = float(row[7]) if len(row) == 8 and row[7] != "" else None
        except ValueError as exc:
            if line == 1:
                raise AvaFormatError(f"{path}:1: cannot parse {_shown(row)} — AVA CSVs have no header line") from None
            raise AvaFormatError(f"{path}:{line}: cannot parse {_shown(row)} ({str(exc)[:80]})") from None
        if value is not None and not math.isfinite(value):
            raise AvaFormatError(f"{path}:{line}: the 8th column (score or person_id) {row[7][:40]!r} is not a "
                                 f"finite number")
        x1, y1, x2, y2 = box
        if not (np.isfinite(box).all() and -1e-6 <= x1 <= x2 <= 1 + 1e-6 and -1e-6 <= y1 <= y2 <= 1 + 1e-6):
            raise AvaFormatError(f"{path}:{line}: box {box} is not normalised (x1, y1, x2, y2) with "
                                 f"0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1")
        rows.append(AvaRow(row[0], timestamp, box, action, value))  # type: ignore[arg-type]
        keys.add(rows[-1].key)
    return AvaFile(rows, keys)


def read_ava_csv(path: PathLike) -> list[AvaRow]:
    """The box rows of an annotation or detection CSV (:func:`read_ava_file` without the key-frame set)."""
    return read_ava_file(path).rows


def format_timestamp(timestamp: float) -> str:
    """A timestamp as AVA files write it: ``0902`` for whole seconds, else six decimals (``902.500000``)."""
    return f"{int(timestamp):04d}" if float(timestamp).is_integer() else f"{timestamp:.6f}"


def _format_row(row: AvaRow, value_fmt: str) -> list[str]:
    out = [row.video_id, format_timestamp(row.timestamp), *(f"{v:.3f}" for v in row.box),
           "" if row.action_id is None else str(row.action_id)]
    if row.value is not None:
        out.append(format(row.value, value_fmt))
    return out


def write_ava_csv(path: PathLike, rows: Iterable[AvaRow], *, scores: bool = False) -> None:
    """Write rows (atomically). ``scores``: the 8th column is a score (6 decimals), else an integer person id."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(_format_row(row, ".6f" if scores else ".0f"))
    atomic_write(path, buf.getvalue())


def read_person_boxes(path: PathLike, threshold: float = 0.0) -> dict[str, list[tuple[tuple[float, ...], float]]]:
    """Detected person boxes: key frame key -> ``[(box, score), ...]`` with ``score >= threshold``, best first.

    Rows that repeat a box (one per action in prediction files) count once, with their highest score."""
    out: dict[str, dict[tuple[float, ...], float]] = {}
    for row in read_ava_csv(path):
        score = 1.0 if row.value is None else row.value
        if score >= threshold:
            boxes = out.setdefault(row.key, {})
            boxes[row.box] = max(score, boxes.get(row.box, -np.inf))
    return {k: sorted(v.items(), key=lambda kv: -kv[1]) for k, v in out.items()}


def group_persons(rows: Iterable[AvaRow]) -> dict[str, list[Person]]:
    """Annotation rows -> key frame key -> persons (rows of the same person id and box merged, actions collected)."""
    frames: dict[str, dict[tuple, Person]] = {}
    for row in rows:
        pid = -1 if row.value is None else int(row.value)
        persons = frames.setdefault(row.key, {})
        person = persons.setdefault((pid, row.box), Person(box=row.box, person_id=pid))
        if row.action_id is not None:
            person.actions.add(row.action_id)
    return {k: list(v.values()) for k, v in frames.items()}


_BLOCK = re.compile(r"(?:item|label)\s*\{(.*?)\}", re.S)
_NAME = re.compile(r"\bname\s*:\s*\"([^\"]*)\"")
_ID = re.compile(r"\b(?:label_)?id\s*:\s*(\S+)")
MAX_CLASS_ID = 1_000_000  # AVA's are 1..80


def read_labelmap(path: PathLike) -> list[AvaLabel]:
    """Classes of a label map pbtxt (``item { name id }`` or ``label { name label_id }`` blocks), in file order.
    Class ids are integers in ``[1, MAX_CLASS_ID]`` (the official evaluator's classes are 1-indexed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label map at {path}")
    with open(path, "rb") as f:
        raw = f.read(MAX_LABELMAP_BYTES + 1)
    if len(raw) > MAX_LABELMAP_BYTES:
        raise AvaFormatError(f"{path}: over {MAX_LABELMAP_BYTES >> 20} MB — not an AVA label map")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise AvaFormatError(f"{path}:{line}: not UTF-8 text — is this an AVA label "
                             f"map (item {{ name: \"...\" id: N }})?") from None
    labels = []
    for n, match in enumerate(_BLOCK.finditer(text), start=1):
        block, line = match.group(1), text[:match.start()].count("\n") + 1
        name, ident = _NAME.search(block), _ID.search(block)
        if not name or not ident:
            raise AvaFormatError(f"{path}:{line}: block {n} needs name: \"...\" and id: N (or label_id: N), got "
                                 f"{' '.join(block.split())[:120]!r}")
        token = ident.group(1)
        if not (re.fullmatch(r"\d{1,7}", token) and 1 <= int(token) <= MAX_CLASS_ID):
            raise AvaFormatError(f"{path}:{line}: block {n}: id {token[:40]!r} is not a class id (an integer from 1 "
                                 f"to {MAX_CLASS_ID})")
        labels.append(AvaLabel(int(token), name.group(1)))
    if not labels:
        raise AvaFormatError(f"{path}: no 'item {{ name: \"...\" id: N }}' blocks — is this an AVA label map?")
    ids = [x.id for x in labels]
    if len(set(ids)) != len(ids):
        raise AvaFormatError(f"{path}: class ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return labels


def write_labelmap(path: PathLike, labels: Sequence[AvaLabel], *, style: str = "item",
                   label_types: dict[int, str] | None = None) -> None:
    """Write a label map: ``style="item"`` (the evaluated list) or ``"label"`` (the full list, with
    ``label_type`` from ``label_types``)."""
    lines = []
    for label in labels:
        if style == "item":
            lines += ["item {", f'  name: "{label.name}"', f"  id: {label.id}", "}"]
        else:
            lines += ["label {", f'  name: "{label.name}"', f"  label_id: {label.id}",
                      f"  label_type: {(label_types or {}).get(label.id, 'PERSON_MOVEMENT')}", "}"]
    atomic_write(path, "\n".join(lines) + "\n")


def read_excluded(path: PathLike | None) -> set[str]:
    """Excluded key frames (``video_id, timestamp`` rows) as official keys; ``None`` gives the empty set."""
    if path is None:
        return set()
    keys = set()
    for line, row in _rows(path):
        if len(row) != 2:
            raise AvaFormatError(f"{path}:{line}: an excluded-timestamps row has 2 columns (video_id, timestamp), "
                                 f"got {row}")
        keys.add(image_key(row[0], _timestamp(path, line, row[1])))
    return keys


def write_excluded(path: PathLike, keys: Iterable[tuple[str, float]]) -> None:
    """Write an excluded-timestamps CSV of ``(video_id, timestamp)`` pairs (atomically)."""
    atomic_write(path, "".join(f"{v},{format_timestamp(t)}\n" for v, t in keys))


def read_boxes_csv(path: str | Path, video_id: str, threshold: float = 0.0) -> dict[float, np.ndarray]:
    """``{timestamp: [N, 5]}`` (x1, y1, x2, y2, score) of ``video_id`` from an AVA-format person-box CSV (every row
    when the file names a single video), score >= ``threshold``, best first."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--boxes: no file at {path}")
    table = {split_key(key): found for key, found in read_person_boxes(path, threshold).items()}
    videos = sorted({video for video, _ in table})
    if not videos:
        raise UsageError(f"--boxes {path}: no boxes with score >= {threshold}")
    if video_id not in videos and len(videos) > 1:
        raise UsageError(f"--boxes {path}: no rows for video_id {video_id!r} (the file has {videos[:5]}...)")
    chosen = video_id if video_id in videos else videos[0]
    return {t: np.array([[*b, s] for b, s in found], np.float32)
            for (video, t), found in sorted(table.items()) if video == chosen}
