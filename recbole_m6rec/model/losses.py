"""M6Rec's losses over sampled negatives, and which items may be a position's negative.

* ``BPR``: RecBole's pairwise loss ``-log sigmoid(s(u, pos) - s(u, neg))``, one negative per scored position.
* ``sampled_softmax``: cross-entropy over the target and ``softmax_negatives`` items drawn once per batch and shared by
  every position (each item's vector is computed once per step, so a step costs the same whatever the catalogue).

Negatives, the same rule for both losses and every position:

* drawn uniformly from the items that may be negatives: every item but the padding item 0, or only the items with a
  training interaction under ``loss_items: seen`` (cold items are not in the catalogue yet);
* never the position's own target. Another item of the user's history may be a negative, as with RecBole's sampler
  for sequential models (``RepeatableSampler`` excludes only the sample's own target);
* with RecBole's ``train_neg_sample_args`` (``BPR``), the position that predicts the sample's target (the last of a
  window, or the only one with ``train_whole_sequences: False``) takes RecBole's ``NEG_ITEM_ID``; the other
  positions of a window are drawn here. Under ``loss_items: seen`` a RecBole negative without a training interaction
  is drawn again here (RecBole's sampler draws from every item).

Draws use torch's global generator on the CPU: RecBole's ``init_seed`` seeds it, resume points save its state, and
the negatives do not depend on the device.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["bpr_loss", "sampled_softmax_loss", "draw_negatives", "draw_shared_negatives", "negative_pool"]


def negative_pool(n_items: int, seen: torch.Tensor | None = None) -> torch.Tensor:
    """``[N]`` ids of the items that may be negatives (CPU): all but the padding item, or only the ``seen`` ones
    (``seen``: ``[n_items]`` 1 for items with a training interaction)."""
    if seen is None:
        return torch.arange(1, n_items)
    ids = seen.detach().cpu().nonzero().flatten()
    return ids[ids != 0]


def draw_negatives(pool: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One negative per target, uniformly from ``pool``, never equal to its target: ``[*]`` ids -> ``[*]`` ids
    (on ``targets``' device)."""
    if len(pool) < 2:
        raise ValueError(f"sampled negatives need at least 2 items that may be negatives (got {len(pool)})")
    wanted = targets.detach().cpu()
    negatives = pool[torch.randint(len(pool), wanted.shape)]
    clash = negatives == wanted
    while bool(clash.any()):  # rejection keeps the draw uniform over the pool without the target
        negatives[clash] = pool[torch.randint(len(pool), (int(clash.sum()),))]
        clash = negatives == wanted
    return negatives.to(targets.device)


def draw_shared_negatives(pool: torch.Tensor, k: int, device: torch.device) -> torch.Tensor:
    """``[k]`` distinct ids drawn uniformly from ``pool`` (without replacement), shared by a batch's positions."""
    if k > len(pool):
        raise ValueError(
            f"softmax_negatives must be at most the number of items that may be negatives, {len(pool)} (got {k})"
        )
    return pool[torch.randperm(len(pool))[:k]].to(device)


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``[M]`` scores of the targets and of one negative each -> mean ``-log sigmoid(pos - neg)``."""
    return -F.logsigmoid(positive - negative).mean()


def sampled_softmax_loss(positive: torch.Tensor, negative: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """``[M]`` target scores, ``[M K]`` scores of the shared negatives, ``[M K]`` True where a negative is the
    position's own target (left out) -> mean cross-entropy of the target against the negatives.

    Uniform sampling needs no logQ correction: every item's log-probability of being drawn is the same constant,
    which cancels in the softmax.
    """
    logits = torch.cat([positive.unsqueeze(1), negative.masked_fill(hit, float("-inf"))], dim=1)  # [M 1+K]
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
