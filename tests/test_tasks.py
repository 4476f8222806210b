"""Task models (constcl_zoo.tasks): task checkpoints, load(task=...), the recognition classifier."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from constcl_zoo import CheckpointMismatchError, ChecksumError, ConstclZooError, load
from constcl_zoo.tasks import list_tasks, task_class
from constcl_zoo.tasks.base import TaskConfigError
from constcl_zoo.tasks.recognition import RecognitionHeadConfig, VideoClassifier

ARCH = "constcl_r3d14_w16"
LABELS = ["walk", "run", "jump"]


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def classifier() -> VideoClassifier:
    return load(ARCH, task="recognition", labels=LABELS, pretrained=False, seed=3)


def test_task_registry_is_lazy() -> None:
    code = "import sys, constcl_zoo; print('constcl_zoo.tasks.recognition' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert "recognition" in list_tasks()
    assert task_class("recognition") is VideoClassifier
    with pytest.raises(ConstclZooError, match="unknown task 'nope'"):
        task_class("nope")


def test_fresh_head_on_encoder(classifier: VideoClassifier, clip: torch.Tensor) -> None:
    encoder = load(ARCH, pretrained=False, seed=3)
    assert classifier.labels == tuple(LABELS) and classifier.config.encoder_branch == "global"
    for key, value in encoder.state_dict().items():  # the encoder is exactly load(arch, pretrained=False)
        assert torch.equal(classifier.encoder.state_dict()[key], value), key
    with torch.inference_mode():
        logits = classifier(clip)
        features = classifier.forward_features(clip)
        assert torch.allclose(features, encoder(clip))
        assert torch.allclose(classifier.forward_head(features), logits)
    assert logits.shape == (2, 3)
    again = load(ARCH, task="recognition", labels=LABELS, pretrained=False, seed=3)
    other = load(ARCH, task="recognition", labels=LABELS, pretrained=False, seed=4)
    assert torch.equal(again.head.fc.weight, classifier.head.fc.weight)
    assert not torch.equal(other.head.fc.weight, classifier.head.fc.weight)
    assert float(classifier.head.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.2)


def test_task_checkpoint_round_trip(classifier: VideoClassifier, clip: torch.Tensor, tmp_path) -> None:
    classifier.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["task"] == "recognition" and config["labels"] == LABELS
    assert config["encoder"]["arch"] == ARCH and config["encoder_branch"] == "global"
    assert config["head"] == {"normalize_features": False, "dropout": 0.0}
    assert set(load_file(tmp_path / "model.safetensors")) == set(classifier.state_dict()) - {
        k for k in classifier.state_dict() if k.endswith("num_batches_tracked")}
    loaded = load(tmp_path)
    assert isinstance(loaded, VideoClassifier) and loaded.labels == tuple(LABELS)
    assert not loaded.training
    with torch.inference_mode():
        assert torch.equal(loaded(clip), classifier.eval()(clip))
    assert load(tmp_path, task="recognition").labels == tuple(LABELS)


def test_task_checkpoint_refusals(classifier: VideoClassifier, tmp_path) -> None:
    classifier.save_pretrained(tmp_path)
    with pytest.raises(ConstclZooError, match="unknown task 'other'"):
        load(tmp_path, task="other")
    with pytest.raises(TaskConfigError, match="branch"):
        load(tmp_path, branch="region")
    with pytest.raises(TaskConfigError, match="reset_classifier"):
        load(tmp_path, labels=["a"])
    # strict keys: a head of the wrong size, and a missing head key, are listed by name
    weights = load_file(tmp_path / "model.safetensors")
    bad = dict(weights, **{"head.fc.weight": torch.zeros(5, weights["head.fc.weight"].shape[1])})
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    save_file(bad, bad_dir / "model.safetensors")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("weights")
    (bad_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match=r"head\.fc\.weight: file \[5, 512\], model \[3, 512\]"):
        load(bad_dir)
    del bad["head.fc.weight"]
    save_file(bad, bad_dir / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\):\n    head\.fc\.weight"):
        load(bad_dir)
    # the recorded sha256 is checked
    raw = bytearray((tmp_path / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ChecksumError):
        load(tmp_path)


def test_branch_means_the_encoder_branch_description_names_the_model(classifier: VideoClassifier) -> None:
    assert classifier.encoder.branch == classifier.config.encoder_branch == "global"
    assert classifier.description == "recognition model on the global branch"
    assert classifier.encoder.description == f"global branch of {classifier.config.encoder.arch}"
    with pytest.warns(DeprecationWarning, match="TaskModel.description"):
        assert classifier.branch == "recognition on global"  # the old display string, kept while deprecated


def test_config_errors() -> None:
    with pytest.raises(TaskConfigError, match="needs labels"):
        load(ARCH, task="recognition", pretrained=False)
    with pytest.raises(TaskConfigError, match="repeated: \\['a'\\]"):
        load(ARCH, task="recognition", labels=["a", "b", "a"], pretrained=False)
    with pytest.raises(TaskConfigError, match="pass task="):
        load(ARCH, labels=["a"], pretrained=False)
    with pytest.raises(TaskConfigError, match="dropout"):
        load(ARCH, task="recognition", labels=["a"], head={"dropout": 1.5}, pretrained=False)
    with pytest.raises(TaskConfigError, match="unknown field"):
        load(ARCH, task="recognition", labels=["a"], head={"drop": 0.1}, pretrained=False)
    with pytest.raises(TaskConfigError, match="'full'"):
        load(ARCH, task="recognition", labels=["a"], branch="full", pretrained=False)


def test_region_branch_and_head_options(clip: torch.Tensor) -> None:
    clf = load(ARCH, task="recognition", labels=["a", "b"], branch="region", pretrained=False,
               head=RecognitionHeadConfig(normalize_features=True))
    with torch.inference_mode():
        features = clf.forward_features(clip)
        pre = clf.forward_head(features, pre_logits=True)
    assert features.shape == (2, 512)
    assert torch.allclose(pre.norm(dim=-1), torch.ones(2), atol=1e-5)
    clf.reset_classifier(["x", "y", "z", "w"])
    assert clf.num_classes == 4 and clf.config.labels == ("x", "y", "z", "w")
    with torch.inference_mode():
        assert clf(clip).shape == (2, 4)


def test_classify_frames(classifier: VideoClassifier) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (40, 72, 96, 3), dtype=np.uint8)
    result = classifier.classify(frames, fps=25.0, top_k=2, precision="fp32")
    encoder_windows = classifier.encoder.embed(frames, fps=25.0, precision="fp32")
    assert result.window_probs.shape == (len(encoder_windows), 3)
    np.testing.assert_allclose(result.window_probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(result.probs, result.window_probs.mean(axis=0), rtol=1e-6)
    assert [label for label, _ in result.top] == [LABELS[i] for i in np.argsort(-result.probs)[:2]]
    with torch.inference_mode():  # each window's probabilities are the model's softmax of that window's clip
        logits = classifier.forward_head(encoder_windows.embeddings)
    np.testing.assert_allclose(result.window_probs, logits.softmax(-1).numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(TaskConfigError, match="top_k"):
        classifier.classify(frames, fps=25.0, top_k=0)


def test_freeze_encoder_trains_the_head_only(clip: torch.Tensor) -> None:
    """The one way every trainer freezes an encoder: no gradients through it, and eval mode (BN statistics as
    loaded) whatever train() is called with; unfreezing gives the whole model back."""
    model = load(ARCH, task="recognition", labels=["a", "b"], pretrained=False, seed=0)
    assert model.freeze_encoder() is model and model.encoder_frozen
    model.train()
    assert model.training and model.head.training and not model.encoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    stats = {k: v.clone() for k, v in model.encoder.state_dict().items() if "running" in k}
    model(clip).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in stats.items())  # BN statistics untouched
    model.eval().train()
    assert not model.encoder.training
    model.freeze_encoder(False)
    assert model.encoder.training and all(p.requires_grad for p in model.encoder.parameters())
