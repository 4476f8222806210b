"""Linear probe on cached features: train a linear classifier, score videos with scores averaged over views.

Training uses every view of every training video as one sample. Features are optionally L2-normalised, then
standardised with the training set's per-dimension mean and standard deviation (which makes one weight decay
and one optimiser setting work across encoders whose feature scales differ by orders of magnitude); the
standardisation is folded into the saved head, so the head applies to the (L2-normalised) raw features:
``logits = weight @ f + bias`` with ``weight`` ``[C, D]`` and ``bias`` ``[C]``.

Objective: mean cross-entropy + ``weight_decay / 2 * ||weight||^2``. ``lbfgs`` (default) minimises it full-batch
with a strong-Wolfe line search: deterministic, no learning rate to tune, seconds for UCF101-sized sets. ``adam``
is mini-batch (seeded shuffles) for feature sets too large for one batch on the device.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from constcl_zoo import GlobalEncoder
from constcl_zoo.fileio import atomic_write
from constcl_zoo.tasks.recognition import ClassifierHead, RecognitionHeadConfig, VideoClassifier

from .config import ProbeError, ProbeSettings
from .features import SplitFeatures

HEAD_FILE = "head.safetensors"
PROBE_FILE = "probe.json"


@dataclass
class LinearHead:
    """``logits = weight @ f + bias`` on a view's feature ``f`` (L2-normalised first if ``l2_normalize``): the
    package's recognition head (:class:`~constcl_zoo.tasks.recognition.ClassifierHead`) with these weights."""

    weight: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C]
    classes: tuple[str, ...]
    l2_normalize: bool

    def module(self) -> ClassifierHead:
        """The head as the package's module (eval mode)."""
        head = ClassifierHead(self.weight.shape[1], self.weight.shape[0],
                              RecognitionHeadConfig(normalize_features=self.l2_normalize))
        head.load_state_dict({"fc.weight": self.weight, "fc.bias": self.bias})
        return head.eval()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., D] -> [..., C]``."""
        if features.shape[-1] != self.weight.shape[1]:
            raise ProbeError(f"features have {features.shape[-1]} dims, the head takes {self.weight.shape[1]}")
        with torch.no_grad():
            return self.module()(features.float())

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities of videos ``[N, V, D] -> [N, C]``: softmax per view, averaged over the V views."""
        return self.logits(features).softmax(dim=-1).mean(dim=1)

    def to_classifier(self, encoder: GlobalEncoder, provenance: dict[str, Any] | None = None) -> VideoClassifier:
        """A :class:`~constcl_zoo.tasks.recognition.VideoClassifier`: ``encoder`` with this head; its
        ``save_pretrained`` writes the task checkpoint ``load()`` reads."""
        classifier = VideoClassifier.from_encoder(encoder, labels=self.classes,
                                                  head=RecognitionHeadConfig(normalize_features=self.l2_normalize))
        classifier.head.load_state_dict(self.module().state_dict())
        if provenance:
            classifier.config = classifier.config.replace(
                provenance={**classifier.config.provenance, **provenance})
        return classifier


def _loss(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, wd: float) -> torch.Tensor:
    return F.cross_entropy(x @ weight.T + bias, y) + 0.5 * wd * weight.square().sum()


def train_probe(train: SplitFeatures, settings: ProbeSettings = ProbeSettings(),
                device: str | torch.device = "cpu") -> tuple[LinearHead, dict[str, Any]]:
    """Fit the linear head on every view of ``train``; returns it and ``{"loss", "iterations", "seconds"}``."""
    n, v, d = train.features.shape
    c = len(train.classes)
    if n == 0:
        raise ProbeError(f"split {train.name!r} has no features to train on")
    started = time.perf_counter()
    x = train.features.reshape(n * v, d).float().to(device)
    y = train.labels.repeat_interleave(v).to(device)
    if settings.l2_normalize:
        x = F.normalize(x, dim=-1)
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.ones_like(mean)
    # constant dimensions (dead units): leave unscaled, as a zero std would divide by zero
    scale = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))
    x = (x - mean) / scale
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    weight = torch.zeros(c, d, device=device, requires_grad=True)
    bias = torch.zeros(c, device=device, requires_grad=True)
    iterations = 0
    if settings.optimizer == "lbfgs":
        opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=settings.max_iter, history_size=20,
                                tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = _loss(x, y, weight, bias, settings.weight_decay)
            loss.backward()
            return loss

        opt.step(closure)
        iterations = int(opt.state[weight].get("n_iter", 0))
    else:
        opt = torch.optim.Adam([weight, bias], lr=settings.lr)
        for _ in range(settings.epochs):
            order = torch.randperm(x.shape[0], generator=generator).to(device)
            for batch in order.split(settings.batch_size):
                opt.zero_grad()
                _loss(x[batch], y[batch], weight, bias, settings.weight_decay).backward()
                opt.step()
                iterations += 1
    with torch.no_grad():
        final = float(_loss(x, y, weight, bias, settings.weight_decay))
        folded = (weight / scale).cpu()  # the standardisation folded into the head
        head = LinearHead(folded.contiguous(), (bias.cpu() - folded @ mean.cpu()).contiguous(), tuple(train.classes),
                          settings.l2_normalize)
    if not math.isfinite(final):
        raise ProbeError(f"the probe diverged (loss {final}); lower --lr or use the lbfgs optimizer")
    return head, {"loss": final, "iterations": iterations, "seconds": round(time.perf_counter() - started, 3)}


def save_head(head: LinearHead, folder: str | os.PathLike, info: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``folder/head.safetensors`` (``weight`` ``[C, D]``, ``bias`` ``[C]``) and ``folder/probe.json``
    (``info`` plus the labels and how to apply the head), both atomically."""
    folder = Path(folder)
    meta = {"classes": json.dumps(list(head.classes)), "l2_normalize": json.dumps(head.l2_normalize)}
    tensors = {"weight": head.weight.contiguous(), "bias": head.bias.contiguous()}
    head_path = atomic_write(folder / HEAD_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    record = {"task": "recognition", "labels": list(head.classes),
              "head": {"file": HEAD_FILE, "num_classes": len(head.classes), "in_features": head.weight.shape[1],
                       "l2_normalize": head.l2_normalize,
                       "applies_to": "the pooled global-branch feature of one view, L2-normalised first when "
                                     "l2_normalize; logits = weight @ feature + bias",
                       "video_score": "softmax of each view's logits, averaged over the views"},
              **info}
    probe_path = atomic_write(folder / PROBE_FILE, json.dumps(record, indent=2) + "\n")
    return head_path, probe_path


def load_head(folder: str | os.PathLike) -> LinearHead:
    """Read a head written by :func:`save_head`."""
    path = Path(folder) / HEAD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {HEAD_FILE} in {folder} (written by the probe command)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    return LinearHead(weight, bias, tuple(json.loads(meta["classes"])), bool(json.loads(meta["l2_normalize"])))

