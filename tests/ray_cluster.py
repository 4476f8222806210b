"""Ray clusters for the tests, reachable from loopback only.

Ray's services listen on every interface, so each cluster runs in a network namespace of its own with only ``lo``
up: nothing it opens is reachable from outside this machine, and its ports cannot clash with anything else here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def loopback_only_network() -> Iterator[None]:
    """Run the calling thread (and every process it starts) in a new network namespace with only ``lo`` up; the
    thread returns to its previous namespace on exit. Fails the test where that is not permitted (it needs
    CAP_SYS_ADMIN): a cluster started without it would listen on every interface."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            pytest.fail("cannot create a network namespace (needs CAP_SYS_ADMIN): a Ray cluster would listen on "
                        "every interface")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        interfaces = [line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]]
        assert interfaces == ["lo"]
        yield
    finally:
        if libc.setns(old, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "cannot return to the previous network namespace")
        os.close(old)


@contextlib.contextmanager
def ray_environment(**extra: str) -> Iterator[Path]:
    """Ray settings of this process and its children for the block, all restored after (Ray itself sets
    ``RAY_AUTH_MODE`` in ``os.environ`` when it enables tokens):

    - a fresh ``RAY_TMPDIR`` (the clusters' sessions and the address file that ``auto`` reads, so a stale
      ``/tmp/ray/ray_current_cluster`` is never read); short, because Ray's Unix sockets live under it (107 bytes);
    - token authentication with a token of our own (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), as a secured
      cluster runs, instead of whatever ``~/.ray/auth_token`` holds or a local ``ray.init`` would write there;
    - no ``RAY_ADDRESS``; ``extra`` variables (e.g. test hooks the cluster's workers inherit).

    Yields the temporary folder."""
    names = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS", *extra)
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as folder:
        os.environ.pop("RAY_ADDRESS", None)
        os.environ.update(RAY_TMPDIR=folder, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), **extra)
        try:
            yield Path(folder)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_cluster(num_cpus: int = 2, timeout_s: float = 180.0) -> Iterator[str]:
    """A Ray head node started as an operator does (``ray start --head``), before and apart from the code under test;
    yields its GCS address (``127.0.0.1:PORT``). Call inside :func:`loopback_only_network` and
    :func:`ray_environment`. Stopped on exit by ending its whole process tree (``ray stop`` would end every Ray
    process of this user on the machine)."""
    psutil = pytest.importorskip("psutil", reason="psutil (the `dev` extra) is not installed")
    port = _free_port()
    log = Path(os.environ["RAY_TMPDIR"]) / "ray-start.log"
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
               f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
               "--disable-usage-stats"]
    with log.open("w") as out:
        head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start --head` did not come up (exit {head.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = [*psutil.Process(head.pid).children(recursive=True), psutil.Process(head.pid)]
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.terminate()
            _, alive = psutil.wait_procs(tree, timeout=5)
            for process in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(alive, timeout=10)
        head.wait(timeout=30)
