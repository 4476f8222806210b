"""The service's ASGI middleware, outermost first: :class:`Observe` (request metrics; an escaped exception becomes a
JSON 500), :class:`UploadLimit` (413), :class:`BodyTimeout` (408 for a body not received in time) and
:class:`FastLane` (the embedding routes straight to their handlers, past FastAPI's router)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .common import bounded, counted_path, error_response
from .metrics import Metrics

log = logging.getLogger(__name__)


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
