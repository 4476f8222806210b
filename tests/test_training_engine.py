"""The shared training engine driven by a toy learner (a tiny regression net, seconds on a CPU): exact resume, no
duplicate metric rows, fallback from a damaged checkpoint, refusing to train over a run, --overwrite, the
evaluation hook, umask-honouring files, and one loss number in the log line, the bar and metrics.jsonl."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from training.engine import (
    CheckpointError,
    Learner,
    OptimConfig,
    RunConfig,
    RunContext,
    RunExistsError,
    StepOutput,
    TrainConfig,
    read_jsonl,
    train,
)
from training.engine.logger import RunLogger

_W = torch.tensor([1.0, -2.0, 0.5])


@dataclass
class ToyConfig(TrainConfig):
    preset: str = "toy"
    batch_size: int = 8
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.05, warmup_steps=1, grad_reduction="mean"))
    run: RunConfig = field(default_factory=lambda: RunConfig(
        steps=6, checkpoint_every=2, keep_checkpoints=5, log_every=1, precision="fp32", channels_last=False,
        progress=False))


class ToyLearner(Learner):
    """y = x . w, learned by Linear-BN-Dropout-Linear; dropout draws from the global RNG, so exact resume needs the
    RNG state, and the data depends only on the micro-batch position."""

    name, unit = "toy", "samples"
    metric_names = ("abs_error",)
    count_names = ("seen",)

    def __init__(self, cfg: ToyConfig, with_eval: bool = False) -> None:
        self.cfg, self.with_eval, self.eval_modes = cfg, with_eval, []

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    def build_model(self, ctx: RunContext) -> torch.nn.Module:
        g = torch.Generator().manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.2),
                                    torch.nn.Linear(16, 1))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        return model.train()

    def batches(self, model: torch.nn.Module, local_batch: int, ctx: RunContext, start: int) -> Iterator[Any]:
        position = start
        while True:
            x = torch.randn(local_batch, 3, generator=torch.Generator().manual_seed(position))
            yield {"x": x, "y": x @ _W}
            position += 1

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return (batch["x"],)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> StepOutput:
        err = outputs.squeeze(1) - batch["y"]
        return StepOutput(err.square().mean(), {"abs_error": err.abs().mean()}, {"seen": float(len(err))})

    def evaluate(self, model: torch.nn.Module, ctx: RunContext) -> dict[str, float] | None:
        if not self.with_eval:
            return None
        self.eval_modes.append(model.training)
        x = torch.randn(64, 3, generator=torch.Generator().manual_seed(-1 % 2**31))
        return {"val_mse": float((model(x).squeeze(1) - x @ _W).square().mean())}


def _cfg(*overrides: str) -> ToyConfig:
    return ToyConfig().replace(list(overrides))


def _weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def _without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("samples_per_s", "data_wait_fraction")} for r in rows]


def _kill_after_step_5(out: Path) -> None:
    """What a run killed while training step 6 leaves: rows up to step 5, the newest checkpoint at step 4."""
    import shutil

    shutil.rmtree(out / "checkpoints" / "step_00000006")
    (out / "checkpoints" / "latest").write_text("step_00000004\n")
    rows = read_jsonl(out / "metrics.jsonl")
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:5]) + '{"step": 6, "lo')


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engine") / "straight"
    summary = train(ToyLearner(_cfg()), out)
    assert summary["steps"] == 6 and summary["seen"] == 48
    return out


def test_resume_is_exact_and_logs_each_step_once(straight, tmp_path):
    out = tmp_path / "run"
    train(ToyLearner(_cfg()), out)
    _kill_after_step_5(out)
    train(ToyLearner(_cfg()), out, resume=True)
    _assert_same_weights(_weights(straight, 6), _weights(out, 6))
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert _without_timing(rows) == _without_timing(read_jsonl(straight / "metrics.jsonl"))
    assert rows[-1]["seen"] == 48  # counts continue from the checkpoint, not from 0


@pytest.mark.parametrize("damage", ["flip_weights", "truncate_optimizer", "garble_state", "missing_rng"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(straight, tmp_path, caplog, damage):
    out = tmp_path / "run"
    train(ToyLearner(_cfg()), out)
    folder = out / "checkpoints" / "step_00000006"
    if damage == "flip_weights":
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[-3] ^= 0x01
        (folder / "model.safetensors").write_bytes(bytes(data))
    elif damage == "truncate_optimizer":
        path = folder / "optimizer.safetensors"
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "garble_state":
        (folder / "state.json").write_text('{"step": 6, "micro')
    else:
        (folder / "rng.rank0.json").unlink()
    with caplog.at_level(logging.WARNING):
        train(ToyLearner(_cfg()), out, resume=True)
    assert any("skipping checkpoint step_00000006" in r.getMessage() and "falling back" in r.getMessage()
               for r in caplog.records), caplog.text
    _assert_same_weights(_weights(straight, 6), _weights(out, 6))  # retrained 5 and 6 from step 4, exactly
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_no_readable_checkpoint_is_an_error(tmp_path):
    out = tmp_path / "run"
    train(ToyLearner(_cfg("run.steps=2", "run.checkpoint_every=1")), out)
    for folder in (out / "checkpoints").glob("step_*"):
        (folder / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        train(ToyLearner(_cfg("run.steps=2", "run.checkpoint_every=1")), out, resume=True)


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    train(ToyLearner(_cfg()), out)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(RunExistsError, match="--resume.*--overwrite"):
        train(ToyLearner(_cfg("run.steps=2")), out)
    assert (out / "metrics.jsonl").read_text() == before  # nothing touched
    (out / "notes.txt").write_text("mine")
    train(ToyLearner(_cfg("run.steps=2")), out, overwrite=True)
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_00000002"]
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are deleted
    with pytest.raises(ValueError, match="contradict"):
        train(ToyLearner(_cfg()), out, resume=True, overwrite=True)


def test_evaluation_hook_runs_in_eval_mode_and_is_logged(tmp_path):
    task = ToyLearner(_cfg("run.eval_every=3"), with_eval=True)
    out = tmp_path / "run"
    train(task, out)
    assert task.eval_modes == [False, False]
    rows = read_jsonl(out / "eval.jsonl")
    assert [r["step"] for r in rows] == [3, 6] and all(r["val_mse"] > 0 for r in rows)


def test_every_file_of_a_run_honours_the_umask(tmp_path):
    old = os.umask(0o007)
    try:
        out = tmp_path / "run"
        train(ToyLearner(_cfg("run.steps=2")), out)
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10
    wrong = {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != 0o660}
    assert not wrong


def test_bar_log_line_and_metrics_show_the_same_loss(tmp_path, caplog):
    task = ToyLearner(_cfg())
    logger = RunLogger(tmp_path, task, is_main=True, total_steps=10, start_step=0, progress=True)
    for loss in (2.0, 1.0, 0.5):  # three steps in the window
        logger.step(torch.tensor([loss, 0.1], dtype=torch.float64))
    with caplog.at_level(logging.INFO, logger="training"):
        logger.log(3, dict(zip(("loss", "abs_error"), logger.window_means(), strict=True)), 0.1, 1, {"seen": 24})
    logger.close()
    mean = (2.0 + 1.0 + 0.5) / 3
    row = read_jsonl(tmp_path / "metrics.jsonl")[0]
    assert row["loss"] == pytest.approx(mean)
    assert f"loss {mean:.4f} (mean of 3 steps)" in caplog.text
    assert f"loss {mean:.4f} (mean of 3 steps)" in logger.bar.postfix

