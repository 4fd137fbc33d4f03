"""``popularity_bias``: a learned weight on each item's log training popularity, added to M6Rec's logits.

Why: scores are cosines of two normalised vectors over a temperature, with no direct way to say that a popular item
is more likely a priori. On ml-100k the stacked-levers row (today's defaults) trailed SASRec on the two most popular
quartiles of test targets and led it on the least popular (``reports/ml-100k-levers/strata.md``: test only, groups
of ~237 users, two seeds; other text rows differ): a hypothesis, measured on validation as a lever row. One scalar
``w``, starting at 0 (the model as without it), adds
``w * log(1 + training interactions)`` to every item's logit. An item without a training interaction gets 0: a cold
item keeps its text score, and with ``unseen_item_prior`` its group's share.

The counts come from the dataset the model is built from, which must be the training split, as RecBole's pipeline
builds models (``train_data.dataset``): the whole dataset would count the validation and test targets. A dataset
that was never built is refused; a built whole dataset cannot be told from a split by its interactions, so building
the model from the training split is the caller's part.
"""

from __future__ import annotations

import torch
from recbole.data.interaction import Interaction
from torch import nn

from .most_pop import training_item_counts

__all__ = ["PopularityBias"]


class PopularityBias(nn.Module):
    """``w * log(1 + count)`` per item: ``log_counts`` ``[n_items]`` (a buffer from the data) and ``weight`` (learned)."""

    def __init__(self, dataset, n_items: int):
        super().__init__()
        if not isinstance(dataset.inter_feat, Interaction):
            raise ValueError(
                "popularity_bias counts the training split's interactions, but this dataset is not built and split "
                "(its interactions are still a DataFrame, validation and test targets included): build the model "
                "from the training dataset that RecBole's data_preparation returns"
            )
        counts = torch.as_tensor(training_item_counts(dataset)[:n_items], dtype=torch.float32)
        log_counts = torch.log1p(counts)
        log_counts[0] = 0.0  # the padding item is never ranked
        self.register_buffer("log_counts", log_counts, persistent=False)  # rebuilt from the data, not checkpointed
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The bias of ``item_ids`` (same shape), or of every item ``[n_items]`` when None."""
        values = self.log_counts if item_ids is None else self.log_counts[item_ids]
        return self.weight * values
