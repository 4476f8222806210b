"""The FastAPI app: :func:`create_app` wires the service (:mod:`export.serve.service`), its routes (health,
readiness, metrics and ``POST /v1/embeddings`` here; the KServe v2 ones in :mod:`export.serve.kserve`) and the
middleware (:mod:`export.serve.middleware`)."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from constcl_zoo.errors import InvalidArgumentError

from ..runtime import OnnxEmbedder
from .common import error_response, whole_body
from .config import ServeConfig
from .inputs import NPY_MAGIC
from .kserve import KServeV2
from .middleware import BodyTimeout, FastLane, Observe, UploadLimit
from .service import EmbeddingService


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


UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": {
        "type": "string", "format": "binary",
        "description": "a video file, or a .npy array of preprocessed clips [B, 3, T, crop, crop]"}}}},
    "application/x-npy": {"schema": {"type": "string", "format": "binary",
                                     "description": "a .npy array of preprocessed clips as the whole body"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description":
        "raw clip bytes (C order) with headers X-Clips-Shape (e.g. 2,3,8,112,112) and X-Clips-Dtype (float32 by "
        "default); without X-Clips-Shape, a .npy array or a video file"}}}}}
EMBEDDING_ERRORS = {400: {"description": "unreadable upload"}, 408: {"description": "over the request time limit"},
                    413: {"description": "upload or clip count over the limit"},
                    422: {"description": "wrong shape, dtype or an unusable video"}}


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """An ``HTTPException`` as JSON: ``{"error": ...}`` under ``/v2``, FastAPI's answer elsewhere."""
    if request.url.path.startswith("/v2"):
        return error_response(request.url.path, exc.status_code, str(exc.detail), exc.headers)
    return await http_exception_handler(request, exc)


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


class Routes:
    """The service's own routes: ``/healthz``, ``/readyz``, ``/metrics`` and ``POST /v1/embeddings``."""

    def __init__(self, service: EmbeddingService) -> None:
        self.service = service

    def add_to(self, app: FastAPI) -> None:
        """Register the routes on ``app``."""
        app.add_api_route("/healthz", self.healthz, methods=["GET"])
        app.add_api_route("/readyz", self.readyz, methods=["GET"])
        app.add_api_route("/metrics", self.prometheus, methods=["GET"], response_class=PlainTextResponse)
        app.add_api_route("/v1/embeddings", self.embeddings, methods=["POST"], response_model=EmbeddingsResponse,
                          openapi_extra=UPLOAD_BODY, responses=EMBEDDING_ERRORS)

    async def healthz(self) -> JSONResponse:
        alive = self.service.batcher.alive
        return JSONResponse({"status": "ok" if alive else "batcher stopped"}, status_code=200 if alive else 503)

    async def readyz(self) -> JSONResponse:
        ready, embedder = self.service.ready(), self.service.embedder
        return JSONResponse({"ready": ready, "provider": embedder.provider, "ort_spinning": embedder.spinning},
                            status_code=200 if ready else 503)

    async def prometheus(self) -> PlainTextResponse:
        return PlainTextResponse(generate_latest(self.service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def embeddings(self, request: Request) -> Response:
        """Embed a video (every sliding window) or preprocessed clips: a multipart field ``file``, a ``.npy``
        body, or raw float bytes with ``X-Clips-Shape`` / ``X-Clips-Dtype`` headers."""
        return await self.service.within_limit(self._embed_upload(request))

    async def _embed_upload(self, request: Request) -> Response:
        service = self.service
        metrics, reader, embedder = service.metrics, service.reader, service.embedder
        with metrics.timed("read"):
            name, data = await _read_upload(request)
        if not data:
            raise HTTPException(400, f"{name}: the upload is empty")
        windows = None
        if "x-clips-shape" in request.headers:
            with metrics.timed("validate", cpu=True):
                clips = reader.raw_clips(data, request.headers["x-clips-shape"],
                                         request.headers.get("x-clips-dtype", "float32"), name)
        elif data[:len(NPY_MAGIC)] == NPY_MAGIC or name.lower().endswith(".npy"):
            with metrics.timed("validate", cpu=True):
                clips = reader.read_npy(data, name)
        else:
            clips, windows = await service.decoder.decode(data, name)
        out = await service.embed(clips, name)
        with metrics.timed("encode", cpu=True):  # orjson writes the float32 rows directly (no .tolist())
            body = orjson.dumps({"model": embedder.config.arch, "branch": embedder.branch, "shape": out.shape,
                                 "embeddings": out, "windows": windows}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")


def create_app(embedder: OnnxEmbedder, config: ServeConfig | None = None, model_name: str | None = None) -> FastAPI:
    """The FastAPI app around ``embedder`` (an :class:`~export.runtime.OnnxEmbedder` without ROI input).

    ``model_name``: the model's name in the KServe v2 routes (default: the ONNX file's stem, as in the Triton
    repository ``python -m export triton`` writes)."""
    config = config or ServeConfig()
    if embedder.with_rois:
        raise InvalidArgumentError(
            f"{embedder.path} takes boxes (exported --with-rois); serve a global or region export")
    service = EmbeddingService(embedder, config)
    routes, v2 = Routes(service), KServeV2(service, model_name or Path(embedder.path).stem)
    app = FastAPI(title="ConST-CL embedding service", version="1", lifespan=service.lifespan,
                  description=f"{embedder.config.arch} ({embedder.branch} branch) on {embedder.provider}")
    app.state.metrics, app.state.batcher, app.state.config = service.metrics, service.batcher, config
    app.add_exception_handler(StarletteHTTPException, http_error)
    routes.add_to(app)
    v2.add_to(app)
    # added last = outermost: Observe sees every response and exception, then the size, then the time limit, then
    # the embedding routes are served directly (FastLane) and everything else by FastAPI
    app.add_middleware(FastLane, embeddings=routes.embeddings, infer=v2.v2_infer)
    app.add_middleware(BodyTimeout, timeout_s=config.body_timeout_s)
    app.add_middleware(UploadLimit, limit=config.max_upload_bytes)
    app.add_middleware(Observe, metrics=service.metrics)
    return app
