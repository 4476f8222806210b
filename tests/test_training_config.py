"""Pretraining config presets/overrides, optimizer parameter groups, LR schedule and gradient scaling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from constcl_zoo import load
from training.engine import ConfigError
from training.engine.optim import (
    build_optimizer,
    build_scheduler,
    effective_weight_decay,
    loss_scale,
    lr_at,
    param_groups,
)
from training.pretrain.config import PRESETS, PretrainConfig, cpu_smoke, get_preset, paper_k400


def test_presets_and_overrides_round_trip(tmp_path):
    assert set(PRESETS) == {"paper_k400", "cpu_smoke", "cpu_real"}
    real = get_preset("cpu_real")  # the shipped default's recipe: real video, 112 px, frame cache, no colour jitter
    assert (real.data.crop_size, real.data.frame_cache, real.augment.jitter_p, real.augment.grayscale_p) == \
        (112, "frame_cache", 0.0, 0.0)
    paper = paper_k400()
    assert (paper.data.batch_size, paper.optim.lr, paper.run.steps, paper.data.num_frames) == (1024, 40.96, 100_000, 16)
    assert (paper.loss.global_temperature, paper.loss.local_temperature, paper.loss.local_weight) == (0.1, 0.2, 0.001)
    cfg = cpu_smoke().replace(["optim.lr=0.25", "data.batch_size=8", "boxes.method=slic", "augment.blur_p=[0.5,0.5]",
                               "data.videos=/some/dir", "loss.local_weight=0.01"])
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.boxes.method, cfg.augment.blur_p) == (0.25, 8, "slic", (0.5, 0.5))
    cfg.save(tmp_path / "config.json")
    assert PretrainConfig.load(tmp_path / "config.json") == cfg
    with pytest.raises(ValueError, match="unknown field 'optim.lrr'"):
        cfg.replace(["optim.lrr=1"])
    with pytest.raises(ValueError, match="unknown section"):
        cfg.replace(["optimizer.lr=1"])
    with pytest.raises(ValueError, match="not one of"):
        cfg.replace(["boxes.method=sift"])
    with pytest.raises(ConfigError, match="expected int"):
        cfg.replace(["data.batch_size=big"])
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("paper")


@pytest.mark.parametrize(("override", "message"), [
    ("data.batch_size=0", "config data.batch_size=0: must be >= 1"),
    ("data.num_workers=-1", "config data.num_workers=-1: must be >= 0"),
    ("augment.crop_area=[0.5,1.2]",
     r"config augment.crop_area=\[0.5, 1.2\]: must be \[low, high\] with 0 < low <= high <= 1"),
    ("augment.blur_p=[1.0,1.5]", r"config augment.blur_p=\[1.0, 1.5\]: must be in \[0, 1\]"),
    ("boxes.min_size=1.0", r"config boxes.min_size=1.0: must be in \[0, 1\)"),
    ("loss.local_temperature=0", "config loss.local_temperature=0.0: must be a positive number"),
    ("loss.local_weight=-1", "config loss.local_weight=-1.0: must be >= 0"),
    ("model.context_length=-2", "config model.context_length=-2: must be >= -1"),
    ("optim.momentum=1", r"config optim.momentum=1.0: must be in \[0, 1\)"),
    ("run.threads=-1", "config run.threads=-1: must be >= 0"),
    ("optim.warmup_steps=40", "config optim.warmup_steps=40: must be >= 0 and below run.steps=40"),
    ("boxes.method=detector", "config boxes.detector_dir='': boxes.method=detector needs"),
])
def test_every_field_is_checked_by_the_rule_declared_with_its_type(override, message):
    """The engine checks each section's fields by the rules their types declare (``Annotated[int, AtLeast(1)]``);
    a trainer's validate() adds only what relates fields."""
    with pytest.raises(ConfigError, match=message):
        cpu_smoke().replace([override])


def test_a_literal_field_is_checked_when_the_config_is_built_in_code():
    from dataclasses import replace

    cfg = cpu_smoke()
    with pytest.raises(ConfigError, match=r"config boxes.method='sift': must be one of \['random'"):
        replace(cfg, boxes=replace(cfg.boxes, method="sift")).validate()


def test_weight_decay_only_on_conv_and_linear_kernels():
    model = load("constcl_r3d14_w16", branch="full", pretrained=False)
    groups = param_groups(model, 1e-6)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    other = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 1e-6 and groups[1]["weight_decay"] == 0.0
    assert len(decayed) + len(other) == len(names)
    modules = dict(model.named_modules())
    for n in decayed:
        assert n.endswith(".weight") and isinstance(modules[n[:-7]], (torch.nn.Conv3d, torch.nn.Linear)), n
    for n in other:
        assert n.endswith(".bias") or not isinstance(modules[n.rsplit(".", 1)[0]], (torch.nn.Conv3d, torch.nn.Linear))
    assert "backbone.stem.conv.weight" in decayed and "backbone.stem.bn.weight" in other
    assert any("norm" in n for n in other) and any(n.endswith("q.bias") for n in other)


def test_lr_schedule_warmup_then_cosine():
    base, warm, total = 40.96, 2500, 200_000
    assert lr_at(0, base, warm, total) == 0.0
    assert lr_at(2500, base, warm, total) == pytest.approx(40.944, abs=1e-3)  # verified on the official code
    assert lr_at(1250, base, warm, total) == pytest.approx(lr_at(2500, base, warm, total) / 2)
    assert lr_at(total, base, warm, total) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(100_000 + 2500, base, warm, total) < base / 2
    values = [lr_at(s, 1.0, 10, 100) for s in range(101)]
    assert all(b > a for a, b in itertools.pairwise(values[:11]))
    assert all(b <= a for a, b in itertools.pairwise(values[10:]))
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, 1.0, 0.9, False, 0.0)
    sched = build_scheduler(opt, 1.0, 10, 100)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(values[:12])


def test_summed_versus_averaged_gradients():
    # 'mean': gradient of the mean over all micro-batches of all processes; 'sum': the official per-replica sum.
    assert loss_scale("mean", world=4, accum_steps=2) == 0.5
    assert loss_scale("sum", world=4, accum_steps=2) == 4.0
    assert effective_weight_decay(1e-6, "sum", 4, 2) == pytest.approx(8e-6)
    assert effective_weight_decay(1e-6, "mean", 4, 2) == 1e-6
    with pytest.raises(ValueError):
        loss_scale("max", 1, 1)
    # Accumulating 'mean'-scaled micro-batch gradients equals the gradient of the whole batch's mean loss.
    w = torch.nn.Parameter(torch.randn(3))
    x = torch.randn(8, 3)
    (x @ w).square().mean().backward()
    whole = w.grad.clone()
    w.grad = None
    for part in x.chunk(2):
        ((part @ w).square().mean() * loss_scale("mean", 1, 2)).backward()
    torch.testing.assert_close(w.grad, whole)
    assert math.isclose(loss_scale("sum", 1, 1), 1.0)
