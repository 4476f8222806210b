"""One training step on a real data batch for the model variants and data options the end-to-end runs do not use:
context length 0 (vanilla region contrast), proposal boxes, non-centre key frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data.videos import VideoEntry, VideoIndex
from training.pretrain.config import cpu_smoke
from training.pretrain.dataset import PretrainDataset, views_first
from training.pretrain.learner import build_pretrain_model
from training.pretrain.losses import global_contrastive_loss, local_contrastive_loss

from .conftest import SHARED

VIDEOS = SHARED / "data" / "videos"


@pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"real videos not found at {VIDEOS} (../shared/data)")
@pytest.mark.parametrize(("context_length", "boxes", "key_frames"),
                         [(0, "felzenszwalb", "random"), (3, "slic", "nearest")])
def test_one_step_on_real_data(context_length, boxes, key_frames):
    cfg = cpu_smoke().replace([f"model.context_length={context_length}", f"boxes.method={boxes}",
                               "boxes.num_boxes=16", f"data.key_frames={key_frames}"])
    index = VideoIndex([VideoEntry(str(VIDEOS / "bikes.mp4"), 250), VideoEntry(str(VIDEOS / "tree.avi"), 68)], {})
    dataset = PretrainDataset(index, cfg, temporal_stride=2)
    samples = [dataset[(p, p % 2)] for p in range(2)]
    clips, box_tensor, keys = views_first({k: torch.stack([s[k] for s in samples]) for k in samples[0]})
    assert box_tensor.shape == (4, 16, 4) and keys.min() >= 0 and keys.max() < 4
    if key_frames == "random":
        assert len(set(keys.tolist())) > 1

    model = build_pretrain_model(cfg)
    assert model.config.region_head.context_length == context_length
    assert hasattr(model.region_head, "mlp") == (context_length == 0)
    out = model(clips, box_tensor, keys)
    if context_length == 0:  # vanilla: both views' projections are the targets (not the raw ROI features)
        assert torch.equal(out["target_a"], out["inst_a2b"]) and torch.equal(out["target_b"], out["inst_b2a"])
    glob = global_contrastive_loss(out["global_embeddings"])["loss"]
    local = local_contrastive_loss(out["inst_a"], out["inst_b"], out["inst_a2b"], out["inst_b2a"], out["target_a"],
                                   out["target_b"], 0.2)["loss"]
    (glob + cfg.loss.local_weight * local).backward()
    assert np.isfinite(glob.item()) and np.isfinite(local.item())
    head_grads = [p.grad for p in model.region_head.parameters()]
    assert all(g is not None for g in head_grads) and sum(g.abs().sum() for g in head_grads) > 0
