"""``constcl-zoo embed --engine ray`` on a local Ray cluster started here (loopback only): the same files and index
as the plain engine, a killed actor retried, a corrupt video failed alone, a rerun skipping finished videos."""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl_zoo.cli import main
from constcl_zoo.commands.embed import load_embeddings, read_metadata
from constcl_zoo.commands.embed_ray import FAULT_ENV
from constcl_zoo.video import iter_video_file

from .conftest import SHARED
from .test_embed import need_shared_videos, write_video

ARGS = ["--model", "constcl_r3d14_w16", "--random-init", "--seed", "1", "--precision", "fp32", "--no-progress",
        "--batch-size", "4"]
# Real content, cut short: (video, frames kept) -> 2, 1 and 3 windows of 16 frames.
CUTS = (("vtest.avi", 40), ("tree.avi", 24), ("bikes.mp4", 56))
_CLONE_NEWNET = 0x40000000


def _own_network_namespace() -> int | None:
    """Move this thread (and the processes it starts) into a new network namespace with only ``lo`` up, so Ray's
    services, which listen on all interfaces, are reachable from loopback only; the old namespace's fd (to go back)
    or None where that is not permitted (no CAP_SYS_ADMIN)."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    if libc.unshare(_CLONE_NEWNET) != 0:
        os.close(old)
        return None
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return old


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module (2 CPUs, no dashboard) in a network namespace of its own."""
    ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")
    fault = tmp_path_factory.mktemp("fault") / "crash-next-actor-call"
    env = {k: os.environ.pop(k) for k in ("RAY_ADDRESS",) if k in os.environ}
    os.environ[FAULT_ENV] = str(fault)  # inherited by the workers; armed by creating the file
    old_ns = _own_network_namespace()
    if old_ns is None:
        pytest.fail("cannot create a network namespace (needs CAP_SYS_ADMIN): the Ray cluster would listen on "
                    "every interface")
    try:
        interfaces = [line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]]
        assert interfaces == ["lo"]  # nothing Ray starts can listen beyond loopback
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        yield fault
    finally:
        ray.shutdown()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns(old_ns, _CLONE_NEWNET)
        os.close(old_ns)
        os.environ.pop(FAULT_ENV, None)
        os.environ.update(env)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    need_shared_videos()
    folder = tmp_path_factory.mktemp("videos")
    for name, frames in CUTS:
        rgb = [f.rgb for f in itertools.islice(iter_video_file(SHARED / "data" / "videos" / name), frames)]
        write_video(folder / (Path(name).stem + ".avi"), np.stack(rgb))
    return folder


@pytest.fixture(scope="module")
def plain(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
    return out


def _index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


@pytest.mark.slow
def test_ray_outputs_equal_the_plain_engine(cluster, videos, plain, tmp_path):
    out = tmp_path / "ray"
    assert main(["embed", str(videos), "--out", str(out), *ARGS, "--engine", "ray", "--actors", "1"]) == 0
    files = sorted(p.name for p in plain.glob("*.safetensors"))
    assert files == sorted(p.name for p in out.glob("*.safetensors")) and len(files) == 3
    for name in files:
        a, b = load_embeddings(plain / name), load_embeddings(out / name)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
        assert read_metadata(out / name) == read_metadata(plain / name)
    ours, theirs = _index(out), _index(plain)
    assert ours["engine"] == "ray" and theirs["engine"] == "local"
    assert ours["videos"] == theirs["videos"] and ours["failed"] == theirs["failed"] == []


@pytest.mark.slow
def test_killed_actor_is_retried_and_every_video_finishes(cluster, videos, plain, tmp_path):
    cluster.write_text("")  # the next model actor call exits its process
    out = tmp_path / "ray"
    assert main(["embed", str(videos), "--out", str(out), *ARGS, "--engine", "ray"]) == 0
    assert not cluster.exists()  # the fault fired
    assert [v["file"] for v in _index(out)["videos"]] == sorted(p.name for p in plain.glob("*.safetensors"))
    for p in plain.glob("*.safetensors"):
        torch.testing.assert_close(load_embeddings(out / p.name)["embeddings"], load_embeddings(p)["embeddings"],
                                   rtol=0, atol=1e-6)


@pytest.mark.slow
def test_corrupt_video_fails_alone_and_a_rerun_skips_finished_videos(cluster, videos, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in videos.iterdir():
        (folder / p.name).symlink_to(p)
    (folder / "broken.mp4").write_bytes(b"\x00" * 3000)
    out = tmp_path / "ray"
    assert main(["embed", str(folder), "--out", str(out), *ARGS, "--engine", "ray"]) == 1
    index = _index(out)
    assert len(index["videos"]) == 3 and [f["file"] for f in index["failed"]] == ["broken.mp4.safetensors"]
    assert index["failed"][0]["error"].startswith("VideoDecodeError: ")
    assert "FAILED" in capsys.readouterr().err
    # rerun: the finished files are skipped (untouched), only the broken one is tried again
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    assert main(["embed", str(folder), "--out", str(out), *ARGS, "--engine", "ray"]) == 1
    err = capsys.readouterr().err
    assert "3 video(s) done (3 skipped as already done, 0 embedded), 1 failed" in err
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert [f["file"] for f in _index(out)["failed"]] == ["broken.mp4.safetensors"]


def test_without_ray_the_engine_names_the_extra(videos, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["embed", str(videos), "--out", str(tmp_path / "o"), *ARGS, "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'constcl-zoo[ray]'" in err
