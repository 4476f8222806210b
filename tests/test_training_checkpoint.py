"""Training checkpoints: exact round trip of model, optimizer, scheduler and RNG; newest complete checkpoint wins."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from training.engine.checkpoint import (
    latest_checkpoint,
    load_training_state,
    save_training_state,
    staging_folder,
    write_rng,
)
from training.engine.optim import build_optimizer, build_scheduler


def _setup(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = build_optimizer(model, 0.1, 0.9, False, 1e-4)
    sched = build_scheduler(opt, 0.1, 2, 10)
    return model, opt, sched


def _train(model, opt, sched, steps: int) -> None:
    for _ in range(steps):
        model(torch.randn(6, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()


def _save(run, step, model, opt, sched):
    staging_folder(run, step).mkdir(parents=True, exist_ok=True)
    write_rng(staging_folder(run, step), 0)
    return save_training_state(run, step, step, model, opt, sched, {"world": 1}, keep=2)


def test_round_trip_is_exact_and_rng_continues(tmp_path):
    model, opt, sched = _setup(0)
    _train(model, opt, sched, 3)
    random.seed(5)
    np.random.seed(5)
    folder = _save(tmp_path, 3, model, opt, sched)
    expected_rng = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(7)
    _train(model, opt, sched, 2)  # momentum, LR schedule and BN statistics all matter from here on

    other, other_opt, other_sched = _setup(1)  # another init: everything must come from the checkpoint
    meta = load_training_state(folder, other, other_opt, other_sched, rank=0)
    assert meta["step"] == 3 and meta["micro_step"] == 3
    got_rng = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(got_rng[0], expected_rng[0]) and got_rng[1:] == expected_rng[1:]
    torch.manual_seed(7)
    _train(other, other_opt, other_sched, 2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    assert other_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"] > 0
    assert [g["weight_decay"] for g in other_opt.param_groups] == [1e-4, 0.0]


def test_newest_complete_checkpoint_wins_and_staging_is_ignored(tmp_path):
    model, opt, sched = _setup(0)
    assert latest_checkpoint(tmp_path) is None
    _save(tmp_path, 2, model, opt, sched)
    _save(tmp_path, 4, model, opt, sched)
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(tmp_path) == root / "step_00000004"
    # Killed between renaming step 6 into place and updating 'latest': step 6 is complete and newer.
    _save(tmp_path, 6, model, opt, sched)
    (root / "latest").write_text("step_00000004\n")
    assert latest_checkpoint(tmp_path) == root / "step_00000006"
    (root / "latest").unlink()
    assert latest_checkpoint(tmp_path) == root / "step_00000006"
    # A half-written staging folder is never picked, and the next save removes it.
    torn = staging_folder(tmp_path, 8)
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == root / "step_00000006"
    _save(tmp_path, 10, model, opt, sched)
    assert not torn.exists()
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000006", "step_00000010"]  # keep=2
    assert json.loads((root / "step_00000010" / "state.json").read_text())["world"] == 1
