"""Region boxes on a view's key frame (paper §3.3), in the augmented view's normalised (x1, y1, x2, y2).

Methods (``BoxConfig.method``):

* ``random`` — ``num_boxes`` independent draws per view, drawn directly in the view's coordinates as the
  official parser writes them: x1, y1 ~ U(0, 1), w ~ U(0.1, 0.5), aspect ~ U(0.5, 2), h = w * aspect,
  x2 = min(x1 + w, 0.999), y2 = min(y1 + h, 0.999).
* ``random_official`` — the official code *as it runs*: inside ``tf.data`` its four ``tf.random.uniform(...,
  seed=1234)`` ops return the same values, so x1 = y1 = u, w = 0.1 + 0.4u, aspect = 0.5 + 1.5u: every box lies
  on the image diagonal and its size is fixed by its position. Kept to reproduce the official behaviour.
* ``slic`` / ``felzenszwalb`` — regions from low-level cues (scikit-image) on the decoded key frame (resized to
  ``segment_short_side``): the bounding boxes of the ``num_boxes`` largest segments.
* ``detector`` — boxes read from a per-video file ``<detector_dir>/<video stem>.csv`` with header
  ``frame,x1,y1,x2,y2[,score]``: ``frame`` is the 0-based decoded frame index, coordinates are normalised to the
  decoded frame (x right, y down). The key frame uses the nearest annotated frame's boxes, highest score first.
* ``hog`` — OpenCV's HOG people detector (weights ship with OpenCV 4: nothing to download) on the key frame.
  OpenCV 5 no longer has it; the method then raises a clear error (use ``detector`` files instead).

Boxes of the decoded frame (all but the random methods) follow the view's crop and flip
(``constcl_zoo.formats.boxes.crop_boxes`` / ``hflip_boxes``). Boxes that leave the crop (narrower or shorter than
``min_size`` afterwards) and missing boxes (fewer regions or detections than ``num_boxes``) are replaced by
``random`` boxes, so every view has exactly ``num_boxes`` valid boxes.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import torch

from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.formats.boxes import check_boxes, crop_boxes, hflip_boxes
from constcl_zoo.inference.detection import HogPersonDetector

from ..data.augment import ViewGeometry
from ..data.videos import resize_short_side
from .config import BoxConfig


def random_boxes(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 4]`` independent random boxes (official formula, independent draws)."""
    x1, y1 = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    w = rng.uniform(0.1, 0.5, n)
    h = w * rng.uniform(0.5, 2.0, n)
    return _finish(x1, y1, w, h)


def random_boxes_official(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 4]`` boxes as the official graph-mode pipeline produces them (one shared draw per box)."""
    u = rng.uniform(0, 1, n)
    w = 0.1 + 0.4 * u
    return _finish(u, u, w, w * (0.5 + 1.5 * u))


def _finish(x1: np.ndarray, y1: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    # Official clips only the far corner (0.999); a start near 1 gives a box thinner than a pixel, as there.
    x1, y1 = np.minimum(x1, 0.998), np.minimum(y1, 0.998)
    return np.stack([x1, y1, np.minimum(x1 + w, 0.999), np.minimum(y1 + h, 0.999)], -1).astype(np.float32)


def segment_boxes(frame: np.ndarray, method: str, n: int, short_side: int) -> np.ndarray:
    """Bounding boxes ``[k <= n, 4]`` (normalised to ``frame``) of the ``n`` largest segments, largest first."""
    from skimage.measure import regionprops
    from skimage.segmentation import felzenszwalb, slic

    img = resize_short_side(frame, short_side)
    h, w = img.shape[:2]
    if method == "slic":
        # n_segments is a target for the initial grid; 2n gives at least n segments on real frames
        labels = slic(img, n_segments=2 * n, compactness=10.0, start_label=1, channel_axis=-1)
    elif method == "felzenszwalb":
        labels = felzenszwalb(img, scale=100.0, sigma=0.8, min_size=max(16, h * w // (4 * n))) + 1
    else:
        raise InvalidArgumentError(f"unknown segmentation method {method!r}")
    boxes = []
    for region in regionprops(labels):
        top, left, bottom, right = region.bbox
        boxes.append((region.area, left / w, top / h, right / w, bottom / h))
    boxes.sort(key=lambda b: -b[0])
    return np.array([b[1:] for b in boxes[:n]], dtype=np.float32).reshape(-1, 4)


def hog_person_boxes(frame: np.ndarray, n: int, short_side: int) -> np.ndarray:
    """OpenCV HOG people detections ``[k <= n, 4]`` normalised to ``frame``, most confident first
    (:class:`constcl_zoo.inference.detection.HogPersonDetector` at ``short_side``, every raw detection kept)."""
    return HogPersonDetector(short_side, min_score=-np.inf, nms_iou=1.0).detect(frame).boxes[:n]


@functools.lru_cache(maxsize=256)
def read_detector_file(path: str) -> dict[int, np.ndarray]:
    """``frame -> [k, 5]`` (x1, y1, x2, y2, score) from a detector CSV (see module docstring); score defaults 1."""
    out: dict[int, list[list[float]]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"frame", "x1", "y1", "x2", "y2"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise InvalidArgumentError(f"{path}: a detector file needs the header frame,x1,y1,x2,y2[,score]; "
                             f"got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
                score = float(row["score"]) if row.get("score") not in (None, "") else 1.0
                frame = int(row["frame"])
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"{path}:{line}: cannot parse {row} ({exc})") from exc
            if not (0 <= box[0] <= box[2] <= 1 and 0 <= box[1] <= box[3] <= 1):
                raise InvalidArgumentError(f"{path}:{line}: box {box} is not normalised (x1, y1, x2, y2) in [0, 1]")
            out.setdefault(frame, []).append([*box, score])
    return {k: np.array(v, dtype=np.float32) for k, v in out.items()}


def detector_boxes(video: str, frame_index: int, n: int, detector_dir: str) -> np.ndarray:
    """The ``n`` highest-scoring boxes of the annotated frame nearest to ``frame_index`` (``[k <= n, 4]``)."""
    path = Path(detector_dir) / f"{Path(video).stem}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"boxes.method=detector: no box file {path} for video {video}")
    table = read_detector_file(str(path))
    if not table:
        return np.zeros((0, 4), np.float32)
    frames = np.array(sorted(table))
    nearest = int(frames[np.argmin(np.abs(frames - frame_index))])
    rows = table[nearest]
    return rows[np.argsort(-rows[:, 4], kind="stable")][:n, :4]


def view_boxes(cfg: BoxConfig, key_frame: np.ndarray | None, geometry: ViewGeometry, rng: np.random.Generator,
               video: str = "", frame_index: int = 0) -> torch.Tensor:
    """``[num_boxes, 4]`` boxes for one view's key frame, in the view's normalised coordinates.

    ``key_frame`` is the decoded (un-augmented) uint8 ``[H, W, 3]`` frame; ``geometry`` the view's crop and flip.
    """
    n = cfg.num_boxes
    if cfg.method == "random":
        return torch.from_numpy(random_boxes(n, rng))
    if cfg.method == "random_official":
        return torch.from_numpy(random_boxes_official(n, rng))
    if cfg.method in ("slic", "felzenszwalb"):
        frame_boxes = segment_boxes(key_frame, cfg.method, n, cfg.segment_short_side)
    elif cfg.method == "hog":
        frame_boxes = hog_person_boxes(key_frame, n, cfg.hog_short_side)
    elif cfg.method == "detector":
        frame_boxes = detector_boxes(video, frame_index, n, cfg.detector_dir)
    else:
        raise InvalidArgumentError(f"unknown box method {cfg.method!r}")
    boxes = crop_boxes(torch.from_numpy(frame_boxes), geometry.window)
    if geometry.flipped:
        boxes = hflip_boxes(boxes)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= cfg.min_size)
    boxes = boxes[keep][:n]
    fill = torch.from_numpy(random_boxes(n, rng))  # always drawn: the stream of draws does not depend on k
    out = torch.cat([boxes, fill[: n - boxes.shape[0]]]).float()
    return check_boxes(out[None], name=f"boxes of {video} frame {frame_index}")[0]
