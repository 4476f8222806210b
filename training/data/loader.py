"""The sample stream every video trainer shares (pretraining, fine-tuning): which sample each process trains on,
in which order, from any micro-batch on.

Sample number ``p`` of the run (counted over all processes) is video ``perm_e[p mod n]`` of epoch ``e = p // n``
(``perm_e`` a permutation seeded with ``(seed, e)``). A dataset makes sample ``(p, video)`` from a generator
seeded with ``(seed, p)``, so a sample depends neither on the worker that made it nor on a restart: the data
position a checkpoint saves is the number of micro-batches consumed, and ``--resume`` continues bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["StreamSampler", "build_loader"]


class StreamSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of ``(sample number, video)`` keys for one process, starting at micro-batch ``start``.

    Micro-batch ``m`` of the run covers sample numbers ``[m * G, (m + 1) * G)`` with ``G = local_batch * world``;
    rank ``r`` takes ``[m * G + r * local_batch, ...)``.
    """

    def __init__(self, num_videos: int, local_batch: int, rank: int, world: int, seed: int, start: int = 0) -> None:
        self.n, self.local_batch, self.rank, self.world, self.seed = num_videos, local_batch, rank, world, seed
        self.start = start

    def video_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        return int(np.random.default_rng([self.seed, 7919, epoch]).permutation(self.n)[offset])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        m = self.start
        perms: dict[int, np.ndarray] = {}
        while True:
            base = m * self.local_batch * self.world + self.rank * self.local_batch
            batch = []
            for p in range(base, base + self.local_batch):
                epoch, offset = divmod(p, self.n)
                if epoch not in perms:
                    perms = {epoch: np.random.default_rng([self.seed, 7919, epoch]).permutation(self.n)}
                batch.append((p, int(perms[epoch][offset])))
            yield batch
            m += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # parallelism comes from the workers (cv2 is single-threaded: training.data.videos)


def build_loader(dataset: Dataset, local_batch: int, rank: int, world: int, start: int) -> DataLoader:
    """An endless loader of collated micro-batches for this process, from micro-batch ``start`` on. ``dataset``
    takes ``(sample number, video)`` keys and carries its trainer's config as ``dataset.cfg``: the engine's
    ``run`` section (``run.seed``) and a ``data`` section with ``num_workers`` and ``prefetch_factor``."""
    cfg: Any = dataset.cfg  # type: ignore[attr-defined]
    d = cfg.data
    sampler = StreamSampler(len(dataset), local_batch, rank, world, cfg.run.seed, start)
    kwargs = {"prefetch_factor": d.prefetch_factor, "persistent_workers": False} if d.num_workers > 0 else {}
    return DataLoader(dataset, batch_sampler=sampler, num_workers=d.num_workers, worker_init_fn=_worker_init,
                      pin_memory=torch.cuda.is_available(), **kwargs)
