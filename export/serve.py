"""The embedding service: ``python -m export serve model.onnx --host 127.0.0.1 --port 8000``.

* ``POST /v1/embeddings`` — a video (every sliding window is embedded) or preprocessed float clips
  ``[3, T, crop, crop]`` / ``[B, 3, T, crop, crop]``, sent as the multipart field ``file`` (a video or a ``.npy``),
  or as the whole body: a ``.npy`` file, raw C-ordered bytes with headers ``X-Clips-Shape: B,3,T,crop,crop`` and
  ``X-Clips-Dtype`` (default ``float32``), or a video. JSON out: ``{"model", "branch", "shape", "embeddings",
  "windows"}`` (``windows`` gives each video window's start/end seconds and frames; ``null`` for clips).
* The KServe v2 inference protocol (what Triton speaks; ``tritonclient.http`` works unchanged): ``GET /v2``,
  ``/v2/health/{live,ready}``, ``/v2/models/NAME[/versions/1]`` (metadata), ``.../ready``, ``.../config`` and
  ``POST .../infer`` with JSON or binary tensor data (``Inference-Header-Content-Length``); errors are
  ``{"error": ...}`` (404 unknown model or version, 400 a bad request, 408/413 the limits below). NAME is the ONNX
  file's stem unless ``--model-name`` says otherwise.
* Dynamic micro-batching: clips of concurrent requests are queued and run together, at most ``max_batch`` at a
  time, waiting at most ``max_wait_ms`` for a batch to fill.
* ``GET /healthz`` (the process and its batcher are alive), ``GET /readyz`` (the model has run once),
  ``GET /metrics`` (Prometheus: requests by status, latency histogram, batch sizes, clips; where a request's time
  goes: ``constcl_stage_seconds`` / ``constcl_stage_cpu_seconds`` by stage and ``constcl_thread_cpu_seconds`` of
  the event-loop and model threads), ``/docs`` and ``/openapi.json``.
* The protocol layer (:func:`guarded_protocol`, the ``http`` of :func:`uvicorn_options`): uvicorn's httptools
  protocol (llhttp, in C; uvicorn's pure-Python h11 cost ~0.85 ms of CPU per 1.2 MB request) on asyncio's event
  loop, subclassed for the limits below and for whole bodies: a request with a ``Content-Length`` of at most
  ``max_upload_bytes`` (not a form) gets one buffer of that size when its head is parsed, the socket's reads go
  straight into it (``recv_into`` through :class:`asyncio.BufferedProtocol`: no ``bytes`` per read, no copy by the
  parser, none by uvicorn or Starlette), and the app receives it as one message whose body is a ``memoryview``
  (:class:`WholeBody`; a KServe v2 tensor lands 64-byte aligned). Forms and chunked bodies keep uvicorn's path.
  The embedding routes go from the middleware straight to their handlers (:class:`FastLane`: no router, no
  dependency solving), and the clips are a ``np.frombuffer`` view of the body up to the batch.
* Cost per request (``benchmarks/serve_load.py``): besides the above, replies are written by orjson, no thread hop
  but the one model run per batch, ORT's idle threads do not spin (``--ort-spinning`` to let them), stage metrics
  are bound once, a ``.npy`` header is parsed once per distinct header, and :func:`serve` keeps freed memory in the
  process (:func:`keep_freed_memory`) and freezes the startup objects out of the garbage collector. What is left on
  the event loop for a one-clip request of 1.2 MB: the kernel's copy into the buffer, the finiteness check, the copy
  into the batch (when it holds clips of several requests), and the ASGI layers (Starlette, our middleware, uvicorn's
  response and access log).
* Limits: upload size (413), clips per request (413), request time (408; the request's decoding stops at its
  next frame). Every bad request gets a 4xx JSON ``{"detail": ...}`` (``{"error": ...}`` under ``/v2``); the
  worker never dies on input. An unexpected error gets a JSON 500, is counted in ``constcl_internal_errors_total``
  and leaves the connection open.
* Connections (see :class:`ServeConfig`): uvicorn's own ``limit_concurrency`` (503 beyond it),
  ``timeout_keep_alive`` and ``timeout_graceful_shutdown``; uvicorn has no time limit on receiving a request, no
  cap on open sockets and no 431 (llhttp has no head limit at all), so the protocol of :func:`guarded_protocol`
  closes a connection whose request head is not complete ``header_timeout_s`` after its first byte (or after
  connecting), answers 431 to a request head over ``max_header_bytes`` (complete or not: counted in the parser's
  callbacks, and by the reads while the head is incomplete), and closes new connections at once beyond
  :func:`open_connection_cap` (below the process's file-descriptor limit, so ``accept`` never fails with EMFILE;
  one log line per 10 s says how many); the :class:`BodyTimeout` middleware answers 408 and closes when the body
  takes longer than ``body_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import io
import logging
import math
import re
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from numpy.lib import format as npy_format
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect

from constcl_zoo.config import ConfigError
from constcl_zoo.errors import ConstclZooError, InvalidArgumentError
from constcl_zoo.inference.embed import WindowSpec, frames_of, iter_windows
from constcl_zoo.inference.video import Frame, VideoError

from .runtime import OnnxEmbedder

log = logging.getLogger(__name__)
NPY_MAGIC = b"\x93NUMPY"
ALIGN = 64  # bytes: a cache line, an AVX-512 vector
READ_BYTES = 256 * 1024  # the most one read takes from a socket outside a body (uvloop's own read size)
NPY_HEADER_BYTES = 12 + 10000 + 64  # a .npy prefix (magic, version, length) and numpy's largest header, with room
T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """``await awaitable`` within ``seconds`` (``TimeoutError`` after), without a task per call where
    ``asyncio.timeout`` exists (Python >= 3.11; ``asyncio.wait_for`` creates one)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def npy_header_bytes(data: bytes | memoryview) -> bytes:
    """The bytes of a ``.npy`` file's prefix and header (what :func:`npy_header` parses); for a file that is not
    a ``.npy`` 1.0/2.0 or whose header is over numpy's limit, its first :data:`NPY_HEADER_BYTES` (numpy's parser then
    says what is wrong)."""
    prefix = bytes(data[:12])
    if prefix[:6] == NPY_MAGIC and prefix[6:8] in (b"\x01\x00", b"\x02\x00") and len(prefix) == 12:
        size = 10 + int.from_bytes(prefix[8:10], "little") if prefix[6] == 1 else \
            12 + int.from_bytes(prefix[8:12], "little")
        return bytes(data[:min(size, NPY_HEADER_BYTES)])
    return bytes(data[:NPY_HEADER_BYTES])


@functools.lru_cache(maxsize=64)
def npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran order, dtype, data offset)`` of a ``.npy`` header (:func:`npy_header_bytes`), parsed by
    numpy (``ValueError`` and friends for a bad one). Cached: clients send the same few headers again and again,
    and numpy's parser (``ast.literal_eval``) takes ~40 us."""
    buffer = io.BytesIO(header)
    version = npy_format.read_magic(buffer)
    if version not in ((1, 0), (2, 0)):
        raise InvalidArgumentError(f"format version {version[0]}.{version[1]} (1.0 and 2.0 are read)")
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, fortran, dtype = read_header(buffer)
    return shape, fortran, dtype, buffer.tell()


async def whole_body(request: Request) -> bytes | memoryview:
    """A request's whole body: the one message's body as it is when the body came in one (a ``memoryview`` of the
    protocol's buffer, :class:`WholeBody`; or ``bytes``), else the chunks joined once (Starlette's ``body()`` copies
    every chunk and then the whole). Read from ``receive`` as Starlette's ``stream()`` does, without its generator."""
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if body := message.get("body"):
            chunks.append(body)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error in the body each protocol uses: ``{"error": ...}`` under ``/v2`` (KServe v2), FastAPI's
    ``{"detail": ...}`` elsewhere."""
    return JSONResponse({"error" if path.startswith("/v2") else "detail": message}, status_code=status,
                        headers=headers)


def counted_path(path: str) -> bool:
    """Whether requests to ``path`` are embedding requests (counted and timed in the request metrics)."""
    return path == "/v1/embeddings" or (path.startswith("/v2/models/") and path.endswith("/infer"))


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
    header_timeout_s: float = 10.0  # from a request's first byte (or the connection) to its complete head
    body_timeout_s: float = 30.0  # from the complete head to the end of the body
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this (uvicorn timeout_keep_alive)
    max_connections: int = 64  # open connections; requests beyond get 503 (uvicorn limit_concurrency)
    max_open_connections: int = 512  # sockets held open at all; beyond, closed at accept (see open_connection_cap)
    max_header_bytes: int = 16384  # request head size; larger heads get 431
    decode_workers: int = 2  # threads decoding uploaded videos (their own pool, not the default executor)
    graceful_shutdown_s: float = 10.0  # uvicorn timeout_graceful_shutdown

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_clips", "max_upload_bytes", "max_connections", "max_open_connections",
                     "max_header_bytes", "decode_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServeConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s", "keep_alive_s",
                     "graceful_shutdown_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ServeConfig.{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"ServeConfig.max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_open_connections < self.max_connections:
            raise ConfigError(f"ServeConfig.max_open_connections ({self.max_open_connections}) must be >= "
                              f"max_connections ({self.max_connections})")


STAGES = ("read", "validate", "decode", "queue", "ort", "encode")


class Timed:
    """The context manager of :meth:`Metrics.timed` (a small class: a generator-based one cost ~3 us a block)."""

    __slots__ = ("clock", "cpu", "start", "wall")

    def __init__(self, wall, cpu) -> None:
        self.wall, self.cpu = wall, cpu

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        if self.cpu is not None:
            self.clock = time.thread_time()

    def __exit__(self, *exc_info) -> None:
        self.wall.observe(time.perf_counter() - self.start)
        if self.cpu is not None:
            self.cpu.observe(time.thread_time() - self.clock)


class Metrics:
    """Prometheus metrics in the app's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("constcl_requests", "Embedding requests (/v1/embeddings, /v2/models/*/infer) by "
                                "status code", ["status"], registry=self.registry)
        self.latency = Histogram("constcl_request_latency_seconds", "Latency of embedding requests",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                 registry=self.registry)
        self.batch_size = Histogram("constcl_batch_size", "Clips per model run (micro-batch size)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.clips = Counter("constcl_clips", "Clips embedded", registry=self.registry)
        self.queue = Gauge("constcl_queue_clips", "Clips waiting for the model", registry=self.registry)
        self.internal_errors = Counter("constcl_internal_errors", "Requests answered 500 (any path)", ["path"],
                                       registry=self.registry)
        self.decode_jobs = Gauge("constcl_decode_jobs", "Video decoding jobs running or queued",
                                 registry=self.registry)
        self.frames_decoded = Counter("constcl_frames_decoded", "Video frames decoded for requests",
                                      registry=self.registry)
        self.stage = Summary("constcl_stage_seconds", "Wall time of request stages: read (body received and parsed), "
                             "validate (array checks), decode (video), queue (batching wait, per clip), ort (per "
                             "model run), encode (the reply)", ["stage"], registry=self.registry)
        self.stage_cpu = Summary("constcl_stage_cpu_seconds", "CPU time of the thread running a synchronous stage "
                                 "(validate, encode: the event loop; ort: the model thread's share of the run)",
                                 ["stage"], registry=self.registry)
        self.thread_cpu = Gauge("constcl_thread_cpu_seconds", "CPU time of the service's threads (event_loop: HTTP, "
                                "parsing, checks, replies; model: batching and the ORT calls)", ["thread"],
                                registry=self.registry)
        # the stages' children, bound once (``labels()`` costs a lookup under a lock per observation)
        self.stages = {stage: self.stage.labels(stage) for stage in STAGES}
        self.stages_cpu = {stage: self.stage_cpu.labels(stage) for stage in STAGES}

    def timed(self, stage: str, cpu: bool = False) -> Timed:
        """Observe the block's wall time in ``constcl_stage_seconds`` (and with ``cpu``, the running thread's CPU
        time in ``constcl_stage_cpu_seconds``; only meaningful for a block without ``await``)."""
        return Timed(self.stages[stage], self.stages_cpu[stage] if cpu else None)

    def watch_thread(self, name: str, ident: int) -> None:
        """Export the CPU clock of thread ``ident`` as ``constcl_thread_cpu_seconds{thread=name}`` (read at each
        scrape; nothing where the platform has no per-thread clocks)."""
        if not hasattr(time, "pthread_getcpuclockid"):  # pragma: no cover - not on Linux/macOS
            return
        clock = time.pthread_getcpuclockid(ident)
        self.thread_cpu.labels(name).set_function(lambda: time.clock_gettime(clock))


class MicroBatcher:
    """Collects clips from concurrent requests into batches for one model runner thread. ``run`` returns new
    arrays (as ORT does), never views of its input: the batch buffer is reused for the next batch."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float,
                 metrics: Metrics) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="constcl-model")  # the model's own thread
        self.queue: asyncio.Queue[tuple[np.ndarray, int, asyncio.Future, float]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.buffer: np.ndarray | None = None  # batches of clips from several requests are stacked into it

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop(), name="constcl-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: Callable, *args):
        """Run ``fn(*args)`` on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def submit(self, clips: np.ndarray) -> np.ndarray:
        """Embed ``clips [n, ...]``; each clip joins whichever batch has room."""
        loop = asyncio.get_running_loop()
        futures, now = [], loop.time()
        for index in range(len(clips)):
            future = loop.create_future()
            self.queue.put_nowait((clips, index, future, now))
            futures.append(future)
        self.metrics.queue.set(self.queue.qsize())
        try:
            return np.stack(await asyncio.gather(*futures))
        finally:
            for future in futures:  # a timed-out request's clips are skipped, not run
                future.cancel()

    async def _next_batch(self) -> list[tuple[np.ndarray, int, asyncio.Future, float]]:
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
                batch.append(await bounded(self.queue.get(), remaining))
            except TimeoutError:
                break
        return [item for item in batch if not item[2].done()]

    def _stack(self, batch: list[tuple[np.ndarray, int, asyncio.Future, float]]) -> np.ndarray:
        """The batch's clips as one array: a view when they are consecutive clips of one request, else a copy into
        the batcher's own buffer (one batch runs at a time, so it is free again when the next one is stacked)."""
        first, start = batch[0][0], batch[0][1]
        if all(clips is first and index == start + k for k, (clips, index, _, _) in enumerate(batch)):
            return first[start:start + len(batch)]
        clip = first[start]
        if self.buffer is None or self.buffer.shape[1:] != clip.shape or self.buffer.dtype != clip.dtype:
            self.buffer = np.empty((self.max_batch, *clip.shape), clip.dtype)
        return np.stack([clips[index] for clips, index, _, _ in batch], out=self.buffer[:len(batch)])

    def _run(self, clips: np.ndarray) -> np.ndarray:
        with self.metrics.timed("ort", cpu=True):
            return self.run(clips)

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            self.metrics.queue.set(self.queue.qsize())
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            now = asyncio.get_running_loop().time()
            for _, _, _, queued in batch:
                self.metrics.stages["queue"].observe(now - queued)
            try:
                out = await self.call(self._run, self._stack(batch))
            except Exception as exc:  # handed to the requests; the loop lives on
                for _, _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future, _), row in zip(batch, out, strict=True):
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
            response = error_response(scope["path"], 413, self._message(int(length)))
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


class BodyTimeout:
    """ASGI middleware: 408 when a request's body is not received within ``timeout_s`` of its head.

    uvicorn bounds idle keep-alive connections and header sizes but not the time a client may take to send a body
    (a client that stalls mid-upload holds its connection and its spooled upload forever). This bounds the whole
    body, not the gap between chunks, so a trickle is cut off too. The app sees an ``HTTPException(408)`` from
    ``receive``, answered as JSON by FastAPI; the body is unfinished, so the connection is then closed.
    """

    def __init__(self, app, timeout_s: float) -> None:
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_done = False

        async def timed():
            nonlocal body_done
            if body_done:  # after the body only a disconnect can come; waiting for it needs no deadline
                return await receive()
            try:
                message = await bounded(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                raise HTTPException(408, f"the request body was not received within {self.timeout_s:g} s",
                                    headers={"Connection": "close"}) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return await self.app(scope, timed, send)


class Observe:
    """ASGI middleware: counts and times embedding requests (:func:`counted_path`) by status, and turns any
    exception that escapes the app into a JSON 500 (counted in ``constcl_internal_errors_total``) instead of
    Starlette's plain text one, so the error is visible in ``/metrics`` and the connection stays usable."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [None]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            log.exception("internal error on %s", scope.get("path"))
            if status[0] is not None:  # the response had started: nothing sane can follow; uvicorn closes
                raise
            status[0] = 500
            await error_response(scope.get("path", ""), 500, f"internal error ({type(exc).__name__}); it is logged "
                                                             f"and counted in /metrics")(scope, receive, send)
        finally:
            if status[0] == 500:
                self.metrics.internal_errors.labels(path=scope.get("path", "")).inc()
            if counted_path(scope.get("path", "")) and status[0] is not None:
                self.metrics.requests.labels(status=str(status[0])).inc()
                self.metrics.latency.observe(time.perf_counter() - start)


class FastLane:
    """ASGI middleware: the embedding routes, ``POST /v1/embeddings`` and ``POST /v2/models/NAME[/versions/V]/infer``,
    go straight to their handlers (``embeddings(request)``, ``infer(request, name, version)``) instead of through
    FastAPI's exception middleware, router, route and dependency solving (measured ~0.2 ms of the event loop's CPU
    per request); everything else, and a request under a ``root_path``, goes on to the app. The routes stay
    registered in FastAPI (OpenAPI, the same handlers), and an ``HTTPException`` is answered as the app's handler
    answers it (:func:`error_response`)."""

    def __init__(self, app, embeddings: Callable[..., Awaitable[Response]],
                 infer: Callable[..., Awaitable[Response]]) -> None:
        self.app, self.embeddings, self.infer = app, embeddings, infer

    def _route(self, scope) -> Callable[[Request], Awaitable[Response]] | None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path = scope["path"]
        if path == "/v1/embeddings":
            return self.embeddings
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path.split("/")  # "", "v2", "models", NAME, ["versions", V,] "infer"
            if len(parts) == 5 and parts[3]:
                return lambda request: self.infer(request, parts[3])
            if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
                return lambda request: self.infer(request, parts[3], parts[5])
        return None

    async def __call__(self, scope, receive, send) -> None:
        handler = self._route(scope)
        if handler is None:
            return await self.app(scope, receive, send)
        try:
            response = await handler(Request(scope, receive))
        except StarletteHTTPException as exc:
            response = error_response(scope["path"], exc.status_code, str(exc.detail), exc.headers)
        await response(scope, receive, send)


FD_RESERVE = 64  # file descriptors kept free of client sockets: the model, logs, uploads' temporary files


def open_connection_cap(config: ServeConfig) -> int:
    """Sockets the server holds open at once: ``config.max_open_connections``, but at most the process's soft
    file-descriptor limit less :data:`FD_RESERVE` (at least 1)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - no rlimits (Windows)
        soft = -1
    if soft < 0:  # unlimited (RLIM_INFINITY) or unknown
        return config.max_open_connections
    return max(1, min(config.max_open_connections, soft - FD_RESERVE))


class _HeadTooLarge(Exception):
    """Raised from an httptools callback: the request head is over ``max_header_bytes`` (answered 431)."""


FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")


class WholeBody:
    """One request's body, received into a buffer of its ``Content-Length`` (allocated, not written, when the head
    arrives: pages are committed as the bytes come) and handed to the app as a single ``http.request`` message whose
    ``body`` is a ``memoryview`` of that buffer: no copy between the socket's reads and ``np.frombuffer``.

    The byte at ``aligned`` (where a tensor starts: KServe v2's binary data follows a JSON header of
    ``Inference-Header-Content-Length`` bytes) is placed at a multiple of :data:`ALIGN` bytes: numpy's loops on an
    unaligned float32 array are slower (the finiteness check of a 1.2 MB clip took 1.7x as long)."""

    __slots__ = ("buffer", "delivered", "done", "filled", "view")

    def __init__(self, length: int, aligned: int = 0) -> None:
        self.buffer = np.empty(length + ALIGN, np.uint8)
        start = -(self.buffer.ctypes.data + aligned) % ALIGN
        self.view = memoryview(self.buffer)[start:start + length]
        self.filled, self.done, self.delivered = 0, False, False

    def add(self, data: bytes) -> None:
        end = self.filled + len(data)
        self.view[self.filled:end] = data
        self.filled = end


def guarded_protocol(config: ServeConfig) -> Callable[..., asyncio.BufferedProtocol]:
    """uvicorn's httptools protocol (llhttp, C) with the limits uvicorn lacks (module docstring) and whole bodies.

    * A deadline on request heads: uvicorn's ``timeout_keep_alive`` only runs between requests, once a response is
      sent, and is cancelled by the first byte of the next request; a client that connects and sends nothing, or
      trickles a head byte by byte (slowloris), would otherwise hold its connection forever (and
      ``limit_concurrency`` counts it).
    * 431 for heads over ``config.max_header_bytes``: llhttp has no size limit of its own. The head is counted
      exactly in the parser's callbacks (request target, each header, request line and blank line), so a long head
      in one read is caught; a head still incomplete is counted by the reads that hold nothing else, so a trickled
      one is caught before the parser has seen a whole header (at most one read, 256 KB, later for a head that
      starts in the middle of a read after a pipelined request).
    * A cap on open sockets (:func:`open_connection_cap`): beyond it, connections are closed at accept.
    * Bodies with a ``Content-Length`` of at most ``config.max_upload_bytes`` (not forms: Starlette's multipart
      parser wants ``bytes`` chunks) are received whole into one buffer (:class:`WholeBody`; after the read that
      ends the head, the socket is read straight into it, see ``DirectReads``), without uvicorn's per-read copies,
      wake-ups of the app and flow-control pauses; larger ones (413 by their length) and chunked ones (counted
      while they stream) keep uvicorn's path. The buffer holds at most ``max_upload_bytes``, as the app's own copy of
      the body did before.

    Returns uvicorn's ``http`` factory (one ``DirectReads`` wrapping one ``GuardedHttpToolsProtocol`` per
    connection; the class is its ``protocol_class``).
    """
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    timeout_s, max_head, max_body = config.header_timeout_s, config.max_header_bytes, config.max_upload_bytes
    cap = open_connection_cap(config)
    refused = {"count": 0, "logged_at": 0.0}
    too_large = orjson.dumps({"detail": f"request head over the limit of {max_head} bytes"})
    reply_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(too_large), too_large))

    class WholeBodyCycle(RequestResponseCycle):
        """uvicorn's request cycle for a :class:`WholeBody` request (``whole``): ``receive`` gives the body as one
        message, without uvicorn's copy (``bytes(bytearray)`` per message), and behaves as uvicorn's otherwise
        (``100 Continue``; ``http.disconnect`` once the response is sent or the client has gone). A cycle becomes one
        by a class change after uvicorn made it, before its ASGI task first runs (no reference cycle, no copy of
        uvicorn's ``on_headers_complete``)."""

        whole: WholeBody

        async def receive(self) -> dict[str, Any]:  # type: ignore[override]
            if self.waiting_for_100_continue and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.waiting_for_100_continue = False
            whole = self.whole
            while True:
                if self.disconnected or self.response_complete:
                    return {"type": "http.disconnect"}
                if whole.done and not whole.delivered:
                    whole.delivered = True
                    return {"type": "http.request", "body": whole.view, "more_body": False}
                self.flow.resume_reading()
                await self.message_event.wait()
                self.message_event.clear()

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the guards and whole bodies above (fed by ``DirectReads``)."""

        def connection_made(self, transport) -> None:  # type: ignore[override]
            self._refused = len(self.connections) >= cap
            if self._refused:  # close at once: the descriptor is free again before the next accept
                transport.close()
                refused["count"] += 1
                now = time.monotonic()
                if now - refused["logged_at"] >= 10.0:
                    self.logger.warning("open-connection cap %d reached: new connections are closed at accept "
                                        "(%d since the previous such line; at most one line per 10 s)",
                                        cap, refused["count"])
                    refused["count"], refused["logged_at"] = 0, now
                return
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            self._in_head = False  # between a request's first byte and the end of its head
            self._between = True  # no request begun since the last one ended (or since connecting)
            self._begun = 0  # requests begun on this connection
            self._head_size = 0  # the current head's bytes as parsed
            self._head_reads = 0  # bytes of the reads that held nothing but the current, incomplete head
            self._whole: WholeBody | None = None  # the current request's body buffer, if it has one
            self._watch_head()

        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            in_head, between, begun = self._in_head, self._between, self._begun
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # no WebSocket routes (uvicorn_options: ws "none"): as uvicorn does
                if self._should_upgrade():
                    return self.handle_websocket_upgrade()
                self._unsupported_upgrade_warning()
            except httptools.HttpParserError as exc:
                if isinstance(exc.__context__, _HeadTooLarge):
                    return self._send_431()
                self.logger.warning("Invalid HTTP request received.")
                return self.send_400_response("Invalid HTTP request received.")
            if self._in_head and (in_head or between) and self._begun - begun == (0 if in_head else 1):
                self._head_reads += len(data)  # the whole read belongs to the head still being received
                if self._head_reads > max_head:
                    return self._send_431()
            self._watch_head()

        def _send_431(self) -> None:
            self.transport.write(reply_431)
            self.transport.close()

        def body_buffer(self) -> memoryview | None:
            """Where the next read goes: the rest of the current request's :class:`WholeBody` (the parser has seen
            its head and the start of its body; the socket's bytes up to its end are that body's), or ``None`` (the
            shared read buffer, then the parser)."""
            whole = self._whole
            return None if whole is None else whole.view[whole.filled:]

        def body_received(self, size: int) -> None:
            """``size`` more bytes of the current :class:`WholeBody` were read into :meth:`body_buffer`. Once the body
            is complete a new parser takes the next request (the old one is still in the body it never saw)."""
            self._unset_keepalive_if_required()
            whole = self._whole
            whole.filled += size
            if whole.filled == len(whole.view):
                self.parser = httptools.HttpRequestParser(self)
                with contextlib.suppress(AttributeError):  # httptools < 0.6.3 has no leniencies (as uvicorn)
                    self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
                self.on_message_complete()
            self._watch_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._between, self._begun = True, False, self._begun + 1
            self._head_size = self._head_reads = 0
            self._whole = None

        def _count_head(self, size: int) -> None:
            self._head_size += size
            if self._head_size > max_head:
                raise _HeadTooLarge

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._count_head(len(url))

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self._count_head(len(name) + len(value) + 4)  # "name: value\r\n", less optional whitespace

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._count_head(len(self.parser.get_method()) + 13)  # "M T HTTP/1.1\r\n" and the blank line
            super().on_headers_complete()
            if self.cycle is None or self.parser.should_upgrade():
                return
            length = content_type = None
            aligned = b"0"
            for name, value in self.headers:
                if name == b"content-length":
                    length = value
                elif name == b"content-type":
                    content_type = value
                elif name == b"inference-header-content-length":
                    aligned = value
            if length is None or not length.isdigit() or not 0 < int(length) <= max_body \
                    or (content_type is not None and content_type.lower().startswith(FORM_TYPES)):
                return
            aligned_at = int(aligned) if aligned.isdigit() and len(aligned) < 12 else 0
            self._whole = self.cycle.whole = WholeBody(int(length), aligned_at)
            self.cycle.__class__ = WholeBodyCycle

        def on_body(self, body: bytes) -> None:
            if self._whole is None:
                return super().on_body(body)
            if not self.cycle.response_complete:  # after an early response the rest is dropped, as uvicorn does
                self._whole.add(body)

        def on_message_complete(self) -> None:
            self._between = True
            whole, self._whole = self._whole, None
            if whole is None:
                return super().on_message_complete()
            whole.done = True
            if not self.cycle.response_complete:
                self.cycle.more_body = False
                self.cycle.message_event.set()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._whole = None
            super().connection_lost(exc)

        def _waiting_for_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _watch_head(self) -> None:
            if self._waiting_for_head() and self.timeout_keep_alive_task is None:
                if self._head_timer is None and not self.transport.is_closing():
                    self._head_timer = self.loop.call_later(timeout_s, self._head_timeout)
            elif self._head_timer is not None:  # a request is in progress, or the keep-alive timer runs instead
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._waiting_for_head() and not self.transport.is_closing():
                self.logger.info("closing a connection whose request head took over %g s", timeout_s)
                self.transport.close()

    scratch = memoryview(bytearray(READ_BYTES))  # one for all connections: each read is parsed before the next

    class DirectReads(asyncio.BufferedProtocol):
        """The transport's protocol: reads go into :meth:`GuardedHttpToolsProtocol.body_buffer` (a body straight into
        its own buffer: no ``bytes`` per read, no copy by the parser, none into the buffer) or else into the shared
        read buffer, which is handed to the HTTP protocol as ``data_received``; the rest is passed on. (uvloop uses
        ``recv_into`` only for a protocol that is not an ``asyncio.Protocol``, hence a wrapper, not a subclass.)"""

        __slots__ = ("http", "target")

        def __init__(self, http: GuardedHttpToolsProtocol) -> None:
            self.http, self.target = http, None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            self.http.connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            self.http.connection_lost(exc)

        def eof_received(self) -> bool | None:
            return self.http.eof_received()

        def pause_writing(self) -> None:
            self.http.pause_writing()

        def resume_writing(self) -> None:
            self.http.resume_writing()

        def get_buffer(self, sizehint: int) -> memoryview:
            self.target = self.http.body_buffer()
            return scratch if self.target is None else self.target

        def buffer_updated(self, nbytes: int) -> None:
            if self.target is None:
                self.http.data_received(scratch[:nbytes])  # type: ignore[arg-type]
            else:
                self.target = None
                self.http.body_received(nbytes)

    def protocol(**kwargs) -> DirectReads:
        """uvicorn's ``http`` factory: one protocol per connection."""
        return DirectReads(GuardedHttpToolsProtocol(**kwargs))

    protocol.protocol_class = GuardedHttpToolsProtocol  # type: ignore[attr-defined]
    return protocol


def _cancellable(frames: Iterable[Frame], cancel: threading.Event, metrics: Metrics) -> Iterator[Frame]:
    """``frames`` until ``cancel`` is set (checked before each frame is decoded)."""
    iterator = iter(frames)
    while not cancel.is_set():
        try:
            frame = next(iterator)
        except StopIteration:
            return
        metrics.frames_decoded.inc()
        yield frame
    raise _Cancelled


class _Cancelled(ConstclZooError):
    """A decoding job whose request timed out or went away (nobody waits for its result)."""


UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": {
        "type": "string", "format": "binary",
        "description": "a video file, or a .npy array of preprocessed clips [B, 3, T, crop, crop]"}}}},
    "application/x-npy": {"schema": {"type": "string", "format": "binary",
                                     "description": "a .npy array of preprocessed clips as the whole body"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description":
        "raw clip bytes (C order) with headers X-Clips-Shape (e.g. 2,3,8,112,112) and X-Clips-Dtype (float32 by "
        "default); without X-Clips-Shape, a .npy array or a video file"}}}}}
V2_DATATYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64"}
SHAPE_HEADER = re.compile(r"\s*\d{1,18}(\s*,\s*\d{1,18})*\s*")


def _v2_tensor(arg, datatype: str) -> dict[str, Any]:
    """KServe v2 metadata of an ORT input/output: name, datatype, shape (``-1`` for dynamic axes)."""
    return {"name": arg.name, "datatype": datatype, "shape": [d if isinstance(d, int) else -1 for d in arg.shape]}


def create_app(embedder: OnnxEmbedder, config: ServeConfig | None = None, model_name: str | None = None) -> FastAPI:
    """The FastAPI app around ``embedder`` (an :class:`~export.runtime.OnnxEmbedder` without ROI input).

    ``model_name``: the model's name in the KServe v2 routes (default: the ONNX file's stem, as in the Triton
    repository ``python -m export triton`` writes)."""
    config = config or ServeConfig()
    if embedder.with_rois:
        raise InvalidArgumentError(
            f"{embedder.path} takes boxes (exported --with-rois); serve a global or region export")
    model_name = model_name or Path(embedder.path).stem
    metrics = Metrics()
    batcher = MicroBatcher(embedder.run, config.max_batch, config.max_wait_ms, metrics)
    decode_pool = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="constcl-decode")
    state = {"ready": False}
    session_input, session_output = embedder.session.get_inputs()[0], embedder.session.get_outputs()[0]
    output_datatype = V2_DATATYPES.get(session_output.type, session_output.type)
    v2_inputs = [{**_v2_tensor(session_input, "FP32"), "shape": [-1, *embedder.clip_shape]}]  # check_clips: float32
    v2_outputs = [_v2_tensor(session_output, output_datatype)]
    value_range = list(embedder.config.preprocess.value_range)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        metrics.watch_thread("event_loop", threading.get_ident())
        metrics.watch_thread("model", await batcher.call(threading.get_ident))
        warm = np.zeros((1, *embedder.clip_shape), np.float32)
        await batcher.call(embedder.run, warm)  # first run allocates; /readyz waits for it
        state["ready"] = True
        yield
        await batcher.stop()
        decode_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="ConST-CL embedding service", version="1", lifespan=lifespan,
                  description=f"{embedder.config.arch} ({embedder.branch} branch) on {embedder.provider}")
    app.state.metrics, app.state.batcher, app.state.config = metrics, batcher, config

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v2"):
            return error_response(request.url.path, exc.status_code, str(exc.detail), exc.headers)
        return await http_exception_handler(request, exc)

    def ready() -> bool:
        return state["ready"] and batcher.alive

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        alive = batcher.alive
        return JSONResponse({"status": "ok" if alive else "batcher stopped"}, status_code=200 if alive else 503)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return JSONResponse({"ready": ready(), "provider": embedder.provider, "ort_spinning": embedder.spinning},
                            status_code=200 if ready() else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def within_limit(work: Awaitable[Response]) -> Response:
        try:
            return await bounded(work, config.request_timeout_s)
        except TimeoutError:
            raise HTTPException(408, f"request took longer than the limit of {config.request_timeout_s:g} s") \
                from None

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, openapi_extra=UPLOAD_BODY,
              responses={400: {"description": "unreadable upload"},
                         408: {"description": "over the request time limit"},
                         413: {"description": "upload or clip count over the limit"},
                         422: {"description": "wrong shape, dtype or an unusable video"}})
    async def embeddings(request: Request) -> Response:
        """Embed a video (every sliding window) or preprocessed clips: a multipart field ``file``, a ``.npy``
        body, or raw float bytes with ``X-Clips-Shape`` / ``X-Clips-Dtype`` headers."""
        return await within_limit(_embed_upload(request))

    async def _read_upload(request: Request) -> tuple[str, bytes | memoryview]:
        """``(name, bytes)`` of the upload: the multipart (or form) field ``file``, or else the whole body."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return "upload", await whole_body(request)
        form = await request.form()
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "the form has no file field 'file' (a video or a .npy array)")
            return upload.filename or "upload", await upload.read()
        finally:
            await form.close()

    async def _embed_upload(request: Request) -> Response:
        with metrics.timed("read"):
            name, data = await _read_upload(request)
        if not data:
            raise HTTPException(400, f"{name}: the upload is empty")
        windows = None
        if "x-clips-shape" in request.headers:
            with metrics.timed("validate", cpu=True):
                clips = _raw_clips(data, request.headers["x-clips-shape"],
                                   request.headers.get("x-clips-dtype", "float32"), name)
        elif data[:len(NPY_MAGIC)] == NPY_MAGIC or name.lower().endswith(".npy"):
            with metrics.timed("validate", cpu=True):
                clips = _read_npy(data, name)
        else:
            cancel = threading.Event()
            metrics.decode_jobs.inc()
            try:
                with metrics.timed("decode"):
                    clips, windows = await asyncio.get_running_loop().run_in_executor(
                        decode_pool, _decode_video, data, name, cancel)
            finally:
                cancel.set()  # a timed-out or cancelled request: its decoding stops before the next frame
        out = await _embed(clips, name)
        with metrics.timed("encode", cpu=True):  # orjson writes the float32 rows directly (no .tolist())
            body = orjson.dumps({"model": embedder.config.arch, "branch": embedder.branch, "shape": out.shape,
                                 "embeddings": out, "windows": windows}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")

    async def _embed(clips: np.ndarray, name: str) -> np.ndarray:
        """The model's outputs for checked clips, through the micro-batcher; 422 for non-finite outputs."""
        try:
            out = await batcher.submit(clips)
        except ValueError as exc:  # shape/dtype problems found by the embedder
            raise HTTPException(422, f"{name}: {exc}") from None
        if not np.isfinite(out).all():  # JSON has no inf/nan; such output means inputs far outside the range
            raise HTTPException(422, f"{name}: the model's output is not finite for these clips; clips must be "
                                     f"preprocessed to {value_range}")
        metrics.clips.inc(len(clips))
        return out

    def _check_header(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
        """Shape, clip count and dtype of clips about to be read, before any array exists."""
        clip_shape = tuple(embedder.clip_shape)
        if len(shape) not in (4, 5) or tuple(shape[-4:]) != clip_shape:
            raise HTTPException(422, f"{name}: clips must have shape [B, {', '.join(map(str, clip_shape))}] "
                                     f"(preprocessed), got {tuple(shape)}")
        count = shape[0] if len(shape) == 5 else 1
        if count == 0:
            raise HTTPException(422, f"{name}: no clips (the shape {tuple(shape)} has a batch of 0)")
        if count > config.max_clips:
            raise HTTPException(413, f"{name}: {count} clips; the limit is {config.max_clips} per request")
        if dtype.kind != "f":
            raise HTTPException(422, f"{name}: clips must be float (preprocessed to {value_range}), got {dtype}")

    def _clips(data: bytes | memoryview, offset: int, shape: tuple[int, ...], dtype: np.dtype, fortran: bool,
               name: str, problem: str, holder: str) -> np.ndarray:
        """Checked float32 clips ``[B, 3, T, crop, crop]`` viewing ``data[offset:]`` (no copy for C-ordered
        float32): the byte count must match the (already checked) shape; values must be finite. ``problem`` and
        ``holder`` word the byte-count error."""
        size = math.prod(shape) * dtype.itemsize
        if len(data) - offset != size:
            raise HTTPException(400, f"{name}: {problem} (the shape {tuple(shape)} needs {size} bytes of data, "
                                     f"{holder} holds {len(data) - offset})")
        array = np.frombuffer(data, dtype, math.prod(shape), offset)
        array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
        return _checked(array[None] if len(shape) == 4 else array, name)

    def _checked(array: np.ndarray, name: str) -> np.ndarray:
        try:
            clips = embedder.check_clips(array)
        except ValueError as exc:
            raise HTTPException(422, f"{name}: {exc}") from None
        if not np.isfinite(clips).all():
            raise HTTPException(422, f"{name}: the clips contain NaN or infinite values (or values too large "
                                     f"for float32)")
        return clips

    def _read_npy(data: bytes | memoryview, name: str) -> np.ndarray:
        """Clips from ``.npy`` bytes. The header is parsed and checked (shape, dtype, clip count, byte count)
        before any array exists: ``np.load`` would allocate whatever shape the header claims. Only the header's
        bytes are copied (numpy reads headers of at most 10000 bytes)."""
        try:
            shape, fortran, dtype, offset = npy_header(npy_header_bytes(data))
        except (ValueError, OSError, EOFError, TypeError, SyntaxError) as exc:
            raise HTTPException(400, f"{name}: not a readable .npy array ({exc})") from None
        if dtype.hasobject:
            raise HTTPException(400, f"{name}: not a readable .npy array (object arrays need pickle, which this "
                                     f"service never loads)")
        _check_header(shape, dtype, name)
        return _clips(data, offset, shape, dtype, fortran, name, "not a readable .npy array", "the file")

    def _raw_clips(data: bytes | memoryview, shape_header: str, dtype_header: str, name: str) -> np.ndarray:
        """Clips from raw C-ordered bytes described by the ``X-Clips-Shape`` and ``X-Clips-Dtype`` headers."""
        if not SHAPE_HEADER.fullmatch(shape_header):
            raise HTTPException(400, f"X-Clips-Shape must be comma-separated sizes such as "
                                     f"1,{','.join(map(str, embedder.clip_shape))}; got {shape_header!r}")
        try:
            dtype = np.dtype(dtype_header.strip())
        except TypeError:
            raise HTTPException(400, f"X-Clips-Dtype: {dtype_header!r} is not a dtype (float32, float16, "
                                     f"float64)") from None
        shape = tuple(int(size) for size in shape_header.split(","))
        _check_header(shape, dtype, name)
        return _clips(data, 0, shape, dtype, False, name, "the body does not match X-Clips-Shape and "
                      "X-Clips-Dtype", "the body")

    def _decode_video(data: bytes | memoryview, name: str, cancel: threading.Event) -> tuple[np.ndarray, list[dict]]:
        try:
            return _decode_frames(data, name, cancel)
        finally:
            metrics.decode_jobs.dec()

    def _decode_frames(data: bytes | memoryview, name: str, cancel: threading.Event) -> tuple[np.ndarray, list[dict]]:
        if cancel.is_set():  # timed out while queued for a worker
            raise _Cancelled
        suffix = Path(name).suffix if len(Path(name).suffix) <= 8 else ""
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            spec = WindowSpec.from_preprocess(embedder.preprocess)
            frames, _ = frames_of(tmp.name)
            clips, windows = [], []
            try:
                for window in iter_windows(_cancellable(frames, cancel, metrics), embedder.preprocess, spec, name):
                    if len(clips) == config.max_clips:
                        raise HTTPException(413, f"{name}: more than {config.max_clips} windows; the limit is "
                                                 f"{config.max_clips} clips per request (send a shorter video)")
                    clips.append(window.clip.numpy())
                    windows.append({"start_s": window.start_s, "end_s": window.end_s,
                                    "start_frame": window.start_frame, "end_frame": window.end_frame})
            except (HTTPException, _Cancelled):
                raise
            except (VideoError, FileNotFoundError) as exc:
                raise HTTPException(422, str(exc).replace(tmp.name, name)) from None
            except Exception as exc:  # anything else a decoder throws is still about this upload
                raise HTTPException(422, f"{name}: cannot decode the video ({type(exc).__name__}: "
                                         f"{str(exc).replace(tmp.name, name)})") from None
        return np.stack(clips), windows

    # --- KServe v2 inference protocol (what Triton speaks), HTTP/REST with the binary tensor data extension ----

    def _v2_model(name: str, version: str | None) -> None:
        if name != model_name:
            raise HTTPException(404, f"unknown model {name!r}; this server serves {model_name!r}")
        if version not in (None, "1"):
            raise HTTPException(404, f"model {name!r} has no version {version!r}; it has version '1'")

    @app.get("/v2")
    async def v2_server_metadata() -> JSONResponse:
        from constcl_zoo import __version__

        return JSONResponse({"name": "constcl-zoo", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_configuration"]})

    @app.get("/v2/health/live")
    async def v2_live() -> Response:
        return Response(status_code=200 if batcher.alive else 503)

    @app.get("/v2/health/ready")
    async def v2_ready() -> Response:
        return Response(status_code=200 if ready() else 503)

    async def v2_model_metadata(name: str, version: str | None = None) -> JSONResponse:
        _v2_model(name, version)
        return JSONResponse({"name": model_name, "versions": ["1"], "platform": "onnxruntime_onnx",
                             "inputs": v2_inputs, "outputs": v2_outputs})

    async def v2_model_ready(name: str, version: str | None = None) -> Response:
        _v2_model(name, version)
        return Response(status_code=200 if ready() else 503)

    async def v2_model_config(name: str, version: str | None = None) -> JSONResponse:
        _v2_model(name, version)
        def dims(tensor: dict[str, Any]) -> dict[str, Any]:
            return {"name": tensor["name"], "data_type": f"TYPE_{tensor['datatype']}", "dims": tensor["shape"][1:]}

        return JSONResponse({"name": model_name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
                             "max_batch_size": config.max_clips, "input": [dims(t) for t in v2_inputs],
                             "output": [dims(t) for t in v2_outputs]})

    async def v2_infer(request: Request, name: str, version: str | None = None) -> Response:
        _v2_model(name, version)
        try:
            return await within_limit(_v2_infer(request))
        except HTTPException as exc:
            if exc.status_code == 422:  # the protocol answers bad inputs with 400
                raise HTTPException(400, exc.detail) from None
            raise

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, v2_model_metadata, methods=["GET"], tags=["KServe v2"])
        app.add_api_route(prefix + "/ready", v2_model_ready, methods=["GET"], tags=["KServe v2"])
        app.add_api_route(prefix + "/config", v2_model_config, methods=["GET"], tags=["KServe v2"])
        app.add_api_route(prefix + "/infer", v2_infer, methods=["POST"], tags=["KServe v2"])

    async def _v2_infer(request: Request) -> Response:
        with metrics.timed("read"):
            body = await whole_body(request)
        with metrics.timed("validate", cpu=True):
            clips, binary, request_id = _v2_request(body, request.headers)
        out = await _embed(clips, f"input {session_input.name!r}")
        with metrics.timed("encode", cpu=True):
            output: dict[str, Any] = {"name": session_output.name, "datatype": output_datatype,
                                      "shape": out.shape}
            reply: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": [output]}
            if request_id is not None:
                reply["id"] = request_id
            if not binary:
                output["data"] = out.ravel()
                return Response(orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
            output["parameters"] = {"binary_data_size": out.nbytes}
            head = orjson.dumps(reply)
            return Response(head + out.tobytes(), media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(head))})

    def _v2_request(body: bytes | memoryview, headers) -> tuple[np.ndarray, bool, Any]:
        """``(clips, binary reply, request id)`` of a v2 ``infer`` body: a JSON header, then (with the header
        ``Inference-Header-Content-Length``) the binary tensor data."""
        if headers.get("content-encoding", "identity").lower() != "identity":
            raise HTTPException(400, f"Content-Encoding {headers['content-encoding']!r} is not supported; send the "
                                     f"request uncompressed")
        length = headers.get("inference-header-content-length")
        if length is not None and not (length.isdigit() and int(length) <= len(body)):
            raise HTTPException(400, f"Inference-Header-Content-Length {length!r} is not a byte count within the "
                                     f"body of {len(body)} bytes")
        json_size = len(body) if length is None else int(length)
        view = memoryview(body)
        try:
            request = orjson.loads(view[:json_size])
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"the request's JSON is not readable ({exc})") from None
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict) \
                or inputs[0].get("name") != session_input.name:
            names = [i.get("name") for i in inputs if isinstance(i, dict)] if isinstance(inputs, list) else inputs
            raise HTTPException(400, f"the request must have 'inputs' with one tensor named "
                                     f"{session_input.name!r}; got {names!r}")
        tensor, name = inputs[0], f"input {session_input.name!r}"
        if tensor.get("datatype") != "FP32":
            raise HTTPException(400, f"{name}: datatype must be FP32, got {tensor.get('datatype')!r}")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape):
            raise HTTPException(400, f"{name}: 'shape' must be a list of sizes, got {shape!r}")
        _check_header(tuple(shape), np.dtype(np.float32), name)
        binary_size = _parameters(tensor, name).get("binary_data_size")
        if binary_size is not None:
            if type(binary_size) is not int or json_size + binary_size != len(body):
                raise HTTPException(400, f"{name}: binary_data_size {binary_size!r} does not match the "
                                         f"{len(body) - json_size} bytes after the JSON header")
            clips = _clips(view, json_size, tuple(shape), np.dtype("<f4"), False, name,
                           "the binary data does not match the shape", "binary_data_size")
        elif "data" in tensor and json_size == len(body):
            try:
                array = np.asarray(tensor["data"], dtype=np.float32)
            except (ValueError, TypeError) as exc:
                raise HTTPException(400, f"{name}: 'data' must be numbers ({exc})") from None
            if array.size != math.prod(shape):
                raise HTTPException(400, f"{name}: 'data' holds {array.size} values; shape {shape} needs "
                                         f"{math.prod(shape)}")
            clips = _checked(array.reshape(shape) if len(shape) == 5 else array.reshape(1, *shape), name)
        else:
            raise HTTPException(400, f"{name}: give either 'data' or parameters.binary_data_size with the "
                                     f"tensor's bytes after the JSON header (and nothing else after it)")
        binary = bool(_parameters(request, "the request").get("binary_data_output", False))
        outputs = request.get("outputs") or []
        if not isinstance(outputs, list):
            raise HTTPException(400, f"'outputs' must be a list of requested outputs, got {outputs!r}")
        for wanted in outputs:
            if not isinstance(wanted, dict) or wanted.get("name") != session_output.name:
                raise HTTPException(400, f"unknown output {wanted!r}; the model's output is "
                                         f"{session_output.name!r}")
            binary = bool(_parameters(wanted, f"output {session_output.name!r}").get("binary_data", binary))
        return clips, binary, request.get("id")

    def _parameters(obj: dict[str, Any], name: str) -> dict[str, Any]:
        """The ``parameters`` object of a request, input or output (``{}`` when absent)."""
        parameters = obj.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise HTTPException(400, f"{name}: 'parameters' must be an object, got {parameters!r}")
        return parameters

    # added last = outermost: Observe sees every response and exception, then the size, then the time limit, then
    # the embedding routes are served directly (FastLane) and everything else by FastAPI
    app.add_middleware(FastLane, embeddings=embeddings, infer=v2_infer)
    app.add_middleware(BodyTimeout, timeout_s=config.body_timeout_s)
    app.add_middleware(UploadLimit, limit=config.max_upload_bytes)
    app.add_middleware(Observe, metrics=metrics)
    return app


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_memory(trim_bytes: int = 256 * 2**20, mmap_bytes: int = 32 * 2**20) -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the kernel (``mallopt``): blocks
    under ``mmap_bytes`` come from the heap, and the heap is trimmed only above ``trim_bytes`` free. Each request
    body (1.2 MB for a small-model clip) gets a buffer of its own (:class:`WholeBody`; copied a few times more on
    uvicorn's and Starlette's multipart path); with glibc's defaults every such block maps fresh pages and faults
    them in, which measured 1.1 ms of CPU per request against 0.27 ms with this (benchmarks/serve_load.py, the h11
    service). Returns False where it does not apply (not glibc)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, trim_bytes))


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
          threads: int | None = None, providers: list[str] | None = None, model_name: str | None = None,
          spinning: bool = False) -> None:
    """Load ``model`` (an exported ONNX file) and serve it with uvicorn until interrupted.

    ``spinning``: ORT's idle intra-op threads spin between runs (its default). Off by default here: the event loop
    shares the cores with ORT, and spinning threads take its CPU while the next batch is parsed (measured:
    ``benchmarks/serve_load.py``)."""
    import uvicorn

    if not keep_freed_memory():
        log.info("mallopt is not available: freed request buffers go back to the kernel (slower large bodies)")
    embedder = OnnxEmbedder(model, providers=providers, threads=threads, spinning=spinning)
    config = config or ServeConfig()
    app = create_app(embedder, config, model_name=model_name)
    gc.collect()
    gc.freeze()  # the ~200k objects of torch, ONNX and ORT are never traversed again by the cyclic collector
    # Starlette spools multipart files over 1 MB to disk, each chunk written and read back on a worker thread; the
    # upload is read into memory whole anyway (bounded by max_upload_bytes), so keep it there from the start.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, config.max_upload_bytes)
    uvicorn.run(app, host=host, port=port, log_level="info", **uvicorn_options(config))


def uvicorn_options(config: ServeConfig) -> dict:
    """The uvicorn settings that carry :class:`ServeConfig`'s connection limits (:func:`guarded_protocol`: httptools
    with a head deadline, 431 and whole bodies). The event loop is asyncio's, whatever is installed: uvloop (uvicorn's
    choice when present; the protocol works on it too) measured no less CPU per request here (0.94-1.02 ms against
    0.95-1.03 ms with the model stubbed out), and one loop is the one tested. No WebSocket routes: no upgrades."""
    return {"http": guarded_protocol(config), "loop": "asyncio", "ws": "none",
            "limit_concurrency": config.max_connections, "timeout_keep_alive": config.keep_alive_s,
            "timeout_graceful_shutdown": config.graceful_shutdown_s}
