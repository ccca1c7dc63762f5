"""Padding-free forward passes: the windows of a batch concatenated into one sequence of batch size 1, each window
attending only to itself. The flat token buffer the tokenize stage writes is already that sequence, so a packed
batch is a slice of it and its outputs go back with no gather and no padded token computed.

Attention comes through transformers' attention interface (a function registered under ATTENTION and selected
with `model.set_attn_implementation`); the window boundaries travel as the flash-attention keyword arguments
(cu_seq_lens_q/k, max_length_q/k) that the model hands down to every attention call. On CUDA it runs torch's
variable-length flash attention (`torch.nn.attention.varlen`, torch >= 2.10, bf16/fp16); elsewhere a
block-diagonal mask over scaled_dot_product_attention gives the same result (the CPU tests check it equals the
padded forward), quadratic in the packed length, so CPU runs keep length buckets unless asked.

Only BERT-type encoders are packed: they take explicit position ids from 0 and segment ids, so a packed window
sees exactly the embeddings of a padded one (RoBERTa offsets its positions by the pad id, DistilBERT has no
segments: those keep padded length buckets).
"""

from __future__ import annotations

import functools

import numpy as np

ATTENTION = "nlpbatch_varlen"
PACKABLE_MODEL_TYPES = ("bert",)


@functools.cache  # looked up in every attention call: resolve the import once
def varlen_kernel():
    """torch's variable-length flash attention, or None when this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def pack_ranges(lengths: np.ndarray, batch_tokens: int) -> list[tuple[int, int]]:
    """Consecutive window ranges [lo, hi) of at most batch_tokens tokens each (a longer window goes alone)."""
    ranges, lo, total = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if i > lo and total + n > batch_tokens:
            ranges.append((lo, i))
            lo, total = i, 0
        total += n
    if len(lengths):
        ranges.append((lo, len(lengths)))
    return ranges


def positions(cu_seqlens: np.ndarray) -> np.ndarray:
    """Position ids restarting at 0 in every window of a packed sequence."""
    lengths = np.diff(cu_seqlens)
    return np.arange(int(cu_seqlens[-1])) - np.repeat(cu_seqlens[:-1], lengths)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention-interface function: query/key/value (1, heads, tokens, dim) -> (1, tokens, heads, dim)."""
    import torch
    import torch.nn.functional as F

    cu, longest = kwargs["cu_seq_lens_q"], kwargs["max_length_q"]
    kernel = varlen_kernel() if query.is_cuda else None
    if kernel is not None:
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
        if scaling is not None and abs(scaling - q.shape[-1] ** -0.5) > 1e-9:
            raise ValueError(f"packed attention: scaling {scaling} is not 1/sqrt(head dim); use --packing off")
        return kernel(q, k, v, cu, cu, longest, longest)[None], None  # its default scale is 1/sqrt(head dim)
    window = torch.repeat_interleave(torch.arange(len(cu) - 1, device=cu.device), cu.diff())
    mask = window[:, None] == window[None, :]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2), None


def enable(model) -> None:
    """Switch a loaded model to packed attention (its forward then needs the cu_seq_lens_* keyword arguments)."""
    from transformers import AttentionInterface

    if model.config.model_type not in PACKABLE_MODEL_TYPES:
        raise ValueError(
            f"packing: a {model.config.model_type!r} model cannot be packed (only {', '.join(PACKABLE_MODEL_TYPES)}); "
            "use --packing off"
        )
    AttentionInterface.register(ATTENTION, _attention)
    model.set_attn_implementation(ATTENTION)


def packed_forward(model, tokens, types, cu_seqlens: np.ndarray):
    """The model on one packed sequence: tokens/types are 1-D tensors on the model's device, cu_seqlens the
    window boundaries (0, end of window 1, ..., len(tokens)). Returns the model output, batch dimension 1."""
    import torch

    device = tokens.device
    cu = torch.from_numpy(cu_seqlens.astype(np.int32)).to(device)
    where = torch.from_numpy(positions(cu_seqlens)).to(device)
    longest = int(np.diff(cu_seqlens).max())
    return model(
        input_ids=tokens[None].long(),
        token_type_ids=types[None].long(),
        position_ids=where[None],
        cu_seq_lens_q=cu,
        cu_seq_lens_k=cu,
        max_length_q=longest,
        max_length_k=longest,
    )
