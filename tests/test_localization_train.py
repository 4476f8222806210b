"""The localization trainer on the shared engine: a synthetic AVA-format set, the exported checkpoint, resume and the
CLI. (Issue 11's "trained head clearly above a random-init head" is not asserted yet: measured +0.142 frame-mAP
(0.475 vs 0.333) at 250 steps of cpu_small, short of the +0.15 margin that was set before the run.)"""

from __future__ import annotations

import json

import pytest

from constcl_zoo import load
from training.__main__ import main as training_main
from training.engine import ConfigError, read_jsonl
from training.tasks.localization.config import cpu_small
from training.tasks.localization.synthetic import SyntheticSpec, generate
from training.tasks.localization.task import LocalizationTask

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
        LocalizationTask(cpu_small())
    with pytest.raises(ConfigError, match="data.train_csv"):
        LocalizationTask(cpu_small().replace([f"data.root={tmp_path}"]))
    assert training_main(["train-localizer", "--config", "cpu_small", "--out", str(tmp_path / "r")]) == 2
