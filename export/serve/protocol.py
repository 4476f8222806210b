"""The service's HTTP layer: uvicorn's httptools protocol (llhttp, in C) with the limits uvicorn lacks and whole
bodies read straight into one buffer (:func:`guarded_protocol`, the ``http`` of
:func:`export.serve.server.uvicorn_options`).

uvicorn's pure-Python h11 cost ~0.85 ms of CPU per 1.2 MB request; this protocol runs on asyncio's event loop,
subclassed for the limits below and for whole bodies: a request with a ``Content-Length`` of at most
``max_upload_bytes`` (not a form) gets one buffer of that size when its head is parsed, the socket's reads go
straight into it (``recv_into`` through :class:`asyncio.BufferedProtocol`: no ``bytes`` per read, no copy by the
parser, none by uvicorn or Starlette), and the app receives it as one message whose body is a ``memoryview``
(:class:`WholeBody`; a KServe v2 tensor lands 64-byte aligned). Forms and chunked bodies keep uvicorn's path.

uvicorn has no time limit on receiving a request head, no cap on open sockets and no 431 (llhttp has no head limit
at all), so the protocol closes a connection whose request head is not complete ``header_timeout_s`` after its first
byte (or after connecting), answers 431 to a request head over ``max_header_bytes`` (complete or not: counted in the
parser's callbacks, and by the reads while the head is incomplete), and closes new connections at once beyond
:func:`~export.serve.config.open_connection_cap` (below the process's file-descriptor limit, so ``accept`` never
fails with EMFILE; one log line per 10 s says how many).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httptools
import numpy as np
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from constcl_zoo.errors import ConstclZooError

from .config import ServeConfig, open_connection_cap

ALIGN = 64  # bytes: a cache line, an AVX-512 vector
READ_BYTES = 256 * 1024  # the most one read takes from a socket outside a body (uvloop's own read size)
FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")


class _HeadTooLarge(ConstclZooError):
    """Raised from an httptools callback: the request head is over ``max_header_bytes`` (answered 431)."""


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


class ProtocolLimits:
    """One server's limits (from its :class:`~export.serve.config.ServeConfig`) and what its connections share: the
    open-socket cap and the count of connections refused since the last log line, the 431 reply, and the read
    buffer (``scratch``: one for all connections, each read is parsed before the next)."""

    __slots__ = ("cap", "header_timeout_s", "logged_at", "max_body", "max_head", "refused", "reply_431", "scratch")

    def __init__(self, config: ServeConfig) -> None:
        self.header_timeout_s = config.header_timeout_s
        self.max_head, self.max_body = config.max_header_bytes, config.max_upload_bytes
        self.cap = open_connection_cap(config)
        self.refused, self.logged_at = 0, 0.0
        too_large = orjson.dumps({"detail": f"request head over the limit of {self.max_head} bytes"})
        self.reply_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                          b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(too_large), too_large))
        self.scratch = memoryview(bytearray(READ_BYTES))

    def refuse(self, logger: logging.Logger) -> None:
        """Count a connection closed at accept; at most one log line per 10 s says how many."""
        self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= 10.0:
            logger.warning("open-connection cap %d reached: new connections are closed at accept (%d since the "
                           "previous such line; at most one line per 10 s)", self.cap, self.refused)
            self.refused, self.logged_at = 0, now


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
    """uvicorn's httptools protocol with the guards and whole bodies of :func:`guarded_protocol` (fed by
    :class:`DirectReads`); ``limits``: the server's :class:`ProtocolLimits`."""

    def __init__(self, *args: Any, limits: ProtocolLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._refused = len(self.connections) >= self.limits.cap
        if self._refused:  # close at once: the descriptor is free again before the next accept
            transport.close()
            self.limits.refuse(self.logger)
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
            if self._head_reads > self.limits.max_head:
                return self._send_431()
        self._watch_head()

    def _send_431(self) -> None:
        self.transport.write(self.limits.reply_431)
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
        if self._head_size > self.limits.max_head:
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
        if length is None or not length.isdigit() or not 0 < int(length) <= self.limits.max_body \
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
                self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)
        elif self._head_timer is not None:  # a request is in progress, or the keep-alive timer runs instead
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head took over %g s", self.limits.header_timeout_s)
            self.transport.close()


class DirectReads(asyncio.BufferedProtocol):
    """The transport's protocol: reads go into :meth:`GuardedHttpToolsProtocol.body_buffer` (a body straight into
    its own buffer: no ``bytes`` per read, no copy by the parser, none into the buffer) or else into the shared
    read buffer (:attr:`ProtocolLimits.scratch`), which is handed to the HTTP protocol as ``data_received``; the
    rest is passed on. (uvloop uses ``recv_into`` only for a protocol that is not an ``asyncio.Protocol``, hence a
    wrapper, not a subclass.)"""

    __slots__ = ("http", "scratch", "target")

    def __init__(self, http: GuardedHttpToolsProtocol) -> None:
        self.http, self.scratch, self.target = http, http.limits.scratch, None

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
        return self.scratch if self.target is None else self.target

    def buffer_updated(self, nbytes: int) -> None:
        if self.target is None:
            self.http.data_received(self.scratch[:nbytes])  # type: ignore[arg-type]
        else:
            self.target = None
            self.http.body_received(nbytes)



class ProtocolFactory:
    """uvicorn's ``http`` factory: one :class:`DirectReads` around one :class:`GuardedHttpToolsProtocol` per
    connection, all sharing one :class:`ProtocolLimits` (``protocol_class``: the HTTP protocol's class)."""

    protocol_class = GuardedHttpToolsProtocol

    def __init__(self, limits: ProtocolLimits) -> None:
        self.limits = limits

    def __call__(self, **kwargs: Any) -> DirectReads:
        return DirectReads(GuardedHttpToolsProtocol(limits=self.limits, **kwargs))


def guarded_protocol(config: ServeConfig) -> ProtocolFactory:
    """uvicorn's httptools protocol (llhttp, C) with the limits uvicorn lacks (the module docstring) and whole bodies.

    * A deadline on request heads: uvicorn's ``timeout_keep_alive`` only runs between requests, once a response is
      sent, and is cancelled by the first byte of the next request; a client that connects and sends nothing, or
      trickles a head byte by byte (slowloris), would otherwise hold its connection forever (and
      ``limit_concurrency`` counts it).
    * 431 for heads over ``config.max_header_bytes``: llhttp has no size limit of its own. The head is counted
      exactly in the parser's callbacks (request target, each header, request line and blank line), so a long head
      in one read is caught; a head still incomplete is counted by the reads that hold nothing else, so a trickled
      one is caught before the parser has seen a whole header (at most one read, 256 KB, later for a head that
      starts in the middle of a read after a pipelined request).
    * A cap on open sockets (:func:`~export.serve.config.open_connection_cap`): beyond it, connections are closed
      at accept.
    * Bodies with a ``Content-Length`` of at most ``config.max_upload_bytes`` (not forms: Starlette's multipart
      parser wants ``bytes`` chunks) are received whole into one buffer (:class:`WholeBody`; after the read that
      ends the head, the socket is read straight into it, see :class:`DirectReads`), without uvicorn's per-read copies,
      wake-ups of the app and flow-control pauses; larger ones (413 by their length) and chunked ones (counted
      while they stream) keep uvicorn's path. The buffer holds at most ``max_upload_bytes``, as the app's own copy of
      the body did before.

    Returns uvicorn's ``http`` factory (:class:`ProtocolFactory`: one :class:`DirectReads` wrapping one
    :class:`GuardedHttpToolsProtocol` per connection; the class is its ``protocol_class``).
    """
    return ProtocolFactory(ProtocolLimits(config))
