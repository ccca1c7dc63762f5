"""Which examples each rank trains on, step by step, so that the recipe does not depend on the worker count."""

from __future__ import annotations

import math
from collections.abc import Iterator


class GlobalBatchSampler:
    """Batch sampler for one rank: every optimizer step consumes exactly `global_batch` examples across all ranks,
    whatever the world size. Step k's global batch is split into `world` parts whose sizes differ by at most one
    (rank r gets global_batch // world, plus one if r < global_batch % world), so 3 workers at batch 32 train on
    11 + 11 + 10, not 3 x 11. Every rank yields ceil(n / global_batch) batches (DDP needs equal counts; an elastic
    restart at another world size keeps the same steps and learning-rate schedule); the last global batch is
    filled by wrapping around. The order is seeded by (seed, epoch): length-grouped mega-batches like the Hugging
    Face Trainer's `group_by_length` when `lengths` are given, else a random permutation."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, lengths: list[int] | None = None):
        if not 1 <= world <= global_batch:
            raise ValueError(f"global batch {global_batch} cannot be split over {world} workers")
        self.n, self.global_batch, self.seed, self.lengths = n, global_batch, seed, lengths
        sizes = [global_batch // world + (r < global_batch % world) for r in range(world)]
        self.lo, self.hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.global_batch)

    def __iter__(self) -> Iterator[list[int]]:
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        if self.lengths is not None:
            order = list(get_length_grouped_indices(self.lengths, self.global_batch, generator=generator))
        else:
            order = torch.randperm(self.n, generator=generator).tolist()
        needed = len(self) * self.global_batch
        order = (order * math.ceil(needed / self.n))[:needed]
        for step in range(len(self)):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            yield batch[self.lo : self.hi]
