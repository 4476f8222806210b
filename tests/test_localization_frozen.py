"""``model.freeze_encoder``: the localization trainer changes the head only — encoder weights and BN statistics
stay exactly those it started from, also across the evaluation the engine runs."""

from __future__ import annotations

import torch

from constcl_zoo import load
from training.__main__ import main as training_main
from training.tasks.localization.synthetic import SyntheticSpec, generate


def test_frozen_encoder_trains_only_the_head(tmp_path) -> None:
    data = generate(tmp_path / "synth", SyntheticSpec(num_videos=3, val_videos=1, seconds=3, seed=3))
    out = tmp_path / "run"
    assert training_main(["train-localizer", "--config", "cpu_small", "--data", str(data), "--out", str(out),
                          "-o", "model.freeze_encoder=true", "-o", "model.short_side=32", "-o", "data.batch_size=2",
                          "-o", "optim.warmup_steps=1", "-o", "run.steps=3", "-o", "run.eval_every=1",
                          "-o", "run.checkpoint_every=3"]) == 0
    trained = load(out / "model")
    fresh = load("constcl_r3d14_w16", task="localization", labels=list(trained.labels), pretrained=False, seed=0,
                 head=trained.config.head)
    before, after = fresh.state_dict(), trained.state_dict()
    encoder_keys = [k for k in after if k.startswith("encoder.")]
    head_keys = [k for k in after if k.startswith("head.") and after[k].is_floating_point()]
    assert encoder_keys and head_keys
    assert any("running_mean" in k for k in encoder_keys)
    for k in encoder_keys:
        assert torch.equal(before[k], after[k]), f"{k} changed with a frozen encoder"
    assert any(not torch.equal(before[k], after[k]) for k in head_keys), "the head did not train"


def test_a_run_written_with_the_old_head_only_wrapper_resumes() -> None:
    """Before the localizer froze its encoder itself, a frozen run trained a wrapper (keys ``localizer.*``)."""
    from training.tasks.localization.learner import LocalizationLearner

    weight = torch.zeros(2)
    assert LocalizationLearner.checkpoint_keys(None, {"localizer.head.w": weight, "localizer.encoder.b": weight}) == {
        "head.w": weight, "encoder.b": weight}
    assert LocalizationLearner.checkpoint_keys(None, {"head.w": weight}) == {"head.w": weight}
