"""SGD with momentum, weight decay on kernels only, linear warm-up + cosine schedule, and gradient scaling.

**Weight decay.** The official recipe adds ``1e-6 * sum(x**2) / 2`` over variables named ``kernel`` (conv and
Dense kernels) to the loss; its gradient ``1e-6 * x`` equals SGD's ``weight_decay=1e-6`` on those tensors. So
conv and linear *weights* get ``weight_decay``; biases and BN/LayerNorm parameters get none.

**Summed vs averaged gradients.** The official Keras/TPU recipe does not divide the per-replica loss by the number
of replicas and all-reduces gradients with SUM: the update uses ``sum_r grad(L_r)`` over R replicas, and its L2
term is added once per replica (``R * 1e-6``). DDP instead *averages* gradients over processes. We count a
"replica" as one micro-batch of one process (``R = world * accum_steps``) and scale each micro-batch loss by
:func:`loss_scale` before ``backward``:

* ``grad_reduction="sum"``: scale ``world`` (DDP's 1/world cancels, accumulation adds), so the step uses
  ``sum_r grad(L_r)`` as official; the weight decay is multiplied by ``R`` (:func:`effective_weight_decay`).
  The step size then grows with R: the official LR 40.96 was tuned for the official TPU replica count, which is
  not published — keep the same number of replicas, or use ``"mean"`` and retune the LR.
* ``grad_reduction="mean"``: scale ``1 / accum_steps``; the gradient of the mean loss over all micro-batches of
  all processes, independent of how the batch is split.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from constcl_zoo.errors import InvalidArgumentError

_KERNEL_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights (decayed) and everything else (biases, norms; not decayed)."""
    decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, _KERNEL_MODULES)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if id(p) in decay_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "kernels"},
            {"params": no_decay, "weight_decay": 0.0, "name": "other"}]


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Official schedule (TF ``LinearWarmup`` over ``CosineDecay``): cosine decay from ``base_lr`` to 0 over
    ``total_steps`` evaluated at the global step; during warm-up a linear ramp from 0 to the cosine's value at
    ``warmup_steps`` (``lr(2500) = 40.944`` for the 200k-step recipe, as verified on the official code)."""
    def cosine(s: int) -> float:
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps))

    if step < warmup_steps:
        return cosine(warmup_steps) * step / warmup_steps
    return cosine(step)


def build_optimizer(model: nn.Module, lr: float, momentum: float, nesterov: bool,
                    weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov)


def build_scheduler(optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule (call ``step()`` after every optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, base_lr, warmup_steps, total_steps) / base_lr)


def loss_scale(grad_reduction: str, world: int, accum_steps: int) -> float:
    """Factor on each micro-batch loss before ``backward`` (see module docstring)."""
    if grad_reduction == "sum":
        return float(world)
    if grad_reduction == "mean":
        return 1.0 / accum_steps
    raise InvalidArgumentError(f"grad_reduction must be 'sum' or 'mean', got {grad_reduction!r}")


def effective_weight_decay(weight_decay: float, grad_reduction: str, world: int, accum_steps: int) -> float:
    """The SGD weight decay that matches the official per-replica L2 term under ``grad_reduction``."""
    return weight_decay * world * accum_steps if grad_reduction == "sum" else weight_decay
