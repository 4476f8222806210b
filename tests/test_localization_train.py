"""The localization trainer on the shared engine: a synthetic AVA-format set, the exported checkpoint, resume, the
CLI, and issue 11's must-show: the trained head's frame-mAP clearly above a random-init head's."""

from __future__ import annotations

import json
import math

import pytest

from constcl_zoo import load
from training.__main__ import main as training_main
from training.engine import ConfigError, read_jsonl
from training.engine.run import seed_everything
from training.tasks.localization.config import LocalizationConfig, cpu_small
from training.tasks.localization.learner import LocalizationLearner, build_localizer
from training.tasks.localization.synthetic import SyntheticSpec, generate

# Motion-defined actions need a temporal signal the random encoder must learn: at 60 px/s in 160x120 frames the
# people mostly grow / shrink and move left / right (vertical moves rarely fit the frame), 8-frame clips.
SPEC = SyntheticSpec(num_videos=30, val_videos=6, seconds=8, speed=60.0, seed=1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("loc") / "synth", SPEC)


def test_resume_continues_and_cli_writes_the_checkpoint(synth, tmp_path, capsys) -> None:
    """`python -m training train-localizer`: a short run, then --resume to more steps; the second run starts
    from the first's checkpoint (not from step 0) and the exported model is the localizer."""
    out = tmp_path / "run"
    base = ["train-localizer", "--config", "cpu_small", "--data", str(synth), "--out", str(out),
            "-o", "model.short_side=32", "-o", "data.batch_size=2", "-o", "optim.warmup_steps=1",
            "-o", "run.checkpoint_every=2", "-o", "run.log_every=1"]
    assert training_main([*base, "-o", "run.steps=2"]) == 0
    assert "localization checkpoint written to" in capsys.readouterr().out
    assert training_main(["train-localizer", "--out", str(out), "--resume", "-o", "run.steps=3"]) == 0
    steps = [row["step"] for row in read_jsonl(out / "metrics.jsonl")]
    assert steps == [1, 2, 3]
    assert "resumed from" in (out / "train.log").read_text()
    assert [row["step"] for row in read_jsonl(out / "eval.jsonl")] == [2, 3]
    model = load(out / "model")
    assert model.config.task == "localization" and model.labels == ("move left", "move right", "move up",
                                                                     "move down", "grow", "shrink")
    assert json.loads((out / "config.json").read_text())["run"]["steps"] == 3


def test_config_errors_name_the_field(tmp_path) -> None:
    with pytest.raises(ConfigError, match="model.dropout"):
        cpu_small().replace(["model.dropout=1.5"])
    with pytest.raises(ConfigError, match="data.root"):
        LocalizationLearner(cpu_small())
    with pytest.raises(ConfigError, match="data.train_csv"):
        LocalizationLearner(cpu_small().replace([f"data.root={tmp_path}"]))
    assert training_main(["train-localizer", "--config", "cpu_small", "--out", str(tmp_path / "r")]) == 2


# Trained vs random init needs a val split large enough for a stable frame-mAP: SPEC's 6 val videos hold ~44
# ground-truth rows (4 classes), too few (measured +0.05 on them). 44 train / 16 val videos at 60 px/s: ~115-130 val
# rows of 4 classes (left, right, grow, shrink; vertical moves rarely fit the frame at this speed, so up / down have
# no val ground truth and are left out of the mean, as the official evaluator does). Measured with this test's
# recipe (cpu_small, 250 steps, lr 0.1): trained 0.365 vs random-init 0.223 (+0.142) on seed 1 (0.372 with
# run.threads=1), 0.416 vs 0.234 (+0.182) on seed 2 (threads=1); at 40 px/s (all 6 classes) only +0.074 / +0.075.
# MARGIN is about half the smallest measured gap on this spec: a failure means learning broke, not noise across
# machines and thread counts.
LEARN_SPEC = SyntheticSpec(num_videos=60, val_videos=16, seconds=8, speed=60.0, seed=1)
MARGIN = 0.08


@pytest.mark.slow
def test_trained_head_beats_random_init(tmp_path, capsys) -> None:
    """`python -m training train-localizer --config cpu_small` on a synthetic set, then the trainer's own validation
    (official frame-mAP@0.5 on the val split with ground-truth boxes) of the exported checkpoint and of the same
    architecture at its initial weights (the engine's seeding before ``build_model``): trained >= random + MARGIN."""
    data = generate(tmp_path / "synth", LEARN_SPEC)
    out = tmp_path / "run"
    assert training_main(["train-localizer", "--config", "cpu_small", "--data", str(data), "--out", str(out)]) == 0
    assert "localization checkpoint written to" in capsys.readouterr().out
    cfg = LocalizationConfig.load(out / "config.json")
    task = LocalizationLearner(cfg)
    trained = task.validate(load(out / "model"))
    # the exported checkpoint is the model the trainer validated after its last step
    assert trained.mean_ap == pytest.approx(read_jsonl(out / "eval.jsonl")[-1]["val_frame_mAP"], abs=1e-6)

    seed_everything(cfg.run.seed)  # as the engine does before build_model: the run's initial encoder and head
    random_init = task.validate(build_localizer(cfg, task.labels))
    # not vacuous: every evaluated class has ground truth, enough rows for a stable mean, real numbers
    assert len(random_init.per_class) >= 4 and sorted(random_init.per_class) == sorted(trained.per_class)
    assert sum(random_init.num_gt.values()) >= 100 and min(random_init.num_gt.values()) >= 10
    assert math.isfinite(random_init.mean_ap) and 0.0 < random_init.mean_ap < 1.0
    assert random_init.num_gt == trained.num_gt
    report = (f"trained frame-mAP {trained.mean_ap:.4f} vs random-init {random_init.mean_ap:.4f} (margin {MARGIN}); "
              f"per class trained {trained.per_class}, random {random_init.per_class}")
    print(report)
    assert trained.mean_ap >= random_init.mean_ap + MARGIN, report
