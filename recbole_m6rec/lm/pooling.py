"""Token states -> segment vectors: which tokens enter pooling (a decoder's first-token "attention sink" stays out),
their mean, or their mean over contiguous chunks (``segment_tokens`` > 1)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["pool_mask", "masked_mean", "chunk_pool"]


def pool_mask(attention_mask: torch.Tensor, skip_first: bool) -> torch.Tensor:
    """``[B L]`` tokens that enter pooling: valid ones, minus position 0 (a decoder's sink) when ``skip_first`` and
    anything else is left."""
    keep = attention_mask.bool().clone()
    if skip_first:
        rest = keep.clone()
        rest[:, 0] = False
        has_rest = rest.any(dim=1, keepdim=True)
        keep = torch.where(has_rest, rest, keep)
    return keep


def masked_mean(hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of the kept token states ``[B L d] -> [B d]`` (a row with nothing kept gives zeros)."""
    keep = keep.unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)


def chunk_pool(hidden: torch.Tensor, keep: torch.Tensor, n_chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split each row's kept tokens into ``n_chunks`` contiguous chunks and mean-pool each. ``[B L d] -> [B n d]``,
    with ``[B n]`` True where a chunk holds a token."""
    counts = keep.sum(dim=1, keepdim=True).clamp(min=1)  # [B 1]
    rank = keep.long().cumsum(dim=1) - 1  # index of a kept token among kept tokens
    chunk = torch.where(keep, rank * n_chunks // counts, torch.full_like(rank, n_chunks))  # [B L]; n_chunks = drop
    one_hot = F.one_hot(chunk, n_chunks + 1)[..., :n_chunks].to(hidden.dtype)  # [B L n]
    sums = torch.einsum("bln,bld->bnd", one_hot, hidden)
    sizes = one_hot.sum(dim=1)  # [B n]
    pooled = sums / sizes.clamp(min=1).unsqueeze(-1)
    return pooled, sizes > 0
