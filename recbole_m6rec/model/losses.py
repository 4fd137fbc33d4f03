"""M6Rec's training objective: which positions of a batch a step scores, which items may be a position's negative,
and the losses over sampled negatives.

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

from collections.abc import Callable

import torch
from torch.nn import functional as F

__all__ = [
    "WINDOW_SKIP_FIELD",
    "scored_positions",
    "sampled_negatives_loss",
    "bpr_loss",
    "sampled_softmax_loss",
    "negative_pool",
    "draw_negatives",
    "draw_shared_negatives",
    "recbole_negatives",
    "bpr_negatives",
]

WINDOW_SKIP_FIELD = "window_skip"
"""A training window's column: its leading positions that another, overlapping window scores (``window_stride``)."""


def scored_positions(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    target: torch.Tensor,
    whole_sequences: bool,
    skip: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The positions a training step scores and what each predicts.

    ``item_seq`` ``[B n]``, ``item_seq_len`` ``[B]``, ``target`` ``[B]`` (the sample's target) -> ``positions``
    ``[B n]`` (True where position t, the state after items 0..t, is scored), ``labels`` ``[M]`` (the item each
    scored position predicts, in row order) and ``last`` ``[M]`` (True where it predicts the sample's target).
    With ``whole_sequences`` position t predicts item t+1 and the last one the target; otherwise only the last
    position is scored (RecBole's one sample per prefix). ``skip`` ``[B]`` (overlapping windows) leaves each row's
    first ``skip`` positions unscored: another window scores those targets with a longer history.
    """
    batch, n = item_seq.shape
    rows = torch.arange(batch, device=item_seq.device)
    last = torch.zeros_like(item_seq, dtype=torch.bool)
    last[rows, item_seq_len - 1] = True
    if whole_sequences:
        targets = torch.roll(item_seq, shifts=-1, dims=1)
        steps = torch.arange(n, device=item_seq.device).unsqueeze(0)
        positions = steps < item_seq_len.unsqueeze(1)
        if skip is not None:
            positions = positions & (steps >= skip.unsqueeze(1))
    else:
        targets = torch.zeros_like(item_seq)
        positions = last
    targets[rows, item_seq_len - 1] = target
    return positions, targets[positions], last[positions]


def sampled_negatives_loss(
    loss_type: str,
    users: torch.Tensor,
    labels: torch.Tensor,
    negatives: torch.Tensor,
    item_vectors: Callable[[torch.Tensor], torch.Tensor],
    temperature: float,
) -> torch.Tensor:
    """``BPR`` (``negatives`` ``[M]``, one per position) or ``sampled_softmax`` (``negatives`` ``[K]``, shared by
    the positions) of the user vectors ``users`` ``[M E]`` against their ``labels`` ``[M]``; scores are dot products
    with ``item_vectors(ids)`` over ``temperature``, each distinct item's vector computed once."""
    unique, index = torch.cat([labels, negatives]).unique(return_inverse=True)
    positive, negative = item_vectors(unique)[index].split([len(labels), len(negatives)])  # [M E], [M or K E]
    if loss_type == "BPR":
        return bpr_loss((users * positive).sum(-1) / temperature, (users * negative).sum(-1) / temperature)
    return sampled_softmax_loss(
        (users * positive).sum(-1) / temperature,
        users @ negative.t() / temperature,
        negatives.unsqueeze(0) == labels.unsqueeze(1),
    )  # [M], [M K], [M K]


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


# ---------------------------------------------------------------------------------------------------- negatives
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


def recbole_negatives(interaction, field: str) -> torch.Tensor:
    """``[B]`` RecBole's sampled negative of each sample (``field``: its ``NEG_ITEM_ID``); an error naming the
    setting when the batch has none."""
    if field not in interaction:
        raise ValueError(
            f"loss_type BPR needs RecBole's sampled negatives in the batch (no '{field}' field); train "
            "through RecBole's data loader with train_neg_sample_args set"
        )
    return interaction[field]


def bpr_negatives(
    pool: torch.Tensor,
    labels: torch.Tensor,
    last: torch.Tensor,
    recbole: torch.Tensor,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[M]`` one negative per scored position: RecBole's negative (``recbole``, ``[B]``) where the position
    predicts the sample's target (``last``, ``[M]``, one per row in row order), drawn from ``pool`` for the other
    positions. With ``seen`` (``loss_items: seen``) a RecBole negative without a training interaction is drawn again
    here: RecBole's sampler draws from every item."""
    negatives = draw_negatives(pool, labels)  # [M]
    if seen is not None:
        recbole = torch.where(seen[recbole].bool(), recbole, negatives[last])
    negatives[last] = recbole
    return negatives
