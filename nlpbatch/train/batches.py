"""Training batches without a collate per step: every training feature is padded once, by the task's own
collator, into tensors that live on the worker's device for the whole run; a step's batch is an index into them,
cut to the longest feature of the batch (rounded up to the collators' PAD_MULTIPLE), so it holds exactly what the
collator would have built from the same features, and no host work or host-to-device copy runs per step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from nlpbatch.tasks.base import PAD_MULTIPLE


class ResidentBatches:
    def __init__(self, feats: list[dict], collate: Callable[[list[dict]], dict], device: torch.device):
        padded = collate(feats)
        padded.pop("index", None)
        self.lengths = torch.tensor([len(f["input_ids"]) for f in feats])
        # int32 halves the memory; the step casts its slice back to the int64 the model and the loss expect. Float
        # tensors (a multi-label example's multi-hot targets) are per example: kept as floats, never cut to width.
        self.per_example = {k for k, v in padded.items() if v.is_floating_point() or v.ndim == 1}
        self.tensors = {
            k: v.to(device, torch.float32 if v.is_floating_point() else torch.int32) for k, v in padded.items()
        }
        self.device = device

    def tokens(self, indices: list[int]) -> int:
        """Unpadded tokens of a batch, counted on the host (no device sync)."""
        return int(self.lengths[indices].sum())

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        width = -(-int(self.lengths[indices].max()) // PAD_MULTIPLE) * PAD_MULTIPLE
        rows = torch.tensor(indices).to(self.device, non_blocking=True)
        return {
            k: v[rows] if v.is_floating_point() else (v[rows] if k in self.per_example else v[rows, :width]).long()
            for k, v in self.tensors.items()
        }
