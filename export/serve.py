"""The embedding service: ``python -m export serve model.onnx --host 127.0.0.1 --port 8000``.

* ``POST /v1/embeddings`` — multipart field ``file``: a video (every sliding window is embedded) or a ``.npy``
  array of preprocessed float clips ``[3, T, crop, crop]`` or ``[B, 3, T, crop, crop]``. JSON out:
  ``{"model", "branch", "shape", "embeddings", "windows"}`` (``windows`` gives each video window's start/end
  seconds and frames; ``null`` for ``.npy``).
* Dynamic micro-batching: clips of concurrent requests are queued and run together, at most ``max_batch`` at a
  time, waiting at most ``max_wait_ms`` for a batch to fill.
* ``GET /healthz`` (the process and its batcher are alive), ``GET /readyz`` (the model has run once),
  ``GET /metrics`` (Prometheus: requests by status, latency histogram, batch sizes, clips), ``/docs`` and
  ``/openapi.json``.
* Limits: upload size (413), clips per request (413), request time (408). Every bad request gets a 4xx JSON
  ``{"detail": ...}``; the worker never dies on input.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel

from constcl_zoo.embed import WindowSpec, frames_of, iter_windows
from constcl_zoo.video import VideoError

from .runtime import OnnxEmbedder

log = logging.getLogger(__name__)
NPY_MAGIC = b"\x93NUMPY"


class Window(BaseModel):
    start_s: float
    end_s: float
    start_frame: int
    end_frame: int


class EmbeddingsResponse(BaseModel):
    """``embeddings``: one row per clip (``shape`` ``[B, D]``, or ``[B, C, T', H', W']`` for a region export);
    ``windows``: each video window's times and decoded-frame indices (``null`` for ``.npy`` clips)."""

    model: str
    branch: str
    shape: list[int]
    embeddings: list
    windows: list[Window] | None


@dataclass(frozen=True)
class ServeConfig:
    """Batching and limits. Sizes in bytes, times in seconds unless named otherwise."""

    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_upload_bytes: int = 100 * 2**20
    max_clips: int = 64
    request_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_clips < 1 or self.max_upload_bytes < 1:
            raise ValueError(f"max_batch, max_clips and max_upload_bytes must be >= 1: {self}")
        if self.max_wait_ms < 0 or self.request_timeout_s <= 0:
            raise ValueError(f"max_wait_ms must be >= 0 and request_timeout_s > 0: {self}")


class Metrics:
    """Prometheus metrics in the app's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("constcl_requests", "HTTP requests to /v1/embeddings by status code", ["status"],
                                registry=self.registry)
        self.latency = Histogram("constcl_request_latency_seconds", "Latency of /v1/embeddings requests",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                 registry=self.registry)
        self.batch_size = Histogram("constcl_batch_size", "Clips per model run (micro-batch size)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.clips = Counter("constcl_clips", "Clips embedded", registry=self.registry)
        self.queue = Gauge("constcl_queue_clips", "Clips waiting for the model", registry=self.registry)


class MicroBatcher:
    """Collects clips from concurrent requests into batches for one model runner thread."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float,
                 metrics: Metrics) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop(), name="constcl-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def submit(self, clips: np.ndarray) -> np.ndarray:
        """Embed ``clips [n, ...]``; each clip joins whichever batch has room."""
        loop = asyncio.get_running_loop()
        futures = []
        for clip in clips:
            future = loop.create_future()
            self.queue.put_nowait((clip, future))
            futures.append(future)
        self.metrics.queue.set(self.queue.qsize())
        try:
            return np.stack(await asyncio.gather(*futures))
        finally:
            for future in futures:  # a timed-out request's clips are skipped, not run
                future.cancel()

    async def _next_batch(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return [(clip, f) for clip, f in batch if not f.done()]

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            self.metrics.queue.set(self.queue.qsize())
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            try:
                out = await asyncio.to_thread(self.run, np.stack([clip for clip, _ in batch]))
            except Exception as exc:  # handed to the requests; the loop lives on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), row in zip(batch, out, strict=True):
                if not future.done():
                    future.set_result(row)


class UploadLimit:
    """ASGI middleware: 413 for bodies above ``limit`` bytes (by Content-Length, or counted while streaming)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": self._message(int(length))}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self._message(seen))
            return message

        return await self.app(scope, counted, send)

    def _message(self, size: int) -> str:
        return f"upload of {size} bytes is over the limit of {self.limit} bytes"


def create_app(embedder: OnnxEmbedder, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app around ``embedder`` (an :class:`~export.runtime.OnnxEmbedder` without ROI input)."""
    config = config or ServeConfig()
    if embedder.with_rois:
        raise ValueError(f"{embedder.path} takes boxes (exported --with-rois); serve a global or region export")
    metrics = Metrics()
    batcher = MicroBatcher(embedder.run, config.max_batch, config.max_wait_ms, metrics)
    state = {"ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        warm = np.zeros((1, *embedder.clip_shape), np.float32)
        await asyncio.to_thread(embedder.run, warm)  # first run allocates; /readyz waits for it
        state["ready"] = True
        yield
        await batcher.stop()

    app = FastAPI(title="ConST-CL embedding service", version="1", lifespan=lifespan,
                  description=f"{embedder.config.arch} ({embedder.branch} branch) on {embedder.provider}")
    app.add_middleware(UploadLimit, limit=config.max_upload_bytes)
    app.state.metrics, app.state.batcher, app.state.config = metrics, batcher, config

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable]):
        start = time.perf_counter()
        response = await call_next(request)
        if request.url.path == "/v1/embeddings":
            metrics.requests.labels(status=str(response.status_code)).inc()
            metrics.latency.observe(time.perf_counter() - start)
        return response

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        alive = batcher.alive
        return JSONResponse({"status": "ok" if alive else "batcher stopped"}, status_code=200 if alive else 503)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = state["ready"] and batcher.alive
        return JSONResponse({"ready": ready, "provider": embedder.provider}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, responses={400: {"description": "unreadable upload"},
                                           408: {"description": "over the request time limit"},
                                           413: {"description": "upload or clip count over the limit"},
                                           422: {"description": "wrong shape, dtype or an unusable video"}})
    async def embeddings(file: Annotated[UploadFile, File(description="a video file, or a .npy array of "
                                                                     "preprocessed clips [B, 3, T, crop, crop]")]):
        try:
            return await asyncio.wait_for(_embed_upload(file), config.request_timeout_s)
        except TimeoutError:
            raise HTTPException(408, f"request took longer than the limit of {config.request_timeout_s:g} s") \
                from None

    async def _embed_upload(file: UploadFile) -> JSONResponse:
        name = file.filename or "upload"
        data = await file.read()
        if not data:
            raise HTTPException(400, f"{name}: the upload is empty")
        windows = None
        if data.startswith(NPY_MAGIC) or name.lower().endswith(".npy"):
            clips = _read_npy(data, name)
        else:
            clips, windows = await asyncio.to_thread(_decode_video, data, name)
        try:
            out = await batcher.submit(clips)
        except ValueError as exc:  # shape/dtype problems found by the embedder
            raise HTTPException(422, f"{name}: {exc}") from None
        metrics.clips.inc(len(clips))
        # a JSONResponse skips FastAPI's per-element encoder (slow for [B, D] floats)
        return JSONResponse({"model": embedder.config.arch, "branch": embedder.branch, "shape": list(out.shape),
                             "embeddings": out.tolist(), "windows": windows})

    def _read_npy(data: bytes, name: str) -> np.ndarray:
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise HTTPException(400, f"{name}: not a readable .npy array ({exc})") from None
        if array.ndim == 4:
            array = array[None]
        try:
            clips = embedder.check_clips(array)
        except ValueError as exc:
            raise HTTPException(422, f"{name}: {exc}") from None
        if len(clips) > config.max_clips:
            raise HTTPException(413, f"{name}: {len(clips)} clips; the limit is {config.max_clips} per request")
        if not np.isfinite(clips).all():
            raise HTTPException(422, f"{name}: the clips contain NaN or infinite values")
        return clips

    def _decode_video(data: bytes, name: str) -> tuple[np.ndarray, list[dict]]:
        suffix = Path(name).suffix if len(Path(name).suffix) <= 8 else ""
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            spec = WindowSpec.from_preprocess(embedder.preprocess)
            frames, _ = frames_of(tmp.name)
            clips, windows = [], []
            try:
                for window in iter_windows(frames, embedder.preprocess, spec, name):
                    if len(clips) == config.max_clips:
                        raise HTTPException(413, f"{name}: more than {config.max_clips} windows; the limit is "
                                                 f"{config.max_clips} clips per request (send a shorter video)")
                    clips.append(window.clip.numpy())
                    windows.append({"start_s": window.start_s, "end_s": window.end_s,
                                    "start_frame": window.start_frame, "end_frame": window.end_frame})
            except HTTPException:
                raise
            except (VideoError, FileNotFoundError) as exc:
                raise HTTPException(422, str(exc).replace(tmp.name, name)) from None
            except Exception as exc:  # anything else a decoder throws is still about this upload
                raise HTTPException(422, f"{name}: cannot decode the video ({type(exc).__name__}: "
                                         f"{str(exc).replace(tmp.name, name)})") from None
        return np.stack(clips), windows

    return app


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
          threads: int | None = None, providers: list[str] | None = None) -> None:
    """Load ``model`` (an exported ONNX file) and serve it with uvicorn until interrupted."""
    import uvicorn

    embedder = OnnxEmbedder(model, providers=providers, threads=threads)
    app = create_app(embedder, config)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=30)
