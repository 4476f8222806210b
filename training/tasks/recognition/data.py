"""Recognition data: labelled video lists (a folder per class, the UCF101 split files, the HMDB51 split files) and
the fine-tuning samples (:class:`ClipDataset`).

Every reader returns :class:`LabelledSplit` (paths, integer labels, class names). A listed video whose file is
missing is skipped with a warning naming it and counted in ``split.skipped``; videos that exist but do not decode
are skipped (and counted) the same way when their features are extracted (:mod:`.features`). Malformed split
files raise :class:`SplitFileError` naming the file and the line.

Formats:

* folder: ``ROOT/<class>/**/<video>``; classes are the sub-folders of the training root, sorted.
* UCF101 (``ucfTrainTestlist/``): ``classInd.txt`` lines ``"1 ApplyEyeMakeup"``; ``trainlist0N.txt`` lines
  ``"ApplyEyeMakeup/v_x.avi 1"`` (1-based label); ``testlist0N.txt`` lines ``"ApplyEyeMakeup/v_x.avi"`` (label from
  the folder). Paths are relative to the video root (``UCF-101/``).
* HMDB51 (``testTrainMulti_7030_splits/``): ``<class>_test_split<N>.txt`` lines ``"video.avi 1"`` with 1 = train,
  2 = test, 0 = unused; videos at ``ROOT/<class>/<video>``. Classes are sorted by name.

A fine-tuning sample (:class:`ClipDataset`) is a function of its sample number ``p`` alone (the shared stream of
:mod:`training.data.loader`): all its randomness comes from a generator seeded with ``(run.seed, p)``: a clip of
the preprocessing's frame count and stride at a random start (frames wrap around in short videos), a random
resized crop + flip (:func:`training.data.augment.augment_view` with the colour ops off), in the encoder's value
range. A video that fails to decode at read time is replaced by the next one and counted (``skipped``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from constcl_zoo import PreprocessConfig
from constcl_zoo.errors import ConstclZooError, InvalidArgumentError
from constcl_zoo.inference.clips import clip_indices, clip_span
from constcl_zoo.inference.video import VIDEO_EXTENSIONS, find_videos

from ...data.augment import AugmentConfig, augment_view
from ...data.videos import VideoDecodeError, VideoEntry, read_frames
from .config import FORMATS, FinetuneConfig

log = logging.getLogger(__name__)
_MAX_RETRIES = 10


class DatasetError(ConstclZooError, ValueError):
    """A labelled dataset that cannot be used as given (no classes, no videos, a class the training set lacks)."""


class SplitFileError(DatasetError):
    """A malformed or missing split file; the message names the file and the line."""


@dataclass(frozen=True)
class LabelledSplit:
    """One labelled split: ``paths[i]`` has label ``labels[i]``, an index into ``classes``.

    ``skipped`` lists ``(path, reason)`` of the videos the split file names but that cannot be used.
    """

    name: str
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise InvalidArgumentError(f"split {self.name!r}: {len(self.paths)} paths but {len(self.labels)} labels")
        bad = [label for label in self.labels if not 0 <= label < len(self.classes)]
        if bad:
            raise InvalidArgumentError(f"split {self.name!r}: label {bad[0]} outside 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> list[int]:
        """Videos per class, in class order."""
        counts = [0] * len(self.classes)
        for label in self.labels:
            counts[label] += 1
        return counts


def _make_split(name: str, items: Iterable[tuple[Path, int]], classes: Sequence[str],
                skipped: Sequence[tuple[str, str]] = ()) -> LabelledSplit:
    """Keep the items whose file exists; warn about (and count) the others."""
    paths, labels, missing = [], [], list(skipped)
    for path, label in items:
        if path.is_file():
            paths.append(path)
            labels.append(label)
        else:
            missing.append((str(path), "file not found"))
    for path, reason in missing[len(skipped):]:
        log.warning("split %s: skipping %s (%s)", name, path, reason)
    if not paths:
        raise DatasetError(f"split {name!r}: none of its {len(missing)} listed videos exists "
                           f"(first: {missing[0][0] if missing else 'none listed'}); check the video root")
    return LabelledSplit(name, tuple(paths), tuple(labels), tuple(classes), tuple(missing))


# -- a folder per class ---------------------------------------------------------------------------------------
def folder_split(root: str | os.PathLike, name: str = "train", classes: Sequence[str] | None = None,
                 extensions: Sequence[str] = VIDEO_EXTENSIONS) -> LabelledSplit:
    """Videos under ``root/<class>/`` (recursive). ``classes`` fixes the class list and order (give the training
    split's classes for the validation split); by default they are ``root``'s sub-folders, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"split {name!r}: {root} is not a folder (a folder per class is expected)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
        if not classes:
            raise DatasetError(f"split {name!r}: {root} has no sub-folders; put each class's videos in "
                               f"{root}/<class>/")
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DatasetError(f"split {name!r}: {root} has classes the training split lacks: {extra[:10]}")
    items = [(path, label) for label, cls in enumerate(classes) if (root / cls).is_dir()
             for path in find_videos(root / cls, extensions)]
    if not items:
        raise DatasetError(f"split {name!r}: no videos (extensions {sorted(extensions)}) under {root}/<class>/")
    return _make_split(name, items, classes)


# -- UCF101 ----------------------------------------------------------------------------------------------------
def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of a split file's non-blank lines (CRLF tolerated)."""
    if not path.is_file():
        raise SplitFileError(f"{path}: split file not found")
    return [(n, line.split()) for n, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]


def read_ucf101_classes(split_dir: str | os.PathLike) -> list[str]:
    """Class names in label order from ``classInd.txt`` (``"1 ApplyEyeMakeup"``, indices 1..C in order)."""
    path = Path(split_dir) / "classInd.txt"
    classes: list[str] = []
    for n, fields in _lines(path):
        if len(fields) != 2 or not fields[0].isdigit():
            raise SplitFileError(f"{path}:{n}: expected '<index> <ClassName>', got {' '.join(fields)!r}")
        if int(fields[0]) != len(classes) + 1:
            raise SplitFileError(f"{path}:{n}: class index {fields[0]} out of order (expected {len(classes) + 1})")
        classes.append(fields[1])
    if not classes:
        raise SplitFileError(f"{path}: no classes listed")
    return classes


def ucf101_splits(split_dir: str | os.PathLike, video_root: str | os.PathLike, split: int = 1,
                  test_root: str | os.PathLike | None = None) -> tuple[LabelledSplit, LabelledSplit]:
    """(train, test) of UCF101 split ``split`` (1-3) from ``split_dir`` (``ucfTrainTestlist``); videos under
    ``video_root`` (``UCF-101``; test videos under ``test_root`` if given). A path's folder names its class
    (the official lists write ``HandstandPushups/v_HandStandPushups_*.avi``: the folder, not the file name, is
    the class); a train label must agree with it."""
    split_dir = Path(split_dir)
    roots = {"train": Path(video_root), "test": Path(test_root if test_root is not None else video_root)}
    classes = read_ucf101_classes(split_dir)
    by_name = {c: i for i, c in enumerate(classes)}
    out = []
    for kind in ("train", "test"):
        path = split_dir / f"{kind}list{split:02d}.txt"
        items = []
        for n, fields in _lines(path):
            expected = 2 if kind == "train" else 1
            if len(fields) != expected:
                form = "'<Class>/<video> <label>'" if kind == "train" else "'<Class>/<video>'"
                raise SplitFileError(f"{path}:{n}: expected {form}, got {' '.join(fields)!r}")
            rel = Path(fields[0])
            label = by_name.get(rel.parent.name) if len(rel.parts) >= 2 else None
            if label is None:
                raise SplitFileError(f"{path}:{n}: {fields[0]!r} is not in a class folder listed in classInd.txt")
            if kind == "train":
                if not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(classes):
                    raise SplitFileError(f"{path}:{n}: label {fields[1]!r} is not a class index 1..{len(classes)}")
                if int(fields[1]) - 1 != label:
                    raise SplitFileError(f"{path}:{n}: label {fields[1]} ({classes[int(fields[1]) - 1]}) disagrees "
                                         f"with the folder {rel.parent.name!r} (class {label + 1})")
            items.append((roots[kind] / rel, label))
        if not items:
            raise SplitFileError(f"{path}: no videos listed")
        out.append(_make_split(kind, items, classes))
    return out[0], out[1]


# -- HMDB51 ----------------------------------------------------------------------------------------------------
_HMDB_NAME = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d+)\.txt$")


def hmdb51_splits(split_dir: str | os.PathLike, video_root: str | os.PathLike, split: int = 1,
                  test_root: str | os.PathLike | None = None) -> tuple[LabelledSplit, LabelledSplit]:
    """(train, test) of HMDB51 split ``split`` (1-3) from ``split_dir``'s ``<class>_test_split<N>.txt`` files
    (``"video.avi 1"``: 1 = train, 2 = test, 0 = unused); videos at ``video_root/<class>/<video>`` (test videos
    under ``test_root`` if given)."""
    split_dir = Path(split_dir)
    roots = {1: Path(video_root), 2: Path(test_root if test_root is not None else video_root)}
    if not split_dir.is_dir():
        raise SplitFileError(f"{split_dir}: not a folder of HMDB51 split files")
    files = {}
    for path in split_dir.iterdir():
        match = _HMDB_NAME.match(path.name)
        if match and int(match["split"]) == split:
            files[match["cls"]] = path
    if not files:
        raise SplitFileError(f"{split_dir}: no '<class>_test_split{split}.txt' files")
    classes = sorted(files)
    items: dict[int, list[tuple[Path, int]]] = {1: [], 2: []}
    for label, cls in enumerate(classes):
        path = files[cls]
        for n, fields in _lines(path):
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise SplitFileError(f"{path}:{n}: expected '<video> <0|1|2>' (0 unused, 1 train, 2 test), "
                                     f"got {' '.join(fields)!r}")
            if fields[1] != "0":
                items[int(fields[1])].append((roots[int(fields[1])] / cls / fields[0], label))
    for kind, code in (("train", 1), ("test", 2)):
        if not items[code]:
            raise SplitFileError(f"{split_dir}: split {split} marks no video as {kind} ({code})")
    return _make_split("train", items[1], classes), _make_split("test", items[2], classes)


def load_splits(fmt: str, train: str | os.PathLike, val: str | os.PathLike | None = None,
                split_dir: str | os.PathLike | None = None, split: int = 1) -> tuple[LabelledSplit, LabelledSplit]:
    """(train, val) for a dataset format (see the module docstring).

    ``folder``: ``train`` and ``val`` are folders with a sub-folder per class (val classes must be train's).
    ``ucf101`` / ``hmdb51``: ``split_dir`` holds the split files, ``train`` is the video root and ``val``
    (default: the same) the root of the test videos.
    """
    if fmt == "folder":
        if val is None:
            raise DatasetError("a dataset in folders needs a validation folder with a sub-folder per class (--val), "
                               "or split files (--ucf101-splits / --hmdb51-splits)")
        train_split = folder_split(train, "train")
        return train_split, folder_split(val, "val", classes=train_split.classes)
    if fmt not in ("ucf101", "hmdb51"):
        raise DatasetError(f"unknown dataset format {fmt!r}; one of {list(FORMATS)}")
    if split_dir is None:
        raise DatasetError(f"the {fmt} format needs the folder of its split files (--splits DIR)")
    reader = ucf101_splits if fmt == "ucf101" else hmdb51_splits
    return reader(split_dir, train, split, test_root=val)


def load_finetune_splits(cfg: FinetuneConfig) -> tuple[LabelledSplit, LabelledSplit]:
    """(train, val) of the config's dataset (raises :class:`~.datasets.DatasetError` naming what is missing)."""
    d = cfg.data
    return load_splits(d.format, d.train, d.val or (None if d.format == "folder" else d.train), d.splits or None,
                       d.split)


class FinetuneError(ConstclZooError, RuntimeError):
    """Fine-tuning cannot go on with the data given (every validation video, or many training videos in a row,
    fail to decode)."""


class ClipDataset(Dataset):
    """``dataset[(p, v)]`` -> sample number ``p`` drawn from training video ``v``: ``clip [3, T, S, S]`` in the
    preprocessing's value range, ``label`` and ``skipped`` (videos replaced because they failed to decode)."""

    def __init__(self, entries: list[VideoEntry], labels: list[int], cfg: FinetuneConfig,
                 preprocess: PreprocessConfig) -> None:
        self.entries, self.labels, self.cfg, self.preprocess = entries, labels, cfg, preprocess
        a = cfg.augment
        # The pretraining augmentation with its colour, blur and solarize ops off: crop + flip only.
        self.augment = AugmentConfig(crop_area=a.crop_area, crop_aspect=a.crop_aspect, crop_attempts=a.crop_attempts,
                                     flip_p=a.flip_p, jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0),
                                     solarize_p=(0.0, 0.0))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        position, video = key
        seed = self.cfg.run.seed
        rng = np.random.default_rng([seed, position])
        for attempt in range(_MAX_RETRIES):
            index = (video + attempt) % len(self.entries)
            entry = self.entries[index]
            try:
                clip = self._clip(entry, rng)
            except VideoDecodeError as exc:
                log.warning("sample %d: %s; using the next video", position, exc)
                rng = np.random.default_rng([seed, position, attempt + 1])
                continue
            return {"clip": clip, "label": torch.tensor(self.labels[index]), "skipped": torch.tensor(attempt)}
        raise FinetuneError(f"sample {position}: {_MAX_RETRIES} training videos in a row failed to decode, starting "
                            f"at {self.entries[video].path}")

    def _clip(self, entry: VideoEntry, rng: np.random.Generator) -> torch.Tensor:
        p = self.preprocess
        span = clip_span(p.num_frames, p.frame_stride)
        start = int(rng.integers(0, max(1, entry.num_frames - span + 1)))
        indices = clip_indices(start, p.num_frames, p.frame_stride, entry.num_frames, past_end="wrap")
        frames = read_frames(entry.path, indices, self.cfg.data.decoder, p.resize_short_side)
        clip, _ = augment_view(frames, 0, p.crop_size, self.augment, rng)  # [3, T, S, S] in [-1, 1]
        lo, hi = p.value_range
        return clip if (lo, hi) == (-1.0, 1.0) else (clip + 1.0) * ((hi - lo) / 2.0) + lo
