"""Which examples each rank trains on, step by step, so that the recipe does not depend on the worker count."""

from __future__ import annotations

import math
from collections.abc import Iterator


class GlobalBatchSampler:
    """Batch sampler for one rank: every optimizer step consumes one global batch across all ranks, whatever the
    world size. Step k's global batch is split into `world` parts whose sizes differ by at most one (rank r gets
    len // world, plus one if r < len % world), so 3 workers at batch 32 train on 11 + 11 + 10, not 3 x 11. Every
    rank yields the same number of batches (DDP needs equal counts; an elastic restart at another world size keeps
    the same steps and learning-rate schedule). The order is seeded by (seed, epoch): length-grouped mega-batches
    like the Hugging Face Trainer's `group_by_length` when `lengths` are given, else a random permutation.

    A global batch is `global_batch` examples (the last one filled by wrapping around), or with `batch_tokens` as
    many consecutive examples of that order as fit in `batch_tokens` padded tokens (count x longest; at least
    `world`), so a step holds about the same number of tokens whether its sentences are short or long."""

    def __init__(
        self,
        n: int,
        global_batch: int,
        rank: int,
        world: int,
        seed: int,
        lengths: list[int] | None = None,
        batch_tokens: int | None = None,
    ):
        if not 1 <= world <= global_batch:
            raise ValueError(f"global batch {global_batch} cannot be split over {world} workers")
        if batch_tokens is not None and lengths is None:
            raise ValueError("token-budget batches need the example lengths")
        self.n, self.global_batch, self.seed, self.lengths = n, global_batch, seed, lengths
        self.rank, self.world, self.batch_tokens = rank, world, batch_tokens
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def steps(self, epoch: int) -> int:
        """Optimizer steps of an epoch (they vary from epoch to epoch with token-budget batches)."""
        if self.batch_tokens is None:
            return math.ceil(self.n / self.global_batch)
        return len(self._global_batches(epoch))

    def __len__(self) -> int:
        return self.steps(self.epoch)

    def _order(self, epoch: int) -> list[int]:
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator()
        generator.manual_seed(self.seed + epoch)
        if self.lengths is not None:
            return list(get_length_grouped_indices(self.lengths, self.global_batch, generator=generator))
        return torch.randperm(self.n, generator=generator).tolist()

    def _global_batches(self, epoch: int) -> list[list[int]]:
        order = self._order(epoch)
        if self.batch_tokens is None:
            needed = self.steps(epoch) * self.global_batch
            order = (order * math.ceil(needed / self.n))[:needed]
            return [order[s : s + self.global_batch] for s in range(0, needed, self.global_batch)]
        batches, batch, longest = [], [], 0
        for i in order:
            wider = max(longest, self.lengths[i])
            if len(batch) >= self.world and wider * (len(batch) + 1) > self.batch_tokens:
                batches.append(batch)
                batch, wider = [], self.lengths[i]
            batch.append(i)
            longest = wider
        if batch:
            batches.append((batch + order * self.world)[: max(len(batch), self.world)])  # every rank gets one
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches(self.epoch):
            size, extra = divmod(len(batch), self.world)
            lo = self.rank * size + min(self.rank, extra)
            yield batch[lo : lo + size + (self.rank < extra)]
