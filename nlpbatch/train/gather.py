"""Bring every worker's eval outputs back together: pad to a common shape, all_gather, drop the sampler's
duplicates by example index, restore dataset order. Works unchanged in a single process."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pad_to(t: torch.Tensor, rows: int, cols: int, value: float) -> torch.Tensor:
    """Pad a 2-D tensor on the right and bottom with `value`."""
    return F.pad(t, (0, cols - t.shape[1], 0, rows - t.shape[0]), value=value)


def concat_padded(chunks: list[torch.Tensor], value: float) -> torch.Tensor:
    """Stack per-batch [n_i, L_i] tensors into one [sum n_i, max L_i]."""
    width = max(c.shape[1] for c in chunks)
    return torch.cat([pad_to(c, c.shape[0], width, value) for c in chunks])


def _all_gather_padded(t: torch.Tensor, value: float) -> torch.Tensor:
    """all_gather tensors whose row and column counts differ per rank; returns the real rows of every rank."""
    import torch.distributed as dist

    world = dist.get_world_size()
    shape = torch.tensor(list(t.shape), dtype=torch.long, device=t.device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    rows = max(int(s[0]) for s in shapes)
    cols = max(int(s[1]) for s in shapes) if t.dim() > 1 else None
    padded = pad_to(t, rows, cols, value) if cols is not None else F.pad(t, (0, rows - t.shape[0]), value=value)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s[0])] for p, s in zip(parts, shapes)])


def gather_by_index(index: torch.Tensor, arrays: dict[str, tuple[torch.Tensor, float]], expected: int) -> dict:
    """Gather one rank's (example index, outputs) from all ranks; return numpy arrays in dataset order.

    `arrays` maps a name to (tensor [n_local, L], pad value). The result has exactly `expected` rows, row i
    being example i, whatever the number of workers and however the sampler padded the shards.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed:
        index = _all_gather_padded(index, -1)
        arrays = {k: (_all_gather_padded(t, v), v) for k, (t, v) in arrays.items()}
    idx = index.cpu().numpy()
    _, first = np.unique(idx, return_index=True)  # sorted unique indices, position of each first occurrence
    if len(first) != expected or idx[first].min(initial=0) < 0 or (len(first) and idx[first].max() != expected - 1):
        raise RuntimeError(f"gathered {len(first)} distinct examples, expected {expected}")
    return {k: t.cpu().numpy()[first] for k, (t, _) in arrays.items()}
