"""Exact resume after SIGKILL, and a 2-process torchrun (Gloo) pretraining run, on the real videos (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from .conftest import SHARED

VIDEOS = SHARED / "data" / "videos"
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,  # pretraining runs in subprocesses
              pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"real videos not found at {VIDEOS} (../shared/data)")]

# cpu_smoke on three of the videos, a few steps; both processes of a comparison use the same threads.
_COMMON = ["-o", "run.progress=false", "-o", "run.log_every=1", "-o", "run.threads=1", "-o", "optim.warmup_steps=1",
           "-o", "data.decode_short_side=72"]


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "videos.txt"
    path.write_text("".join(f"{VIDEOS / n}\n" for n in ("tree.avi", "bikes.mp4", "Megamind.avi")))
    return path


def _cmd(videos: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training", "pretrain", "--config", "cpu_smoke", "--videos", str(videos),
            "--out", str(out), *_COMMON, *extra]


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _final(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step_{step:08d}"


def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    videos = _manifest(tmp_path)
    steps = ["-o", "run.steps=4", "-o", "run.checkpoint_every=2", "-o", "run.keep_checkpoints=5"]
    _run(_cmd(videos, tmp_path / "straight", *steps))

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_cmd(videos, interrupted, *steps), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latest = interrupted / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not (latest.is_file() and latest.read_text().strip() == "step_00000002"):
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    still_running = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its data-loader worker: nothing gets to clean up
    proc.wait()
    assert still_running and proc.returncode == -signal.SIGKILL
    assert not _final(interrupted, 4).exists()

    resumed = _run(_cmd(videos, interrupted, "--resume", *steps))
    assert "resumed from" in resumed.stdout and "step_0000000" in resumed.stdout
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(str(_final(tmp_path / "straight", 4) / name))
        b = load_file(str(_final(interrupted, 4) / name))
        assert a.keys() == b.keys() and len(a) > 10
        different = [k for k in a if not (a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and
                                          (a[k] == b[k]).all())]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"
    # Steps logged before the kill and again after the resume appear once.
    rows = [json.loads(x) for x in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    straight_rows = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in straight_rows]
    state = [json.loads((_final(o, 4) / "state.json").read_text()) for o in (tmp_path / "straight", interrupted)]
    assert state[0]["micro_step"] == state[1]["micro_step"] == 4
    assert state[0]["scheduler"] == state[1]["scheduler"]
    # And the training is not trivially constant: the weights moved from their initial values.
    first = load_file(str(_final(tmp_path / "straight", 2) / "model.safetensors"))
    last = load_file(str(_final(tmp_path / "straight", 4) / "model.safetensors"))
    assert not (first["backbone.stem.conv.weight"] == last["backbone.stem.conv.weight"]).all()


def test_torchrun_two_gloo_processes(tmp_path):
    """DDP over 2 Gloo processes with gradient accumulation (no_sync), bf16 autocast and channels_last_3d."""
    videos = _manifest(tmp_path)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "training",
           "pretrain", "--config", "cpu_smoke", "--videos", str(videos), "--out", str(out), *_COMMON,
           "-o", "run.steps=2", "-o", "run.checkpoint_every=2", "-o", "data.num_workers=0", "-o", "data.batch_size=8",
           "-o", "run.accum_steps=2", "-o", "optim.grad_reduction=sum", "-o", "run.precision=bf16",
           "-o", "run.channels_last=true"]
    proc = _run(cmd)
    assert "on cpu x 2 process(es): 8 clips/step (2 per micro-batch and process, 2 accumulation)" in proc.stdout
    folder = _final(out, 2)
    state = json.loads((folder / "state.json").read_text())
    assert state["world"] == 2 and state["micro_step"] == 4
    assert (folder / "rng.rank0.safetensors").is_file() and (folder / "rng.rank1.safetensors").is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows)
    # 'sum' over 2 processes x 2 micro-batches: the SGD weight decay carries the per-replica L2 term 4 times.
    decays = sorted(g["weight_decay"] for g in state["optimizer"]["param_groups"])
    assert decays == [0.0, pytest.approx(4e-6)]
    # The two processes' RNG states differ (each seeds with its rank): both were saved, not one copied.
    r0, r1 = (load_file(str(folder / f"rng.rank{r}.safetensors"))["torch_cpu"] for r in range(2))
    assert not (r0 == r1).all()
