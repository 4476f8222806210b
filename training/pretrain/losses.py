"""ConST-CL losses (official ``CC/losses/losses.py``), with negatives from every process.

* :func:`global_contrastive_loss` — SimCLR NT-Xent on the global embeddings, τ 0.1; the two directions are
  *summed* (official).
* :func:`local_contrastive_loss` — the contextual local loss, τ 0.2: each reconstructed region of view a is
  pulled to the region of view b that is most similar in the *raw* ROI features (argmax of ``inst_a · inst_bᵀ``),
  and pushed from every target region of all other clips of the global batch; the mean of both directions.

Inputs are computed in float32 whatever the autocast dtype. Cross-process negatives use a differentiable
all-gather, so targets, positives and negatives all get gradients (no stop-gradient anywhere, as official).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.distributed import gather_with_grad

_LARGE = 1e9


def global_contrastive_loss(embeddings: torch.Tensor, temperature: float = 0.1) -> dict[str, torch.Tensor]:
    """NT-Xent on ``embeddings [2B, C]`` (view a = first B rows) -> ``loss``, ``accuracy``, ``entropy``."""
    z1, z2 = F.normalize(embeddings.float(), dim=-1).chunk(2)
    b = z1.shape[0]
    z1_all, offset = gather_with_grad(z1)
    z2_all, _ = gather_with_grad(z2)
    labels = torch.arange(b, device=z1.device) + offset
    self_mask = F.one_hot(labels, z1_all.shape[0]).to(z1.dtype) * _LARGE
    ab = z1 @ z2_all.T / temperature
    aa = z1 @ z1_all.T / temperature - self_mask
    ba = z2 @ z1_all.T / temperature
    bb = z2 @ z2_all.T / temperature - self_mask
    loss = F.cross_entropy(torch.cat([ab, aa], 1), labels) + F.cross_entropy(torch.cat([ba, bb], 1), labels)
    with torch.no_grad():
        prob = ab.softmax(-1)
        entropy = -(prob * (prob + 1e-8).log()).sum(-1).mean()
        accuracy = (ab.argmax(-1) == labels).float().mean()
    return {"loss": loss, "accuracy": accuracy, "entropy": entropy}


def _direction(pred: torch.Tensor, target: torch.Tensor, positive: torch.Tensor, mask: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """One direction: ``pred``, ``target [b, n, c]`` (normalised), ``positive [b, n]`` indices into the own clip's
    targets, ``mask [b, n]`` valid queries -> mean loss over valid queries."""
    b, n, _ = pred.shape
    target_all, offset = gather_with_grad(target)
    own = F.one_hot(torch.arange(b, device=pred.device) + offset, target_all.shape[0]).to(pred.dtype)
    negatives = torch.einsum("ijc,pqc->ijpq", pred, target_all) / temperature
    negatives = negatives - own[:, None, :, None] * _LARGE  # all regions of the own clip are not negatives
    matched = torch.gather(target, 1, positive[..., None].expand(-1, -1, target.shape[-1]))
    pos = (pred * matched).sum(-1) / temperature  # [b, n]
    logits = torch.cat([pos.reshape(b * n, 1), negatives.reshape(b * n, -1)], 1)
    per_query = (torch.logsumexp(logits, 1) - pos.reshape(-1)) * mask.reshape(-1)
    count = mask.sum()
    return per_query.sum() / count if count > 0 else per_query.sum() * 0.0


def local_contrastive_loss(inst_a: torch.Tensor, inst_b: torch.Tensor, inst_a2b: torch.Tensor,
                           inst_b2a: torch.Tensor, target_a: torch.Tensor | None = None,
                           target_b: torch.Tensor | None = None, temperature: float = 0.2,
                           masks_a: torch.Tensor | None = None,
                           masks_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Contextual local loss on ``[B, N, C]`` region tensors -> ``loss`` (mean of ``a2b`` and ``b2a``) and stats.

    ``inst_a``/``inst_b``: raw ROI features (they define the positive matching); ``inst_a2b``/``inst_b2a``:
    reconstructions; ``target_b``/``target_a``: what ``inst_a2b``/``inst_b2a`` are contrasted with (default the
    raw ROI features, as ConST-CL; the MLP projections for context length 0). ``masks_*`` ``[B, N]`` bool mark
    valid query regions (default all valid).
    """
    inst_a, inst_b = F.normalize(inst_a.float(), dim=-1), F.normalize(inst_b.float(), dim=-1)
    target_a = inst_a if target_a is None else F.normalize(target_a.float(), dim=-1)
    target_b = inst_b if target_b is None else F.normalize(target_b.float(), dim=-1)
    a2b, b2a = F.normalize(inst_a2b.float(), dim=-1), F.normalize(inst_b2a.float(), dim=-1)
    b, n = inst_a.shape[:2]
    ones = torch.ones(b, n, device=inst_a.device)
    masks_a = ones if masks_a is None else masks_a.to(ones.dtype)
    masks_b = ones if masks_b is None else masks_b.to(ones.dtype)
    with torch.no_grad():
        similarity = torch.einsum("ijc,ikc->ijk", inst_a, inst_b)
        match_a2b = similarity.argmax(2)  # region j of a -> region of b
        match_b2a = similarity.argmax(1)  # region k of b -> region of a
    loss_a2b = _direction(a2b, target_b, match_a2b, masks_a, temperature)
    loss_b2a = _direction(b2a, target_a, match_b2a, masks_b, temperature)
    return {"loss": 0.5 * (loss_a2b + loss_b2a), "a2b": loss_a2b.detach(), "b2a": loss_b2a.detach()}
