"""The linear probe: on synthetic features (exact properties) and on real videos with a random-init encoder."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import load_file

from constcl_zoo import load
from constcl_zoo.tasks.recognition import VideoClassifier
from training.tasks.recognition import features as feats
from training.tasks.recognition.cli import add_probe_parser as add_parser
from training.tasks.recognition.cli import run_probe as run
from training.tasks.recognition.data import folder_split
from training.tasks.recognition.evaluate import compute_metrics
from training.tasks.recognition.features import SplitFeatures, ViewSettings, extract_features, weights_digest
from training.tasks.recognition.probe import LinearHead, ProbeError, ProbeSettings, load_head, save_head, train_probe

from .conftest import TINY
from .recognition_data import make_segments


def _blobs(n_per_class: int, views: int = 2, classes: int = 3, dim: int = 16, seed: int = 0,
           scale: float = 1000.0) -> SplitFeatures:
    """Gaussian blobs far from the origin and on a large scale (standardisation must cope)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[labels][:, None] + torch.randn(len(labels), views, dim, generator=gen)
    x = (x + 50) * scale
    return SplitFeatures("syn", x, labels, tuple(f"v{i}" for i in range(len(labels))),
                         tuple(f"c{i}" for i in range(classes)), (), ViewSettings(clips=views), "fp")


def test_probe_learns_separable_classes_and_the_head_takes_raw_features():
    train, val = _blobs(20), _blobs(10, seed=1)
    for settings in (ProbeSettings(), ProbeSettings(l2_normalize=True),
                     ProbeSettings(optimizer="adam", epochs=60, lr=0.05, batch_size=32)):
        head, info = train_probe(train, settings)
        assert head.weight.shape == (3, 16) and head.bias.shape == (3,)
        assert info["iterations"] > 0 and info["loss"] < 0.5
        m = compute_metrics(head.scores(val.features), val.labels, val.classes)
        assert m["top1"] >= 0.9, (settings, m["top1"])


def test_probe_is_deterministic_and_seeded():
    train = _blobs(10)
    a, _ = train_probe(train, ProbeSettings())
    b, _ = train_probe(train, ProbeSettings())
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    adam = ProbeSettings(optimizer="adam", epochs=3, lr=0.01, batch_size=8)
    c, _ = train_probe(train, adam)
    d, _ = train_probe(train, adam)
    e, _ = train_probe(train, ProbeSettings(optimizer="adam", epochs=3, lr=0.01, batch_size=8, seed=1))
    assert torch.equal(c.weight, d.weight) and not torch.equal(c.weight, e.weight)


def test_l2_normalized_head_ignores_feature_scale():
    head, _ = train_probe(_blobs(10), ProbeSettings(l2_normalize=True))
    x = _blobs(5, seed=3).features
    factor = torch.rand(x.shape[0], x.shape[1], 1) * 10 + 0.1
    torch.testing.assert_close(head.scores(x * factor), head.scores(x))


def test_scores_average_softmax_over_views():
    head = LinearHead(torch.eye(2), torch.zeros(2), ("a", "b"), l2_normalize=False)
    x = torch.tensor([[[4.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # one video, 3 views
    expected = (torch.tensor([4.0, 0.0]).softmax(0) + 2 * torch.tensor([0.0, 1.0]).softmax(0)) / 3
    torch.testing.assert_close(head.scores(x)[0], expected)
    with pytest.raises(ProbeError, match="features have 3 dims, the head takes 2"):
        head.scores(torch.zeros(1, 1, 3))


def test_head_round_trip(tmp_path):
    head, _ = train_probe(_blobs(5), ProbeSettings(l2_normalize=True))
    save_head(head, tmp_path, {"extra": 1})
    again = load_head(tmp_path)
    assert torch.equal(again.weight, head.weight) and again.classes == head.classes and again.l2_normalize
    record = json.loads((tmp_path / "probe.json").read_text())
    assert record["labels"] == ["c0", "c1", "c2"] and record["head"]["in_features"] == 16 and record["extra"] == 1
    assert set(load_file(tmp_path / "head.safetensors")) == {"weight", "bias"}


@pytest.mark.parametrize("bad", [{"optimizer": "sgd"}, {"weight_decay": -1.0}, {"max_iter": 0}, {"lr": 0.0}])
def test_bad_probe_settings(bad):
    with pytest.raises(ProbeError):
        ProbeSettings(**bad)


# -- real videos ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    """5 classes (the source videos) x 8 segments of 8 frames: 25 training, 15 validation videos."""
    return make_segments(tmp_path_factory.mktemp("segments"), segments=8, seg_len=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


def test_random_init_probe_beats_chance(segments, cache):
    """Which source video a segment comes from, from a frozen random-init encoder: chance is 1/5."""
    train_split = folder_split(segments / "train", "train")
    val_split = folder_split(segments / "val", "val", classes=train_split.classes)
    model = load(TINY, pretrained=False, seed=0)
    train = extract_features(model, train_split, ViewSettings(), cache_dir=cache, progress=False)
    val = extract_features(model, val_split, ViewSettings(), cache_dir=cache, progress=False)
    assert train.features.shape == (25, 1, 512) and val.features.shape == (15, 1, 512)
    results = {}
    for l2 in (False, True):
        head, _ = train_probe(train, ProbeSettings(l2_normalize=l2))
        results[l2] = compute_metrics(head.scores(val.features), val.labels, val.classes)["top1"]
    print(f"random-init {TINY} probe top-1 on 15 videos of 5 classes (chance 0.2): "
          f"raw features {results[False]:.3f}, L2-normalised {results[True]:.3f}")
    assert results[False] >= 0.6 and results[True] >= 0.6
    # the labels matter: with the training labels shuffled across classes the probe is near chance
    shuffled = SplitFeatures("train", train.features, train.labels[torch.randperm(25, generator=torch.Generator()
                                                                                  .manual_seed(0))],
                             train.paths, train.classes, (), train.settings, "x")
    head, _ = train_probe(shuffled, ProbeSettings())
    assert compute_metrics(head.scores(val.features), val.labels, val.classes)["top1"] < results[False]


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["probe", *argv])


def test_probe_command_writes_the_run(segments, cache, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["--train", str(segments / "train"), "--val", str(segments / "val"), "--model", TINY, "--random-init",
            "--out", str(out), "--cache-dir", str(cache), "--crops", "3", "--train-crops", "1", "--no-progress"]
    args = _args(argv)
    assert args.func is run and run(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_videos"] == 15 and metrics["top1"] >= 0.6 and len(metrics["confusion_matrix"]) == 5
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "probe.json").read_text())
    assert record["labels"] == ["Megamind", "bigbuckbunny", "bikes", "tree", "vtest"]
    assert record["features"]["val"]["views"] == {"clips": 1, "crops": 3}
    assert record["features"]["train"]["views"] == {"clips": 1, "crops": 1}
    assert record["encoder"]["pretrained"] is False and record["metrics"]["top1"] == metrics["top1"]
    head = load_file(out / "head.safetensors")
    assert head["weight"].shape == (5, 512) and head["bias"].shape == (5,)
    assert "top-1" in capsys.readouterr().out
    # the run exports a task checkpoint that load() reads: the encoder and this head
    classifier = load(out / "checkpoint")
    assert isinstance(classifier, VideoClassifier) and classifier.labels == tuple(record["labels"])
    assert classifier.config.provenance["training"]["metrics"]["top1"] == metrics["top1"]
    x = torch.randn(4, 512, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(classifier.forward_head(x), load_head(out).logits(x))
    reference = load(TINY, pretrained=False, seed=0)
    for key, value in reference.state_dict().items():
        assert torch.equal(classifier.encoder.state_dict()[key], value), key

    # other probe settings reuse the cached features: nothing is decoded
    def no_decoding(*a, **k):
        raise AssertionError("decoded although the features are cached")

    monkeypatch.setattr(feats, "video_views", no_decoding)
    argv2 = [str(tmp_path / "run2") if a == str(out) else a for a in argv]
    assert run(_args([*argv2, "--l2-normalize"])) == 0
    assert json.loads((tmp_path / "run2" / "probe.json").read_text())["settings"]["l2_normalize"] is True


def test_probe_command_defaults_to_the_package_encoder(segments, cache, tmp_path):
    from constcl_zoo.errors import UsageError
    from constcl_zoo.registry import default_model_name

    base = ["--train", str(segments / "train"), "--val", str(segments / "val"), "--cache-dir", str(cache),
            "--no-progress"]
    with pytest.raises(UsageError, match="--random-init needs --model"):
        run(_args([*base, "--random-init", "--out", str(tmp_path / "x")]))
    assert run(_args([*base, "--out", str(tmp_path / "run")])) == 0
    record = json.loads((tmp_path / "run" / "probe.json").read_text())
    assert record["encoder"]["model"] == default_model_name() and record["encoder"]["pretrained"] is True
    assert record["encoder"]["weights_sha256"] == weights_digest(load(default_model_name(), branch="global"))


def test_probe_command_reads_ucf101_split_files(segments, cache, tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    classes = sorted(p.name for p in (segments / "train").iterdir())
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    # the UCF101 layout: every video under one root, the lists say which are for training
    root = tmp_path / "UCF-101"
    train_lines, test_lines = [], []
    for split, lines in (("train", train_lines), ("val", test_lines)):
        for video in sorted((segments / split).rglob("*.mp4")):
            (root / video.parent.name).mkdir(parents=True, exist_ok=True)
            (root / video.parent.name / video.name).symlink_to(video)
            label = f" {classes.index(video.parent.name) + 1}" if split == "train" else ""
            lines.append(f"{video.parent.name}/{video.name}{label}\n")
    (splits / "trainlist01.txt").write_text("".join(train_lines))
    (splits / "testlist01.txt").write_text("".join(test_lines))
    out = tmp_path / "run"
    assert run(_args(["--train", str(root), "--ucf101-splits", str(splits), "--split", "1", "--model", TINY,
                      "--random-init", "--out", str(out), "--cache-dir", str(cache), "--no-progress"])) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_videos"] == 15 and metrics["top1"] >= 0.6
    assert json.loads((out / "probe.json").read_text())["dataset"]["format"] == "ucf101"
