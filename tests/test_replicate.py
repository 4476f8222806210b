"""``python -m training replicate`` / ``install-default``: the configuration, the table, and one real end-to-end
run at toy size (every stage through the real commands), its resume, and installing its default model."""

from __future__ import annotations

import json

import pytest

from training.__main__ import main as training_main
from training.engine import ConfigError
from training.replicate.config import VARIANTS, get_preset
from training.replicate.report import mean_std, summarise
from training.replicate.run import pretrain_overrides


def test_config_validation_names_the_field() -> None:
    cfg = get_preset("cpu")
    assert cfg.variants == VARIANTS and len(cfg.seeds) >= 2  # the issue: all four variants, at least 2 seeds
    with pytest.raises(ConfigError, match="variants"):
        cfg.replace(['variants=["random", "moco"]'])
    with pytest.raises(ConfigError, match="seeds"):
        cfg.replace(["seeds=[1, 1]"])
    with pytest.raises(ConfigError, match="evaluation.num_scales"):
        cfg.replace(["evaluation.num_scales=2"])


def test_every_variant_gets_the_same_budget(tmp_path) -> None:
    cfg = get_preset("cpu")

    def as_dict(variant: str) -> dict[str, str]:
        return dict(o.split("=", 1) for o in pretrain_overrides(cfg, variant, 1, tmp_path / "v.txt"))

    runs = {v: as_dict(v) for v in ("cvrl", "constcl", "constcl_ctx0")}
    budget = [k for k in runs["constcl"] if k.startswith(("optim.", "run.", "data."))]
    for v in runs:
        assert {k: runs[v][k] for k in budget} == {k: runs["constcl"][k] for k in budget}, v
    assert runs["cvrl"]["model.arch"] == "cvrl_r3d14_w16" and runs["cvrl"]["loss.local_weight"] == "0.0"
    assert runs["constcl"]["model.context_length"] == str(cfg.pretrain.context_length)
    assert runs["constcl_ctx0"]["model.context_length"] == "0"
    assert runs["constcl"]["run.seed"] == runs["constcl"]["model.init_seed"] == "1"


def test_summary_is_mean_and_sample_std_over_seeds() -> None:
    assert mean_std([1.0]) == (1.0, 0.0)
    m, s = mean_std([0.2, 0.4])
    assert m == pytest.approx(0.3) and s == pytest.approx(0.1414213562)
    results = [{"variant": "cvrl", "seed": 1, "probe_top1": 0.4}, {"variant": "cvrl", "seed": 0, "probe_top1": 0.2},
               {"variant": "random", "seed": 0, "probe_top1": 0.1}]
    table = summarise(results, ("random", "cvrl", "constcl"))
    assert set(table) == {"random", "cvrl"}
    assert table["cvrl"]["seeds"] == [0, 1] and table["cvrl"]["probe_top1"]["values"] == [0.2, 0.4]
    assert table["cvrl"]["probe_top1"]["mean"] == pytest.approx(0.3)


@pytest.mark.slow
def test_smoke_replication_runs_resumes_and_installs(tmp_path, capsys) -> None:
    out = tmp_path / "rep"
    argv = ["replicate", "--preset", "smoke", "--out", str(out), "--vot", "", "--backgrounds", ""]
    assert training_main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert {r["variant"] for r in doc["runs"]} == {"random", "constcl"}
    for r in doc["runs"]:
        for key in ("probe_top1", "track_synth_success", "track_synth_precision", "localization_frame_map"):
            assert 0.0 <= r[key] <= 1.0, (r["variant"], key)
    assert "| random init |" in (out / "results.md").read_text() and (out / "results.png").stat().st_size > 0
    commands = (out / "commands.sh").read_text().splitlines()
    assert any(c.startswith("python -m training pretrain --config cpu_smoke") for c in commands)
    assert (out / "default" / "default.json").is_file()

    # A second run into the same folder is refused; --resume redoes only what is missing.
    assert training_main(argv) == 2
    (out / "runs" / "constcl_seed0" / "result.json").unlink()
    (out / "runs" / "constcl_seed0" / "probe" / "metrics.json").unlink()
    capsys.readouterr()
    assert training_main(["replicate", "--out", str(out), "--resume"]) == 0
    rerun = (out / "commands.sh").read_text().splitlines()[len(commands):]
    assert len(rerun) == 1 and rerun[0].startswith("python -m training probe"), rerun
    again = json.loads((out / "results.json").read_text())
    assert again["table"] == doc["table"]  # the probe is deterministic

    # install-default into a folder: the index's sha256 are the files', every card number from the record.
    from constcl_zoo.checkpoint import sha256_of
    from training.replicate.install import NAMES, model_card, read_calibration

    dest = tmp_path / "models"
    assert training_main(["install-default", str(out), "--to", str(dest)]) == 0
    index = json.loads((dest / "index.json").read_text())
    record = json.loads((dest / index["record"]).read_text())
    for kind, name in NAMES.items():
        entry = next(m for m in index["models"] if m["name"] == name)
        assert entry["sha256"] == sha256_of(dest / name / "model.safetensors")
        assert (dest / name / "README.md").read_text() == model_card(kind, record, read_calibration(dest / name))
    assert index["sample"]["sha256"] == sha256_of(dest / index["sample"]["file"])
