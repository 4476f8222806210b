"""The embedding service: ``python -m export serve model.onnx --host 127.0.0.1 --port 8000``.

* ``POST /v1/embeddings`` — a video (every sliding window is embedded) or preprocessed float clips ``[3, T, crop,
  crop]`` / ``[B, 3, T, crop, crop]``, sent as the multipart field ``file`` (a video or a ``.npy``), or as the whole
  body: a ``.npy`` file, raw C-ordered bytes with headers ``X-Clips-Shape: B,3,T,crop,crop`` and ``X-Clips-Dtype``
  (default ``float32``), or a video. JSON out: ``{"model", "branch", "shape", "embeddings", "windows"}`` (``windows``
  gives each video window's start/end seconds and frames; ``null`` for clips).
* The KServe v2 inference protocol (what Triton speaks; ``tritonclient.http`` works unchanged): ``GET /v2``,
  ``/v2/health/{live,ready}``, ``/v2/models/NAME[/versions/1]`` (metadata), ``.../ready``, ``.../config`` and ``POST
  .../infer`` with JSON or binary tensor data (``Inference-Header-Content-Length``); errors are ``{"error": ...}``
  (404 unknown model or version, 400 a bad request, 408/413 the limits below). NAME is the ONNX file's stem unless
  ``--model-name`` says otherwise.
* Dynamic micro-batching: clips of concurrent requests are queued and run together, at most ``max_batch`` at a time,
  waiting at most ``max_wait_ms`` for a batch to fill.
* ``GET /healthz`` (the process and its batcher are alive), ``GET /readyz`` (the model has run once), ``GET /metrics``
  (Prometheus: requests by status, latency histogram, batch sizes, clips; where a request's time goes:
  ``constcl_stage_seconds`` / ``constcl_stage_cpu_seconds`` by stage and ``constcl_thread_cpu_seconds`` of the
  event-loop and model threads), ``/docs`` and ``/openapi.json``.
* The protocol layer (:func:`~export.serve.protocol.guarded_protocol`, the ``http`` of
  :func:`~export.serve.server.uvicorn_options`): uvicorn's httptools protocol (llhttp, in C; uvicorn's pure-Python h11
  cost ~0.85 ms of CPU per 1.2 MB request) on asyncio's event loop, subclassed for the limits below and for whole
  bodies: a request with a ``Content-Length`` of at most ``max_upload_bytes`` (not a form) gets one buffer of that
  size when its head is parsed, the socket's reads go straight into it (``recv_into`` through
  :class:`asyncio.BufferedProtocol`: no ``bytes`` per read, no copy by the parser, none by uvicorn or Starlette), and
  the app receives it as one message whose body is a ``memoryview`` (:class:`~export.serve.protocol.WholeBody`; a
  KServe v2 tensor lands 64-byte aligned). Forms and chunked bodies keep uvicorn's path. The embedding routes go from
  the middleware straight to their handlers (:class:`~export.serve.middleware.FastLane`: no router, no dependency
  solving), and the clips are a ``np.frombuffer`` view of the body up to the batch.
* Cost per request (``benchmarks/serve_load.py``): besides the above, replies are written by orjson, no thread hop but
  the one model run per batch, ORT's idle threads do not spin (``--ort-spinning`` to let them), stage metrics are
  bound once, a ``.npy`` header is parsed once per distinct header, and :func:`~export.serve.server.serve` keeps freed
  memory in the process (:func:`~export.serve.server.keep_freed_memory`) and freezes the startup objects out of the
  garbage collector. What is left on the event loop for a one-clip request of 1.2 MB: the kernel's copy into the
  buffer, the finiteness check, the copy into the batch (when it holds clips of several requests), and the ASGI layers
  (Starlette, our middleware, uvicorn's response and access log).
* Limits: upload size (413), clips per request (413), request time (408; the request's decoding stops at its next
  frame). Every bad request gets a 4xx JSON ``{"detail": ...}`` (``{"error": ...}`` under ``/v2``); the worker never
  dies on input. An unexpected error gets a JSON 500, is counted in ``constcl_internal_errors_total`` and leaves the
  connection open.
* Connections (see :class:`~export.serve.config.ServeConfig`): uvicorn's own ``limit_concurrency`` (503 beyond it),
  ``timeout_keep_alive`` and ``timeout_graceful_shutdown``; uvicorn has no time limit on receiving a request, no cap
  on open sockets and no 431 (llhttp has no head limit at all), so the protocol closes a connection whose request head
  is not complete ``header_timeout_s`` after its first byte (or after connecting), answers 431 to a request head over
  ``max_header_bytes`` (complete or not: counted in the parser's callbacks, and by the reads while the head is
  incomplete), and closes new connections at once beyond :func:`~export.serve.config.open_connection_cap` (below the
  process's file-descriptor limit, so ``accept`` never fails with EMFILE; one log line per 10 s says how many); the
  :class:`~export.serve.middleware.BodyTimeout` middleware answers 408 and closes when the body takes longer than
  ``body_timeout_s``.

The package, one module per concern (each imports only those listed before it):

* :mod:`~export.serve.config`: :class:`~export.serve.config.ServeConfig` (batching and limits), the open-socket cap;
* :mod:`~export.serve.common`: a deadline on an ``await``, a request's whole body, each protocol's JSON error;
* :mod:`~export.serve.metrics`: the Prometheus metrics (stages, threads);
* :mod:`~export.serve.batcher`: :class:`~export.serve.batcher.MicroBatcher`, the model's own thread;
* :mod:`~export.serve.middleware`: the ASGI middleware (metrics and 500s, 413, body deadline, the fast lane);
* :mod:`~export.serve.protocol`: the httptools protocol with its guards and whole bodies;
* :mod:`~export.serve.inputs`: request bodies and videos -> checked clips;
* :mod:`~export.serve.service`: the model behind the routes (batcher, readers, readiness, time limit);
* :mod:`~export.serve.kserve`: the KServe v2 routes;
* :mod:`~export.serve.app`: :func:`~export.serve.app.create_app`, the ``/v1`` and health routes;
* :mod:`~export.serve.server`: :func:`~export.serve.server.serve` under uvicorn.
"""

from __future__ import annotations

from .app import EmbeddingsResponse, Window, create_app
from .batcher import MicroBatcher
from .common import bounded, counted_path, error_response, whole_body
from .config import FD_RESERVE, ServeConfig, open_connection_cap
from .inputs import NPY_MAGIC, ClipReader, VideoDecoder, npy_header, npy_header_bytes
from .kserve import KServeV2
from .metrics import STAGES, Metrics
from .middleware import BodyTimeout, FastLane, Observe, UploadLimit
from .protocol import ALIGN, GuardedHttpToolsProtocol, WholeBody, guarded_protocol
from .server import keep_freed_memory, serve, uvicorn_options
from .service import EmbeddingService

__all__ = ["ALIGN", "FD_RESERVE", "NPY_MAGIC", "STAGES", "BodyTimeout", "ClipReader", "EmbeddingService",
           "EmbeddingsResponse", "FastLane", "GuardedHttpToolsProtocol", "KServeV2", "Metrics", "MicroBatcher",
           "Observe", "ServeConfig", "UploadLimit", "VideoDecoder", "WholeBody", "Window", "bounded", "counted_path",
           "create_app", "error_response", "guarded_protocol", "keep_freed_memory", "npy_header", "npy_header_bytes",
           "open_connection_cap", "serve", "uvicorn_options", "whole_body"]
