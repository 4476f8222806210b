"""The Gradio app: a Tracking, a Localization and an Embeddings tab over ``constcl_zoo``.

Every tab calls the package (``constcl_zoo.tasks.tracking.track_video``, ``constcl_zoo.tasks.localization.infer``,
``model.embed``); this module only turns page inputs into those calls and their results into page outputs. A user
error (not a video, an empty file, a box outside the frame, a bad CSV) is shown in the page as one readable line
(:func:`readable_errors`); the app keeps serving. API names: ``/first_frame``, ``/track``, ``/localize``,
``/embed`` (and ``/sample`` where the package bundles a sample video).
"""

from __future__ import annotations

import functools
import io
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from constcl_zoo.errors import UsageError, user_message

from . import DEFAULT_CACHE_MAX_AGE_S, DEFAULT_CONCURRENCY, DEFAULT_MAX_UPLOAD_MB
from .models import Models, sample_video

log = logging.getLogger("demos")

EMBEDDING_FORMATS = (".safetensors", ".npy")


def readable_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show the package's user errors (and file errors) as a ``gr.Error`` with their one-line message; anything
    else (a bug) is logged with its traceback and shown as a short line. The app keeps serving either way."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            message = user_message(exc)
            if message is None:
                log.exception("%s failed", fn.__name__)
                message = f"unexpected error ({type(exc).__name__}: {exc}); the server log has the details"
            raise gr.Error(_without_server_folders(message), print_exception=False) from exc

    return wrapper


def _without_server_folders(message: str) -> str:
    """Files in Gradio's upload folder named by their own name: the server's folders mean nothing to the user."""
    root = re.escape(str(Path(gr.utils.get_upload_folder())))
    return re.sub(root + r"""[^\s'"]*/""", "", message)


def _video_path(video: str | None) -> Path:
    if not video:
        raise UsageError("no video: upload one first")
    path = Path(video)
    if not path.is_file() or path.stat().st_size == 0:
        raise UsageError(f"the uploaded file {path.name} is empty: upload a video file (MP4, AVI, MOV, ...)")
    return path


_cache_max_age_s = DEFAULT_CACHE_MAX_AGE_S  # set by launch()


def _output_dir() -> Path:
    """A fresh folder for one request's outputs, inside Gradio's upload folder (``GRADIO_TEMP_DIR``) so that the
    app may serve them; earlier requests' folders older than the cache age are deleted first (Gradio serves copies
    of the outputs, and its ``delete_cache`` only deletes those)."""
    root = Path(gr.utils.get_upload_folder()) / "constcl-demo"
    root.mkdir(parents=True, exist_ok=True)
    prune_older_than(root, _cache_max_age_s)
    return Path(tempfile.mkdtemp(dir=root, prefix=f"{time.time():.0f}-"))


def prune_older_than(root: Path, age_s: float) -> int:
    """Delete the folders in ``root`` created over ``age_s`` seconds ago (the creation time :func:`_output_dir`
    puts in the name: Gradio's own cache cleaning deletes files inside, which makes a folder's mtime young again);
    returns how many."""
    now, removed = time.time(), 0
    for folder in root.iterdir():
        created = folder.name.split("-", 1)[0]
        if folder.is_dir() and created.isdigit() and now - int(created) > age_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


# -- Tracking ------------------------------------------------------------------------------------------------------

def first_frame(video: str | None) -> tuple[np.ndarray, str]:
    """The video's first frame (uint8 RGB ``[H, W, 3]``), to mark the target on, and a cleared box."""
    from constcl_zoo.inference.video import EmptyVideoError, iter_video_file

    path = _video_path(video)
    frame = next(iter_video_file(path), None)
    if frame is None:
        raise EmptyVideoError(f"{path.name}: the video has no frames")
    return frame.rgb, ""


def draw_target(frame: np.ndarray | None, box_text: str) -> np.ndarray | None:
    """The first frame with the box ``x,y,w,h`` drawn on it (the frame alone while the box is incomplete)."""
    from constcl_zoo.formats.boxes import parse_box, xywh_to_xyxy
    from constcl_zoo.inference.visualize import draw_box

    if frame is None:
        return None
    try:
        box = np.asarray(parse_box(box_text or "", "box"))
    except UsageError:
        return frame
    return draw_box(np.array(frame), xywh_to_xyxy(box))


def click_corner(frame: np.ndarray | None, corner: list[int] | None, box_text: str,
                 evt: gr.SelectData) -> tuple[list[int] | None, str]:
    """Two clicks on the first frame mark the target: the first sets one corner, the second the opposite one
    (then the box ``x,y,w,h`` is filled in). Returns the pending corner and the box text."""
    x, y = (int(v) for v in evt.index[:2])
    if corner is None:
        return [x, y], box_text
    x0, y0 = corner
    return None, f"{min(x, x0)},{min(y, y0)},{max(abs(x - x0), 1)},{max(abs(y - y0), 1)}"


def track(models: Models, video: str | None, box_text: str,
          progress: gr.Progress | None = None) -> tuple[str, pd.DataFrame, str]:
    """Track the target through the video: the annotated H.264 MP4, the per-frame confidence (a DataFrame
    ``frame, confidence``; it drops when the target is lost) and the boxes file (``x,y,w,h,confidence`` a line)."""
    from constcl_zoo.fileio import atomic_write
    from constcl_zoo.formats.boxes import parse_box
    from constcl_zoo.tasks.tracking import format_boxes, track_video

    path = _video_path(video)
    box = parse_box(box_text or "", "box")
    out = _output_dir()
    _say(progress, 0.0, "loading the tracker")
    with models.use("tracking") as tracker:
        result = track_video(tracker, path, box, out=out / "tracked.mp4",
                             progress=lambda i: _say(progress, (i + 1, None), "tracking", "frames"))
    atomic_write(out / "boxes.txt", format_boxes(result.boxes, result.scores))
    scores = pd.DataFrame({"frame": np.arange(len(result)), "confidence": result.scores.astype(float)})
    return str(out / "tracked.mp4"), scores, str(out / "boxes.txt")


# -- Localization --------------------------------------------------------------------------------------------------

TABLE_COLUMNS = ["time (s)", "track", "box (x1, y1, x2, y2 px)", "action", "score"]


def localize_video(models: Models, video: str | None, person_source: str, boxes_csv: str | None, interval_s: float,
                   score_threshold: float | None, progress: gr.Progress | None = None
                   ) -> tuple[str, pd.DataFrame, str]:
    """Persons (HOG detector or an AVA-format CSV), their tracks and top actions: the annotated MP4, a table of
    ``time, track, box, action, score`` rows (one per action shown; a person without one gets an empty action)
    and the results JSON (``constcl-zoo localize --json``'s format). ``score_threshold`` ``None``: the model's
    calibrated per-class thresholds (else 0.5), as ``localize`` decides."""
    import json

    from constcl_zoo.fileio import atomic_write
    from constcl_zoo.formats.ava import read_boxes_csv
    from constcl_zoo.inference.detection import HogPersonDetector
    from constcl_zoo.tasks.localization.infer import localize, write_annotated

    path = _video_path(video)
    boxes = None
    if person_source == "CSV file":
        if not boxes_csv:
            raise UsageError("person boxes from a CSV file: upload the CSV (video_id,timestamp,x1,y1,x2,y2,...)")
        boxes = read_boxes_csv(boxes_csv, path.stem)
    out = _output_dir()
    _say(progress, 0.0, "loading the localizer")
    with models.use("localization") as model:
        result = localize(model, path, boxes=boxes, detector=None if boxes is not None else HogPersonDetector(),
                          score_threshold=None if score_threshold is None else float(score_threshold), top_k=3,
                          interval_s=float(interval_s),
                          progress=lambda n: _say(progress, (n, None), "finding people and actions", "frames"))
    write_annotated(result, path, out / "localized.mp4",
                    progress=lambda n: _say(progress, (n, result.num_frames), "writing the video", "frames"))
    atomic_write(out / "localization.json", json.dumps(result.to_dict(), indent=1) + "\n")
    rows = []
    for key in result.frames:
        for p in key.persons:
            box = ", ".join(f"{v:.0f}" for v in p.box_px)
            for label, score in p.actions or [("", None)]:
                rows.append([round(key.time_s, 2), p.track_id, box, label, "" if score is None else f"{score:.3f}"])
    return str(out / "localized.mp4"), pd.DataFrame(rows, columns=TABLE_COLUMNS), str(out / "localization.json")


# -- Embeddings ----------------------------------------------------------------------------------------------------

def embed(models: Models, video: str | None, file_format: str,
          progress: gr.Progress | None = None) -> tuple[pd.DataFrame, str]:
    """Clip embeddings of every window: the cosine similarity of each window with the previous one (a DataFrame
    ``time (s), cosine``: the next window's start time; dips are scene changes) and the embeddings file
    (``.safetensors`` as ``constcl-zoo embed`` writes it, or ``.npy``: the ``[N, D]`` float32 array)."""
    import torch

    from constcl_zoo.fileio import atomic_write
    from constcl_zoo.formats.embeddings import FORMAT, save_embeddings

    path = _video_path(video)
    if file_format not in EMBEDDING_FORMATS:
        raise UsageError(f"file format {file_format!r}: choose one of {', '.join(EMBEDDING_FORMATS)}")
    _say(progress, None, "embedding the video's windows")
    with models.use("embedding") as model:
        result = model.embed(path)
    out = _output_dir() / f"{path.stem}{file_format}"
    if file_format == ".safetensors":
        save_embeddings(result, out, {"format": FORMAT, "source": path.name, "model": models.describe("embedding"),
                                      "num_frames": str(result.num_frames), "num_windows": str(len(result))})
    else:
        buffer = io.BytesIO()
        np.save(buffer, result.embeddings.float().numpy())
        atomic_write(out, buffer.getvalue())
    emb = result.embeddings.float()
    cosine = torch.nn.functional.cosine_similarity(emb[:-1], emb[1:], dim=1).numpy() if len(emb) > 1 else []
    if len(emb) < 2:
        gr.Warning(f"the video has {len(emb)} window(s): the similarity plot needs at least 2 (a longer video)")
    curve = pd.DataFrame({"time (s)": np.asarray(result.start_s[1:], float), "cosine": np.asarray(cosine, float)})
    return curve, str(out)


def _say(progress: gr.Progress | None, value: float | tuple[int, int | None] | None, desc: str,
         unit: str = "steps") -> None:
    if progress is not None:
        progress(value, desc=desc, unit=unit)


# -- The page ------------------------------------------------------------------------------------------------------

def build_app(models: Models) -> gr.Blocks:
    """The three-tab page; API names as in the module docstring. Launch it with :func:`launch`."""
    sample = sample_video()
    with gr.Blocks(title="ConST-CL demo", analytics_enabled=False) as app:
        gr.Markdown("# ConST-CL: tracking, action localization and clip embeddings\n"
                    "Self-supervised video features (CVPR 2022) from `constcl_zoo`. Models: "
                    f"tracker {models.describe('tracking')}, localizer {models.describe('localization')}, "
                    f"encoder {models.describe('embedding')}.")
        with gr.Tab("Tracking"):
            _tracking_tab(models, sample)
        with gr.Tab("Localization"):
            _localization_tab(models)
        with gr.Tab("Embeddings"):
            _embeddings_tab(models)
    return app


def _tracking_tab(models: Models, sample: Path | None) -> None:
    """The tracking tab: a video, a target box (typed or clicked), the tracked video, its confidence plot."""
    frame_state = gr.State(None)
    corner_state = gr.State(None)
    with gr.Row():
        with gr.Column():
            t_video = gr.Video(label="Video", sources=["upload"], format=None, include_audio=True,
                               elem_id="track-video")
            t_sample = gr.Button("Use the sample video", visible=sample is not None, size="sm")
            t_frame = gr.Image(label="First frame: click two opposite corners of the target",
                               interactive=False, type="numpy", format="png", elem_id="track-frame")
            t_box = gr.Textbox(label="Target box x,y,w,h (pixels, first frame)",
                               placeholder="e.g. 120,80,40,60", elem_id="track-box")
            t_run = gr.Button("Track", variant="primary", elem_id="track-run")
        with gr.Column():
            t_out = gr.Video(label="Tracked", format=None, include_audio=True, elem_id="track-out")
            t_plot = gr.LinePlot(x="frame", y="confidence", label="Tracking confidence per frame",
                                 y_lim=[0, 1])
            t_file = gr.File(label="Boxes (x,y,w,h,confidence per frame)")
    if sample is not None:
        t_sample.click(lambda: str(sample), outputs=t_video, api_name="sample")
    t_video.change(readable_errors(_first_frame_or_clear), inputs=t_video,
                   outputs=[frame_state, t_frame, t_box], api_name="first_frame")
    t_frame.select(click_corner, inputs=[frame_state, corner_state, t_box], outputs=[corner_state, t_box],
                   api_visibility="private")
    t_box.change(draw_target, inputs=[frame_state, t_box], outputs=t_frame, api_visibility="private",
                 show_progress="hidden")

    @readable_errors
    def on_track(video: str | None, box_text: str, progress: gr.Progress = gr.Progress()):  # noqa: B008
        return track(models, video, box_text, progress)

    t_run.click(on_track, inputs=[t_video, t_box], outputs=[t_out, t_plot, t_file], api_name="track")


def _localization_tab(models: Models) -> None:
    """The localization tab: a video, person boxes (HOG or CSV), actions per track."""
    with gr.Row():
        with gr.Column():
            l_video = gr.Video(label="Video", sources=["upload"], format=None, include_audio=True)
            l_source = gr.Radio(["HOG detector", "CSV file"], value="HOG detector", label="Person boxes")
            l_csv = gr.File(label="Person boxes CSV (AVA: video_id,timestamp,x1,y1,x2,y2,action_id,score)",
                            file_types=[".csv"], type="filepath")
            l_interval = gr.Slider(0.2, 5.0, value=1.0, step=0.1, label="Seconds between key frames")
            l_threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05,
                                    label="Minimum action score shown (with the box below unticked)")
            l_calibrated = gr.Checkbox(value=True, label="Use the model's calibrated per-class thresholds "
                                       "(else 0.5; unticked: the slider for every class)")
            l_run = gr.Button("Localize", variant="primary")
        with gr.Column():
            l_out = gr.Video(label="Tracks and actions", format=None, include_audio=True)
            l_table = gr.Dataframe(headers=TABLE_COLUMNS, label="Persons and actions", interactive=False)
            l_file = gr.File(label="Results (JSON)")

    @readable_errors
    def on_localize(video: str | None, source: str, csv: str | None, interval: float, threshold: float,
                    calibrated: bool, progress: gr.Progress = gr.Progress()):  # noqa: B008
        return localize_video(models, video, source, csv, interval, None if calibrated else threshold,
                              progress)

    l_run.click(on_localize, inputs=[l_video, l_source, l_csv, l_interval, l_threshold, l_calibrated],
                outputs=[l_out, l_table, l_file], api_name="localize")


def _embeddings_tab(models: Models) -> None:
    """The embeddings tab: a video, its window embeddings as a file and a similarity plot."""
    with gr.Row():
        with gr.Column():
            e_video = gr.Video(label="Video", sources=["upload"], format=None, include_audio=True)
            e_format = gr.Radio(list(EMBEDDING_FORMATS), value=".safetensors", label="Download as")
            e_run = gr.Button("Embed", variant="primary")
        with gr.Column():
            e_plot = gr.LinePlot(x="time (s)", y="cosine", y_lim=[-1, 1],
                                 label="Cosine similarity of each window with the previous one")
            e_file = gr.File(label="Embeddings")

    @readable_errors
    def on_embed(video: str | None, file_format: str, progress: gr.Progress = gr.Progress()):  # noqa: B008
        return embed(models, video, file_format, progress)

    e_run.click(on_embed, inputs=[e_video, e_format], outputs=[e_plot, e_file], api_name="embed")


def _first_frame_or_clear(video: str | None) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    if not video:  # the video was cleared
        return None, None, ""
    frame, box = first_frame(video)
    return frame, frame, box


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None,
           max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, concurrency: int = DEFAULT_CONCURRENCY,
           cache_max_age_s: int = DEFAULT_CACHE_MAX_AGE_S, block: bool = True) -> gr.Blocks:
    """Queue (``concurrency`` requests of each kind at a time) and serve ``app``; uploads over ``max_upload_mb`` are
    refused; uploads and results are deleted ``cache_max_age_s`` after they were written (Gradio's
    ``delete_cache``, checked every ``min(cache_max_age_s, 600)`` s, and :func:`_output_dir` for the result
    folders). ``block=False`` returns once the server is up (tests)."""
    global _cache_max_age_s
    _cache_max_age_s = cache_max_age_s
    app.delete_cache = (min(cache_max_age_s, 600), cache_max_age_s)
    app.queue(default_concurrency_limit=concurrency, max_size=64)
    sample = sample_video()
    app.launch(server_name=host, server_port=port, max_file_size=int(max_upload_mb * 1024 * 1024),
               allowed_paths=[str(sample.parent)] if sample is not None else None, prevent_thread_lock=not block,
               show_error=True, quiet=not block, footer_links=["api"])
    return app
