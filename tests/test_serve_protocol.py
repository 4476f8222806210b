"""The service's HTTP layer over real sockets (export.serve.guarded_protocol: httptools, whole bodies read straight
into their buffer): bodies in pieces, keep-alive and pipelining, 100-continue, answers before the body is in, body
limits, and buffers freed without the cycle collector. The head deadline, 431 and the socket cap are tested in
tests/test_serve.py."""

from __future__ import annotations

import contextlib
import gc
import json
import socket
import time

import httpx
import numpy as np

from export.serve import WholeBody

from .test_serve import embedder, live, npy_bytes  # noqa: F401  (fixtures)


class Replies:
    """HTTP responses read one by one from a socket (bytes past one response are kept for the next)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.data = sock, b""
        sock.settimeout(20)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; unread: {self.data[:200]!r}")
        self.data += chunk

    def next(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self.data:
            self._fill()
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(headers.get(b"content-length", b"0"))
        while len(self.data) < length:
            self._fill()
        body, self.data = self.data[:length], self.data[length:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        """Whether the server closes the connection with nothing more sent."""
        with contextlib.suppress(ConnectionResetError):
            return not self.data and self.sock.recv(65536) == b""
        return True


def clips_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 112, 112)).astype(np.float32)


def raw_head(clips: np.ndarray, *extra: str) -> bytes:
    return ("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"X-Clips-Shape: {','.join(map(str, clips.shape))}\r\nContent-Length: {clips.nbytes}\r\n"
            + "".join(f"{line}\r\n" for line in extra) + "\r\n").encode()


def embeddings_of(reply: tuple[int, dict, bytes]) -> np.ndarray:
    status, _, body = reply
    assert status == 200, body[:300]
    return np.array(json.loads(body)["embeddings"], np.float32)


def test_body_in_pieces_keep_alive_and_pipelining(live, embedder):  # noqa: F811
    """A raw body whose first bytes come with the head (parsed) and the rest in later reads (into the buffer); a
    .npy request and a GET pipelined in one write behind it, on the same connection."""
    clips = clips_of(2, seed=1)
    body = clips.tobytes()
    with socket.create_connection(("127.0.0.1", live)) as sock:
        replies = Replies(sock)
        sock.sendall(raw_head(clips) + body[:1000])
        for start in range(1000, len(body), 700_000):
            time.sleep(0.05)
            sock.sendall(body[start:start + 700_000])
        np.testing.assert_allclose(embeddings_of(replies.next()), embedder.run(clips), rtol=1e-5, atol=1e-6)
        npy = npy_bytes(clips[1:])
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(npy) + npy + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        np.testing.assert_allclose(embeddings_of(replies.next()), embedder.run(clips[1:]), rtol=1e-5, atol=1e-6)
        status, _, health = replies.next()
        assert status == 200 and json.loads(health) == {"status": "ok"}


def test_expect_100_continue(live, embedder):  # noqa: F811
    clips = clips_of(1, seed=2)
    with socket.create_connection(("127.0.0.1", live)) as sock:
        replies = Replies(sock)
        sock.sendall(raw_head(clips, "Expect: 100-continue"))
        status, _, _ = replies.next()
        assert status == 100  # asked for the body before it was sent
        sock.sendall(clips.tobytes())
        np.testing.assert_allclose(embeddings_of(replies.next()), embedder.run(clips), rtol=1e-5, atol=1e-6)


def test_answer_before_the_body_then_the_next_request(live):  # noqa: F811
    """404 (unknown model) is answered from the head; the rest of the body is still read (and dropped) and the next
    request on the connection is parsed from the byte after it."""
    body = b"\0" * 2_000_000
    head = (b"POST /v2/models/no-such-model/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Inference-Header-Content-Length: 10\r\nContent-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", live)) as sock:
        replies = Replies(sock)
        sock.sendall(head + body[:10])
        status, _, error = replies.next()
        assert status == 404 and "unknown model 'no-such-model'" in json.loads(error)["error"]
        sock.sendall(body[10:1_000_000])
        time.sleep(0.05)
        sock.sendall(body[1_000_000:] + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, _ = replies.next()
        assert status == 200 and replies.closed()


def test_trickled_head_after_a_pipelined_request_gets_431(live):  # noqa: F811
    """The big head starts in the middle of a read (after a whole request): it is still cut off one read later."""
    with socket.create_connection(("127.0.0.1", live)) as sock:
        replies = Replies(sock)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000)
        assert replies.next()[0] == 200
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(10):
                time.sleep(0.05)
                sock.sendall(b"a" * 10_000)
        status, _, body = replies.next()
        assert status == 431 and b"request head over the limit of 16384 bytes" in body
        assert replies.closed()


def test_body_limits_over_real_sockets(live):  # noqa: F811
    """Over max_upload_bytes (8 MB here): by Content-Length, answered from the head; chunked, counted as it comes."""
    with socket.create_connection(("127.0.0.1", live)) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     b"X-Clips-Shape: 1,3,8,112,112\r\nContent-Length: 9000000\r\n\r\n")
        status, _, body = Replies(sock).next()
        assert status == 413 and "upload of 9000000 bytes is over the limit" in json.loads(body)["detail"]

    def chunks():
        for _ in range(9):
            yield b"\0" * 1_000_000

    response = httpx.post(f"http://127.0.0.1:{live}/v1/embeddings", content=chunks(), timeout=30,
                          headers={"content-type": "application/octet-stream"})
    assert response.status_code == 413 and "over the limit of 8000000 bytes" in response.json()["detail"]


def test_body_buffers_are_freed_without_the_cycle_collector(live):  # noqa: F811
    """A whole body's buffer is freed when its request is done, by reference counting alone (a reference cycle
    kept ~1 MB per request until the collector ran: page faults on every request, measured in serve_load)."""
    clips = clips_of(1, seed=3)
    gc.collect()
    gc.disable()
    try:
        with socket.create_connection(("127.0.0.1", live)) as sock:
            replies = Replies(sock)
            for _ in range(10):
                sock.sendall(raw_head(clips) + clips.tobytes())
                assert replies.next()[0] == 200
        time.sleep(0.2)
        alive = sum(type(o) is WholeBody for o in gc.get_objects())
    finally:
        gc.enable()
    assert alive <= 1, f"{alive} body buffers of 10 requests are still alive"
