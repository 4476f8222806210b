"""``constcl-zoo embed --runner ray`` on local Ray clusters, loopback only: a running one (``ray start --head``)
joined with ``--address auto`` or its GCS address, and one the command starts itself. The same files and index
as the local runner, a killed actor retried, a corrupt video failed alone, a rerun skipping finished videos."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl_zoo.cli import main
from constcl_zoo.formats.embeddings import load_embeddings, read_metadata
from constcl_zoo.inference.video import iter_video_file
from constcl_zoo.workflows.embed_ray import FAULT_ENV

from .conftest import SHARED
from .ray_cluster import loopback_only_network, ray_environment, running_cluster
from .test_embed import need_shared_videos, write_video

ARGS = ["--model", "constcl_r3d14_w16", "--random-init", "--seed", "1", "--precision", "fp32", "--no-progress",
        "--batch-size", "4"]
# Real content, cut short: (video, frames kept) -> 2, 1 and 3 windows of 16 frames.
CUTS = (("vtest.avi", 40), ("tree.avi", 24), ("bikes.mp4", 56))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """An already-running Ray cluster (``ray start --head``, 2 CPUs) for the module; the tests join it with
    ``--address``. Yields the fault file (creating it arms the crash hook in the cluster's workers) and the GCS
    address."""
    pytest.importorskip("ray", reason="the `ray` extra is not installed")
    fault = tmp_path_factory.mktemp("fault") / "crash-next-actor-call"
    # FAULT_ENV is inherited by the cluster's workers
    with loopback_only_network(), ray_environment(**{FAULT_ENV: str(fault)}), running_cluster(2) as gcs_address:
        yield fault, gcs_address


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


def _assert_same_outputs(out: Path, plain: Path) -> None:
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
    assert ours["runner"] == "ray" and theirs["runner"] == "local"
    assert ours["videos"] == theirs["videos"] and ours["failed"] == theirs["failed"] == []


def _embed_ray(inputs: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """``constcl-zoo embed --runner ray`` as a user runs it: its own process (Ray keeps per-process state, such as
    the authentication mode it reads from the environment once), with this process's environment."""
    command = [sys.executable, "-m", "constcl_zoo", "embed", str(inputs), "--out", str(out), *ARGS,
               "--runner", "ray", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["auto", "gcs-address"])
def test_ray_on_a_running_cluster_equals_the_local_runner(cluster, videos, plain, tmp_path, how):
    _, gcs_address = cluster
    out = tmp_path / "ray"
    done = _embed_ray(videos, out, "--address", "auto" if how == "auto" else gcs_address, "--actors", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_outputs(out, plain)


@pytest.mark.slow
def test_without_address_a_cluster_is_started_for_the_run_and_stopped(videos, plain, tmp_path):
    import psutil

    out = tmp_path / "ray"
    # A network namespace and Ray folder of their own: no running cluster is reachable or named in the address
    # file there, so the command starts one.
    with loopback_only_network(), ray_environment() as ray_tmp:
        done = _embed_ray(videos, out)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Started a local Ray instance" in done.stderr
        time.sleep(2)
        left = [p.info for p in psutil.process_iter(["pid", "name", "cmdline"])
                if str(ray_tmp) in " ".join(p.info["cmdline"] or [])]
        assert not left, left  # the cluster it started is gone with it
    _assert_same_outputs(out, plain)


@pytest.mark.slow
def test_killed_actor_is_retried_and_every_video_finishes(cluster, videos, plain, tmp_path):
    fault, _ = cluster
    fault.write_text("")  # the next model actor call exits its process
    out = tmp_path / "ray"
    done = _embed_ray(videos, out, "--address", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not fault.exists()  # the fault fired
    assert [v["file"] for v in _index(out)["videos"]] == sorted(p.name for p in plain.glob("*.safetensors"))
    for p in plain.glob("*.safetensors"):
        torch.testing.assert_close(load_embeddings(out / p.name)["embeddings"], load_embeddings(p)["embeddings"],
                                   rtol=0, atol=1e-6)


@pytest.mark.slow
def test_corrupt_video_fails_alone_and_a_rerun_skips_finished_videos(cluster, videos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in videos.iterdir():
        (folder / p.name).symlink_to(p)
    (folder / "broken.mp4").write_bytes(b"\x00" * 3000)
    out = tmp_path / "ray"
    done = _embed_ray(folder, out, "--address", "auto")
    assert done.returncode == 1, done.stderr[-3000:]
    index = _index(out)
    assert len(index["videos"]) == 3 and [f["file"] for f in index["failed"]] == ["broken.mp4.safetensors"]
    assert index["failed"][0]["error"].startswith("VideoDecodeError: ")
    assert "FAILED" in done.stderr
    # rerun: the finished files are skipped (untouched), only the broken one is tried again
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    done = _embed_ray(folder, out, "--address", "auto")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "3 video(s) done (3 skipped as already done, 0 embedded), 1 failed" in done.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert [f["file"] for f in _index(out)["failed"]] == ["broken.mp4.safetensors"]


@pytest.mark.slow
def test_cuda_on_a_cluster_without_gpus_is_a_usage_error(cluster, videos, tmp_path):
    out = tmp_path / "ray"
    done = _embed_ray(videos, out, "--address", "auto", "--device", "cuda")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "--device cuda: the Ray cluster has no GPU; use --device cpu" in done.stderr
    assert not list(out.glob("*.safetensors"))


def test_ray_client_address_is_refused_with_the_way_that_works(videos, tmp_path, capsys):
    pytest.importorskip("ray", reason="the `ray` extra is not installed")
    out = tmp_path / "o"
    assert main(["embed", str(videos), "--out", str(out), *ARGS, "--runner", "ray", "--address",
                 "ray://10.0.0.1:10001"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Ray Data does not run through Ray Client" in err and "--address auto" in err
    assert not out.exists()


def test_without_ray_the_runner_names_the_extra(videos, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["embed", str(videos), "--out", str(tmp_path / "o"), *ARGS, "--runner", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'constcl-zoo[ray]'" in err
