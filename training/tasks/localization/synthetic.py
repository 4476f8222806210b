"""Small synthetic action-localization datasets in exactly the AVA v2.2 format, for CI and laptops.

Each video is a real H.264 MP4 rendered by :mod:`training.synthetic.scene`: a background (a frame of a real video
from ``backgrounds``, else a generated gradient with blobs) with 1-3 moving "people" (a body textured with a patch
of a real frame and tinted its own colour, and a head). Time is cut into one-second segments centred on the key
frames (1 fps, whole seconds, like AVA); in each segment every person moves with its own constant velocity and
scale rate, so its actions at a key frame are known exactly:

=====  ==============  ==========================================================  =========
 id    name            definition (over the key frame's segment, [t - 0.5, t + 0.5) s)  evaluated
=====  ==============  ==========================================================  =========
 1     move left       horizontal velocity < 0                                      yes
 2     move right      horizontal velocity > 0                                      yes
 3     move up         vertical velocity < 0 (image y grows downwards)              yes
 4     move down       vertical velocity > 0                                        yes
 5     grow            size increasing (coming closer)                              yes
 6     shrink          size decreasing                                              yes
 7     stand still     none of the above                                            no
=====  ==============  ==========================================================  =========

Labels are multi-label (a diagonal move that grows is "move left", "move up" and "grow"). Like AVA's 80 classes of
which 60 are evaluated, class 7 is in the full label map but not in the evaluated one.

Layout written under ``out``::

    videos/<video_id>.mp4
    annotations/ava_{train,val}_v2.2.csv                 video_id,timestamp,x1,y1,x2,y2,action_id,person_id
    annotations/ava_action_list_v2.2.pbtxt               all 7 classes (label { name label_id label_type })
    annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt   the 6 evaluated ones (item { name id })
    annotations/ava_val_excluded_timestamps_v2.2.csv     key frames left out of evaluation (no annotations)
    annotations/ava_val_predicted_boxes.csv              "detected" person boxes with scores (jittered truth
                                                         plus false boxes with low scores)
    README.md                                            what was generated, with the seed

Everything depends only on the arguments (``seed``): the same call writes the same annotations and frames.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from constcl_zoo.fileio import atomic_write
from constcl_zoo.formats.ava import AvaLabel, AvaRow, write_ava_csv, write_excluded, write_labelmap

from ...synthetic.scene import SceneSpec, background, random_people, render

ACTIONS: tuple[AvaLabel, ...] = (AvaLabel(1, "move left"), AvaLabel(2, "move right"), AvaLabel(3, "move up"),
                                 AvaLabel(4, "move down"), AvaLabel(5, "grow"), AvaLabel(6, "shrink"),
                                 AvaLabel(7, "stand still"))
EVALUATED: tuple[int, ...] = (1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class SyntheticSpec:
    """``num_videos`` videos (the last ``val_videos`` are the val split) of ``seconds`` s at ``fps``, ``width``
    x ``height`` px, 1..``max_people`` people each; ``speed``: px/s of a moving person; ``scale_rate``: relative
    size change per second when growing/shrinking; ``excluded_fraction``: val key frames excluded."""

    num_videos: int = 8
    val_videos: int = 2
    seconds: int = 8
    fps: int = 10
    width: int = 160
    height: int = 120
    max_people: int = 2
    speed: float = 30.0
    scale_rate: float = 0.5
    excluded_fraction: float = 0.1
    seed: int = 0

    @property
    def scene(self) -> SceneSpec:
        return SceneSpec(self.width, self.height, self.fps, self.speed, self.scale_rate)


def _actions(vx: float, vy: float, vs: float) -> list[int]:
    acts = [a for a, on in ((1, vx < 0), (2, vx > 0), (3, vy < 0), (4, vy > 0), (5, vs > 0), (6, vs < 0)) if on]
    return acts or [7]


def generate(out: str | os.PathLike, spec: SyntheticSpec = SyntheticSpec(),
             backgrounds: str | os.PathLike | None = None) -> Path:
    """Write a synthetic dataset (layout in the module docstring) to ``out``; returns ``out``.

    ``backgrounds``: a folder (or manifest) of real videos whose frames become backgrounds; ``None`` or a missing
    folder: generated backgrounds."""
    from constcl_zoo.inference.video import list_videos
    from constcl_zoo.inference.visualize import Mp4Writer

    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    sources = list_videos(backgrounds) if backgrounds is not None and Path(backgrounds).exists() else []
    rng = np.random.default_rng(spec.seed)
    rows: dict[str, list[AvaRow]] = {"train": [], "val": []}
    predicted: list[AvaRow] = []
    excluded: list[tuple[str, int]] = []
    n_frames = spec.seconds * spec.fps + 1
    scene = spec.scene
    for v in range(spec.num_videos):
        split = "val" if v >= spec.num_videos - spec.val_videos else "train"
        video_id = f"synth{v:03d}"
        back = background(scene, rng, sources)
        people = random_people(scene, rng, int(rng.integers(1, spec.max_people + 1)), spec.seconds, sources,
                               color_offset=v)
        boxes_at: dict[tuple[int, int], tuple[float, ...]] = {}
        with Mp4Writer(out / "videos" / f"{video_id}.mp4", fps=spec.fps) as writer:
            for j, (frame, boxes) in enumerate(render(scene, back, people, n_frames)):
                if j % spec.fps == 0:
                    for p in range(len(people)):
                        boxes_at[(j // spec.fps, p)] = tuple(boxes[p])
                writer.write(frame)
        for t in range(1, spec.seconds):  # key frames whose one-second segment lies inside the video
            if split == "val" and rng.uniform() < spec.excluded_fraction:
                excluded.append((video_id, t))
                continue
            for p, person in enumerate(people):
                x1, y1, x2, y2 = boxes_at[(t, p)]
                box = (max(0.0, x1 / spec.width), max(0.0, y1 / spec.height), min(1.0, x2 / spec.width),
                       min(1.0, y2 / spec.height))
                for action in _actions(*person.segments[t]):
                    rows[split].append(AvaRow(video_id, t, box, action, p))
                if split == "val":
                    jitter = rng.normal(0, 0.02, 4)
                    noisy = np.clip(np.array(box) + jitter, 0, 1)
                    noisy = (min(noisy[0], noisy[2]), min(noisy[1], noisy[3]), max(noisy[0], noisy[2]),
                             max(noisy[1], noisy[3]))
                    predicted.append(AvaRow(video_id, t, noisy, None, float(rng.uniform(0.7, 1.0))))
            if split == "val":
                xy = rng.uniform(0, 0.7, 2)
                predicted.append(AvaRow(video_id, t, (xy[0], xy[1], xy[0] + 0.2, xy[1] + 0.3), None,
                                        float(rng.uniform(0.05, 0.4))))
    ann = out / "annotations"
    write_ava_csv(ann / "ava_train_v2.2.csv", rows["train"])
    write_ava_csv(ann / "ava_val_v2.2.csv", rows["val"])
    write_labelmap(ann / "ava_action_list_v2.2.pbtxt", ACTIONS, style="label")
    write_labelmap(ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
                   [a for a in ACTIONS if a.id in EVALUATED])
    write_excluded(ann / "ava_val_excluded_timestamps_v2.2.csv", excluded)
    write_ava_csv(ann / "ava_val_predicted_boxes.csv", predicted, scores=True)
    atomic_write(out / "README.md", "# Synthetic AVA-format dataset\n\nGenerated by "
                 "`training.tasks.localization.synthetic.generate` (see its docstring for the classes and layout).\n\n"
                 f"Backgrounds: {'frames of ' + str(backgrounds) if sources else 'generated'}.\n\n"
                 f"```json\n{json.dumps(asdict(spec), indent=2)}\n```\n")
    return out
