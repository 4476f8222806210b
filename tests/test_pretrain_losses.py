"""ConST-CL losses: the official reference values, an independent loop implementation, and cross-process gathering."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.pretrain.losses import global_contrastive_loss, local_contrastive_loss

from .hub_server import free_port

# The inputs of the official CC/losses/losses_test.py.
_A = [[[1, 2, 3, 4], [5, 6, 7, 8], [-1, -1, -1, -1], [-1, -1, -1, -1]],
      [[-1, -1, -1, -1], [-1, -1, -1, -1], [4, 3, 2, 1], [8, 7, 6, 5]],
      [[1, 2, 3, 4], [5, 6, 7, 8], [4, 3, 2, 1], [8, 7, 6, 5]]]
_B = [[[1.5, 2.5, 3.5, 4.5], [5.5, 6.5, 7.5, 8.5], [-1, -1, -1, -1], [-1, -1, -1, -1]],
      [[-1, -1, -1, -1], [-1, -1, -1, -1], [5.5, 6.5, 7.5, 8.5], [8.5, 7.5, 6.5, 5.5]],
      [[1.5, 2.5, 3.5, 4.5], [4.5, 3.5, 2.5, 1.5], [5.5, 6.5, 7.5, 8.5], [8.5, 7.5, 6.5, 5.5]]]
_MASKS = [[True, True, False, False], [False, False, True, True], [True, True, True, True]]


def test_global_loss_matches_official_reference():
    z1 = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [4, 3, 2, 1], [8, 7, 6, 5]], dtype=torch.float32)
    z2 = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1], [5, 6, 7, 8], [8, 7, 6, 5]], dtype=torch.float32)
    out = global_contrastive_loss(torch.cat([z1, z2]), temperature=0.1)
    assert out["loss"].item() == pytest.approx(4.136947, abs=1e-5)  # official losses_test.py
    assert out["accuracy"].item() == pytest.approx(0.5)


def test_local_loss_matches_official_reference():
    """Value obtained by running the official loss code on losses_test.py's inputs (spec §4)."""
    a, b = torch.tensor(_A, dtype=torch.float32), torch.tensor(_B, dtype=torch.float32)
    masks = torch.tensor(_MASKS)
    out = local_contrastive_loss(a, b, inst_a2b=b, inst_b2a=a, temperature=0.1, masks_a=masks, masks_b=masks)
    assert out["loss"].item() == pytest.approx(1.66981, abs=1e-5)
    assert out["a2b"].item() == pytest.approx(1.73075, abs=1e-5)
    assert out["b2a"].item() == pytest.approx(1.60888, abs=1e-5)


def _loop_global(emb: torch.Tensor, tau: float) -> float:
    """NT-Xent written out element by element (independent of training.losses)."""
    z = [e / e.norm() for e in emb]
    b = len(z) // 2
    total = 0.0
    for first, second in ((z[:b], z[b:]), (z[b:], z[:b])):
        for i in range(b):
            pos = float(first[i] @ second[i]) / tau
            others = [float(first[i] @ second[j]) / tau for j in range(b)] + \
                     [float(first[i] @ first[j]) / tau for j in range(b) if j != i]
            total += (math.log(sum(math.exp(v) for v in others)) - pos) / b
    return total


def _loop_local(a, b, a2b, b2a, ta, tb, tau):
    """The contextual local loss written out with loops (independent of training.losses)."""
    def n(x):
        return x / x.norm()

    bsz, nr = a.shape[:2]
    directions = []
    for pred, target, match in ((a2b, tb, "a2b"), (b2a, ta, "b2a")):
        total = 0.0
        for i in range(bsz):
            for j in range(nr):
                if match == "a2b":
                    sims = [float(n(a[i, j]) @ n(b[i, k])) for k in range(nr)]
                else:
                    sims = [float(n(a[i, k]) @ n(b[i, j])) for k in range(nr)]
                pos = float(n(pred[i, j]) @ n(target[i, max(range(nr), key=lambda k: sims[k])])) / tau
                negs = [float(n(pred[i, j]) @ n(target[p, q])) / tau for p in range(bsz) if p != i for q in range(nr)]
                total += math.log(math.exp(pos) + sum(math.exp(v) for v in negs)) - pos
        directions.append(total / (bsz * nr))
    return 0.5 * sum(directions)


def test_losses_match_loop_implementations():
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(10, 16, generator=gen)
    assert global_contrastive_loss(emb, 0.1)["loss"].item() == pytest.approx(_loop_global(emb, 0.1), rel=1e-5)
    a, b, a2b, b2a, ta, tb = (torch.randn(3, 4, 8, generator=gen) for _ in range(6))
    # ConST-CL: targets are the raw ROI features; context length 0: separate targets (MLP projections).
    got = local_contrastive_loss(a, b, a2b, b2a, temperature=0.2)["loss"].item()
    assert got == pytest.approx(_loop_local(a, b, a2b, b2a, a, b, 0.2), rel=1e-5)
    got = local_contrastive_loss(a, b, a2b, b2a, ta, tb, temperature=0.2)["loss"].item()
    assert got == pytest.approx(_loop_local(a, b, a2b, b2a, ta, tb, 0.2), rel=1e-5)


def test_losses_are_float32_under_bf16_inputs_and_differentiable():
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(8, 16, generator=gen).bfloat16().requires_grad_()
    out = global_contrastive_loss(emb)
    assert out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def _worker(rank: int, world: int, port: int, emb: torch.Tensor, regions: list[torch.Tensor],
            results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b = emb.shape[0] // 2
        lb = b // world
        rows = torch.cat([torch.arange(rank * lb, (rank + 1) * lb), b + torch.arange(rank * lb, (rank + 1) * lb)])
        local_emb = emb[rows].clone().requires_grad_()
        g = global_contrastive_loss(local_emb, 0.1)["loss"]
        g.backward()
        local_regions = [r[rank * lb:(rank + 1) * lb].clone().requires_grad_() for r in regions]
        loc = local_contrastive_loss(*local_regions, temperature=0.2)["loss"]
        loc.backward()
        results[rank] = {"global": g.item(), "global_grad": local_emb.grad, "local": loc.item(),
                         "local_grads": [r.grad for r in local_regions]}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_losses_across_two_gloo_processes_equal_the_single_process_batch():
    """Two processes holding half a batch each (negatives gathered differentiably) give the full batch's loss
    (mean over processes) and gradients (x world: every process's loss reaches every slice)."""
    gen = torch.Generator().manual_seed(2)
    b, world = 4, 2
    emb = torch.randn(2 * b, 16, generator=gen)
    regions = [torch.randn(b, 3, 8, generator=gen) for _ in range(4)]
    full_emb = emb.clone().requires_grad_()
    full_g = global_contrastive_loss(full_emb, 0.1)["loss"]
    full_g.backward()
    full_regions = [r.clone().requires_grad_() for r in regions]
    full_l = local_contrastive_loss(*full_regions, temperature=0.2)["loss"]
    full_l.backward()

    results = mp.Manager().dict()
    mp.spawn(_worker, args=(world, free_port(), emb, regions, results), nprocs=world, join=True)
    assert sum(results[r]["global"] for r in range(world)) / world == pytest.approx(full_g.item(), rel=1e-6)
    assert sum(results[r]["local"] for r in range(world)) / world == pytest.approx(full_l.item(), rel=1e-6)
    lb = b // world
    for r in range(world):
        rows = torch.cat([torch.arange(r * lb, (r + 1) * lb), b + torch.arange(r * lb, (r + 1) * lb)])
        torch.testing.assert_close(results[r]["global_grad"], world * full_emb.grad[rows], rtol=1e-5, atol=1e-7)
        for got, ref in zip(results[r]["local_grads"], full_regions, strict=True):
            torch.testing.assert_close(got, world * ref.grad[r * lb:(r + 1) * lb], rtol=1e-5, atol=1e-7)
