"""LikeRate: the trivial click-through floor, the item's training like-rate plus the user's recent like-rate.

A click-through report whose models cannot beat this scorer says nothing about them. It trains nothing (the
plugin's ``NoTrainingTrainer``): the item's rate is counted from the training split once, when the model is built;
the user's rate is the mean label of the last ``like_rate_window`` history items entered strictly before the
candidate's second, the same history outcomes M6RecCTR's ``history_labels`` shows (a rating entered together with
the candidate is not feedback that arrived before it was shown). ``like_rate_window: 0`` leaves the user out: the item-only floor, for the models
that read no history labels (DIN, DIEN, FM, ...).

Item rates are shrunk toward the global training rate with one pseudo-interaction, ``(likes + p) / (count + 1)``,
so an item seen once is not ranked at 0 or 1; an item never seen in training scores ``p``, and so does a user
without history.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType, ModelType

from .most_pop import training_column

__all__ = ["LikeRate", "training_item_likes"]


def training_item_likes(dataset, label_field: str) -> tuple[np.ndarray, np.ndarray]:
    """``(interactions, likes)`` per internal item id over the training split (each user's first interaction
    included, as :func:`~recbole_m6rec.model.most_pop.training_column` reads it)."""
    items = training_column(dataset, dataset.iid_field)
    labels = training_column(dataset, label_field).astype(np.float64)
    counts = np.bincount(items, minlength=dataset.item_num).astype(np.float64)
    likes = np.bincount(items, weights=labels, minlength=dataset.item_num)
    return counts, likes


class LikeRate(SequentialRecommender):
    r"""Score = the mean of the item's shrunk training like-rate and the user's like-rate over the last
    ``like_rate_window`` history items entered before the candidate's second (0: the item rate alone)."""

    input_type = InputType.POINTWISE
    type = ModelType.SEQUENTIAL

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        if self.LABEL not in dataset.inter_feat:
            raise ValueError(
                f"LikeRate needs a label field '{self.LABEL}' in the interactions: set threshold (e.g. "
                "threshold: {rating: 4}) or load a label column"
            )
        self.LABEL_LIST = self.LABEL + config["LIST_SUFFIX"]
        window = config["like_rate_window"]
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"like_rate_window is {window!r}; valid: a whole number >= 0 (0: the item's rate only)")
        self.window = window
        self.TIME_FIELD = config["TIME_FIELD"]
        if window and (not self.TIME_FIELD or self.TIME_FIELD not in dataset.field2type):
            raise ValueError(
                f"like_rate_window={window} reads history outcomes entered before the candidate's second, but the "
                f"dataset has no TIME_FIELD '{self.TIME_FIELD}': load it (load_col: {{inter: [..., "
                f"{self.TIME_FIELD}]}}) or set like_rate_window: 0"
            )
        self.TIME_LIST = (self.TIME_FIELD or "") + config["LIST_SUFFIX"]

        counts, likes = training_item_likes(dataset, self.LABEL)
        prior = float(likes.sum() / max(counts.sum(), 1.0))
        self.prior = prior
        self.register_buffer("item_rate", torch.from_numpy(((likes + prior) / (counts + 1.0)).astype(np.float32)))

    def forward(self, interaction):
        item_rate = self.item_rate[interaction[self.ITEM_ID]]  # [B]
        if self.window == 0:
            return item_rate
        labels = interaction[self.LABEL_LIST].float()  # [B L], left-aligned: positions < length hold the history
        lengths = interaction[self.ITEM_SEQ_LEN]  # [B]
        positions = torch.arange(labels.shape[1], device=labels.device).unsqueeze(0)  # [1 L]
        # histories are in time order, so the items entered before the candidate's second are a prefix
        earlier = (positions < lengths.unsqueeze(1)) & (
            interaction[self.TIME_LIST] < interaction[self.TIME_FIELD].unsqueeze(1)
        )  # [B L]
        n_earlier = earlier.sum(dim=1)  # [B]
        recent = earlier & (positions >= (n_earlier - self.window).unsqueeze(1))  # [B L]
        n_recent = recent.sum(dim=1)  # [B]
        user_rate = torch.where(
            n_recent > 0,
            (labels * recent).sum(dim=1) / n_recent.clamp(min=1),
            torch.full_like(item_rate, self.prior),
        )
        return (item_rate + user_rate) / 2  # the sum's order (AUC), kept in [0, 1] for LogLoss

    def calculate_loss(self, interaction):
        raise RuntimeError(
            "LikeRate is counted from the training data, not trained; run it with its trainer "
            "(recbole_m6rec.plugin_trainer.NoTrainingTrainer), which recbole_m6rec.quick_start picks"
        )

    def predict(self, interaction):
        return self.forward(interaction)  # [B]

    def full_sort_predict(self, interaction):
        raise NotImplementedError("LikeRate scores labelled samples (eval_args mode: labeled), not full rankings")

    def report_facts(self) -> dict:
        return {"trains": False}
