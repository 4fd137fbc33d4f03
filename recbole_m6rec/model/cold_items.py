"""Items without a training interaction (cold items): which they are, and how their scores are kept apart.

* A text+ID hybrid drops a cold item's ID embedding: trained only as a negative, it would only push the item down;
  the item's text speaks for it.
* ``loss_items: seen`` leaves cold items out of the softmax (they are not in the catalogue yet).
* ``unseen_item_prior`` ranks with a two-group mixture (see :meth:`ColdItems.mixture`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from .settings import CATALOGUE_PRIOR

__all__ = ["ColdItems"]

logger = logging.getLogger(__name__)


class ColdItems(nn.Module):
    """The ``[n_items]`` training-item mask (a buffer, not a parameter) and the unseen-item prior."""

    def __init__(self, dataset, n_items: int, unseen_item_prior):
        super().__init__()
        self.register_buffer("seen", _items_in_training(dataset, n_items), persistent=False)  # [n_items] 1 = seen
        self.prior = _resolve_prior(unseen_item_prior, self.seen)

    def keep_seen(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``[*ids 1]``: 1 for items with a training interaction, 0 for cold items (multiply an ID embedding)."""
        return self.seen[item_ids].unsqueeze(-1)

    def only_seen(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B n_items]`` logits with cold items at -inf (``loss_items: seen``)."""
        return logits.masked_fill(self.seen == 0, float("-inf"))

    def mixture(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B n_items]`` logits -> log-probabilities of a two-group mixture (``unseen_item_prior``), or unchanged.

        Items without a training interaction get ``log p + log_softmax`` within their group, the others
        ``log (1 - p) + log_softmax`` within theirs. Why: the softmax trained over seen items says nothing about
        how an unseen item compares with them. Trained down as negatives (``loss_items: all``) they never reach
        a top K; left out of the loss (``seen``) their scores are uncalibrated and crowd warm users' top K. The
        prior fixes how much probability they share; their order among themselves is still the model's.
        """
        if self.prior is None:
            return logits
        seen = self.seen.bool()
        unseen = ~seen
        unseen[0] = False  # the padding item belongs to neither group; RecBole never ranks it
        log_seen = torch.logsumexp(logits.masked_fill(~seen, float("-inf")), dim=1, keepdim=True)
        log_unseen = torch.logsumexp(logits.masked_fill(~unseen, float("-inf")), dim=1, keepdim=True)
        return torch.where(
            unseen, logits - log_unseen + float(np.log(self.prior)), logits - log_seen + float(np.log1p(-self.prior))
        )


def _items_in_training(dataset, n_items: int) -> torch.Tensor:
    """``[n_items]`` float mask: 1 for items that occur in the training data (as a target or in a history)."""
    feat = dataset.inter_feat  # an Interaction once built, a DataFrame before

    def ids(field) -> torch.Tensor:
        values = feat[field]
        if not isinstance(values, torch.Tensor):  # a pandas column; item lists are a column of arrays
            values = torch.as_tensor(np.stack(values.to_numpy()).astype(np.int64))
        return values.long().flatten()

    seen = torch.zeros(n_items)
    seen[ids(dataset.iid_field)] = 1.0
    list_field = getattr(dataset, "item_id_list_field", None)
    if list_field is not None and list_field in feat:
        seen[ids(list_field)] = 1.0
    seen[0] = 0.0
    return seen


def _resolve_prior(setting, seen: torch.Tensor) -> float | None:
    """The mixture weight of items without a training interaction, or None (off, or nothing to mix)."""
    if setting is None:
        return None
    n_unseen, n_seen = int((seen[1:] == 0).sum()), int(seen[1:].sum())
    if n_unseen == 0 or n_seen == 0:  # one group only: the mixture is the plain softmax
        logger.info("unseen_item_prior: %d unseen and %d seen items, nothing to mix", n_unseen, n_seen)
        return None
    prior = n_unseen / (n_unseen + n_seen) if setting == CATALOGUE_PRIOR else float(setting)
    logger.info(
        "unseen_item_prior %.4f over %d items without a training interaction (%d with)", prior, n_unseen, n_seen
    )
    return prior
