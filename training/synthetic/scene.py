"""The scene renderer behind every synthetic dataset: textured "people" moving over a real background.

A scene is a background (a dimmed frame of a real video, else a generated gradient with blobs) and 1..N people
(a body filled with a texture patch cut from a real video frame and tinted with the person's colour, plus a
head). Time is cut into one-second segments centred on whole seconds; in each segment a person moves with its
own constant velocity ``(vx, vy)`` and scale rate ``vs`` (each -1, 0 or +1 times the spec's unit), reversed (or
stopped) where a whole second of it would leave the frame. So every person's box is known on every frame and its
motion — the "action" — on every segment.

Everything is drawn from one ``numpy.random.Generator``: the same seed gives the same pixels and boxes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COLORS = ((230, 60, 60), (60, 200, 80), (70, 110, 240), (240, 200, 40), (200, 70, 220), (40, 210, 220))
Motion = tuple[float, float, float]  # (vx, vy, vs): -1, 0 or +1 times speed / scale_rate


@dataclass(frozen=True)
class SceneSpec:
    """Frame size in pixels, frames per second, ``speed`` (px/s of a moving person) and ``scale_rate`` (relative
    size change per second of a growing/shrinking one); people are 25-40% of the frame height."""

    width: int = 160
    height: int = 120
    fps: int = 10
    speed: float = 30.0
    scale_rate: float = 0.5


@dataclass
class Person:
    """A person's state (centre and height in pixels), look, and its motion per one-second segment."""

    cx: float
    cy: float
    h: float
    color: tuple[int, int, int]
    texture: np.ndarray  # uint8 [h, w, 3]
    segments: list[Motion]
    _planned: int = field(default=-1, repr=False)


@functools.lru_cache(maxsize=32)
def source_frames(path: Path, count: int = 12, step: int = 10, short_side: int = 240) -> tuple[np.ndarray, ...]:
    """Frames ``0, step, 2 step, ...`` (``count`` of them) of a source video, resized to ``short_side`` (decoded
    once per process: backgrounds and textures of many scenes draw from them)."""
    import cv2

    from constcl_zoo.inference.video import iter_video_file

    frames = []
    for f in iter_video_file(path):
        if f.index % step == 0:
            h, w = f.rgb.shape[:2]
            scale = short_side / min(h, w)
            frames.append(cv2.resize(f.rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
                          if scale < 1 else f.rgb)
        if len(frames) >= count:
            break
    return tuple(frames)


def _random_frame(rng: np.random.Generator, sources: list[Path]) -> np.ndarray | None:
    frames = source_frames(sources[rng.integers(len(sources))])
    return frames[rng.integers(len(frames))] if frames else None


def background(spec: SceneSpec, rng: np.random.Generator, sources: list[Path]) -> np.ndarray:
    """A ``[height, width, 3]`` uint8 background: a dimmed frame of a random source video (so people stand out),
    or a generated gradient with blobs when there are no sources."""
    import cv2

    if sources:
        frame = _random_frame(rng, sources)
        if frame is not None:
            img = cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
            return (img.astype(np.float32) * 0.6).astype(np.uint8)
    yy, xx = np.mgrid[0:spec.height, 0:spec.width].astype(np.float32)
    c0, c1 = rng.uniform(30, 140, 3), rng.uniform(30, 140, 3)
    ramp = (xx / spec.width * 0.6 + yy / spec.height * 0.4)[..., None]
    img = c0 * (1 - ramp) + c1 * ramp
    for _ in range(6):
        cx, cy, r = rng.uniform(0, spec.width), rng.uniform(0, spec.height), rng.uniform(8, 30)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(20, 160, 3)
    return img.clip(0, 255).astype(np.uint8)


def texture(rng: np.random.Generator, sources: list[Path], size: int = 48) -> np.ndarray:
    """A ``[size, size, 3]`` uint8 patch: a random square of a random frame of a source video (real texture), or
    smoothed noise when there are no sources."""
    import cv2

    if sources:
        frame = _random_frame(rng, sources)
        if frame is not None:
            h, w = frame.shape[:2]
            side = int(rng.integers(max(8, min(h, w) // 6), max(9, min(h, w) // 2)))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            return cv2.resize(frame[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    noise = rng.uniform(0, 255, (size // 4, size // 4, 3)).astype(np.uint8)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)


def random_motions(count: int, rng: np.random.Generator) -> list[Motion]:
    """``count`` random segment motions (each of vx, vy, vs in -1/0/+1)."""
    out = []
    for _ in range(count):
        vx, vy = rng.choice([-1, 0, 1], p=[0.35, 0.3, 0.35]), rng.choice([-1, 0, 1], p=[0.3, 0.4, 0.3])
        vs = rng.choice([-1, 0, 1], p=[0.25, 0.5, 0.25])
        out.append((float(vx), float(vy), float(vs)))
    return out


def random_people(spec: SceneSpec, rng: np.random.Generator, count: int, seconds: int, sources: list[Path],
                  color_offset: int = 0) -> list[Person]:
    """``count`` people at random places and sizes with random motions for ``seconds + 1`` segments."""
    people = []
    for p in range(count):
        h = rng.uniform(0.25, 0.4) * spec.height
        people.append(Person(cx=rng.uniform(0.25, 0.75) * spec.width, cy=rng.uniform(0.35, 0.65) * spec.height, h=h,
                             color=COLORS[(color_offset + p) % len(COLORS)], texture=texture(rng, sources),
                             segments=random_motions(seconds + 1, rng)))
    return people


def fits(spec: SceneSpec, person: Person, motion: Motion, seconds: float = 1.0) -> bool:
    """Whether ``person`` stays inside the frame (and 20-60% of its height) moving with ``motion`` for
    ``seconds``."""
    vx, vy, vs = motion
    h = person.h
    end_h = h * (1 + vs * spec.scale_rate * seconds) if vs else h
    big = max(end_h, h)
    cx, cy = person.cx + vx * spec.speed * seconds, person.cy + vy * spec.speed * seconds
    return (0.2 * spec.height <= end_h <= 0.6 * spec.height
            and 0.225 * big + 2 <= cx <= spec.width - 0.225 * big - 2
            and 0.5 * big + 2 <= cy <= spec.height - 0.5 * big - 2)


def keep_inside(spec: SceneSpec, person: Person, motion: Motion) -> Motion:
    """``motion`` with each component reversed (or stopped) where a whole second of it would leave the frame."""
    v = list(motion)
    for axis in range(3):
        if not fits(spec, person, tuple(v)):  # type: ignore[arg-type]
            v[axis] = -v[axis]
            if not fits(spec, person, tuple(v)):  # type: ignore[arg-type]
                v[axis] = 0.0
    return v[0], v[1], v[2]


def draw_person(frame: np.ndarray, person: Person) -> tuple[float, float, float, float]:
    """Draw ``person`` on ``frame`` (in place); returns its box ``(x1, y1, x2, y2)`` in pixels."""
    import cv2

    h, cx, cy = person.h, person.cx, person.cy
    w = 0.45 * h
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    head = 0.3 * h
    bx1, by1, bx2, by2 = round(x1), round(y1 + head), round(x2), round(y2)
    fh, fw = frame.shape[:2]
    cx1, cy1, cx2, cy2 = max(bx1, 0), max(by1, 0), min(bx2, fw), min(by2, fh)
    if cx2 > cx1 and cy2 > cy1:
        patch = cv2.resize(person.texture, (bx2 - bx1, by2 - by1), interpolation=cv2.INTER_LINEAR)
        patch = patch[cy1 - by1:cy2 - by1, cx1 - bx1:cx2 - bx1].astype(np.float32)
        tinted = 0.55 * patch + 0.45 * np.asarray(person.color, np.float32)
        frame[cy1:cy2, cx1:cx2] = tinted.clip(0, 255).astype(np.uint8)
    cv2.circle(frame, (round(cx), round(y1 + head / 2)), max(1, round(head / 2)), (235, 205, 180), -1)
    return x1, y1, x2, y2


def render(spec: SceneSpec, back: np.ndarray, people: list[Person], num_frames: int, plan: bool = True
           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frame [H, W, 3] uint8, boxes [P, 4] float (x1, y1, x2, y2) px)`` for ``num_frames`` frames.

    Frame ``j`` is at ``t = j / fps``; segment ``round(t)`` drives the motion. With ``plan`` each segment's motion
    is first passed through :func:`keep_inside` (the people's ``segments`` are updated, so they stay the truth).
    """
    dt = 1.0 / spec.fps
    for j in range(num_frames):
        seg = min(int(np.floor(j * dt + 0.5)), len(people[0].segments) - 1) if people else 0
        frame = back.copy()
        boxes = np.zeros((len(people), 4), np.float64)
        for p, person in enumerate(people):
            if plan and seg != person._planned:
                person._planned = seg
                person.segments[seg] = keep_inside(spec, person, person.segments[seg])
            vx, vy, vs = person.segments[seg]
            if j > 0:
                person.cx += vx * spec.speed * dt
                person.cy += vy * spec.speed * dt
                person.h *= 1 + vs * spec.scale_rate * dt
            boxes[p] = draw_person(frame, person)
        yield frame, boxes
