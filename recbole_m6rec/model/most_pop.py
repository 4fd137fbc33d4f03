"""MostPop: rank every item by its number of training interactions.

RecBole 1.2.1's ``Pop`` is not this baseline, for two reasons visible in its ``calculate_loss``:

* ``self.item_cnt[item, :] = self.item_cnt[item, :] + 1`` is an indexed assignment: an item that appears several
  times in one batch is counted once for that batch, so counts saturate near the number of batches;
* the training loader of a pair-wise setup adds sampled negatives to ``interaction[ITEM_ID]``, and those are
  counted as if they were interactions.

Its scores therefore have many ties, and its ranking on one split is mostly tie-breaking that moves between
seeds. MostPop counts the training split once, when the model is built (``dataset.inter_feat`` of the training
dataset), needs no training and breaks ties by internal item id, so one split gives one ranking.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType

__all__ = ["MostPop", "training_column", "training_item_counts"]


def training_column(dataset, field: str) -> np.ndarray:
    """``field``'s value for every training interaction, one per interaction.

    A general dataset holds one row per interaction. A sequential dataset holds one row per training target with the
    user's earlier interactions as its history; each user's first interaction is never a target, only the history of
    the sample of length 1, so it is read from there (``<field><LIST_SUFFIX>[:, 0]``): the values then equal those of
    the same split read as general data."""
    feat = dataset.inter_feat
    values = feat[field].numpy()
    list_field = field + dataset.config["LIST_SUFFIX"]
    if getattr(dataset, "item_id_list_field", None) in feat and list_field in feat:
        starts = feat[dataset.item_list_length_field].numpy() == 1
        values = np.concatenate([values, feat[list_field][:, 0].numpy()[starts]])
    return values


def training_item_counts(dataset) -> np.ndarray:
    """Training interactions per internal item id (``[n_items]``, padding id 0 included)."""
    return np.bincount(training_column(dataset, dataset.iid_field), minlength=dataset.item_num)


class MostPop(GeneralRecommender):
    r"""Most popular items first, by training interactions; ties by internal item id (smaller first)."""

    input_type = InputType.POINTWISE
    type = ModelType.TRADITIONAL  # built from the data, nothing to train (the plugin's NoTrainingTrainer)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        counts = training_item_counts(dataset)  # [n_items]
        # Rank-based score: the most popular item scores n_items - 1, the least popular 0. Every value is an integer
        # below 2^24, exact in float32 (count * n_items + tie-break would not be, beyond 2^24).
        order = np.lexsort((np.arange(self.n_items), -counts))  # by count descending, then by item id
        score = np.empty(self.n_items, dtype=np.float32)
        score[order] = np.arange(self.n_items - 1, -1, -1, dtype=np.float32)
        self.register_buffer("item_count", torch.from_numpy(counts.astype(np.int64)))  # [n_items]
        self.register_buffer("item_score", torch.from_numpy(score))  # [n_items]

    def forward(self):
        pass

    def calculate_loss(self, interaction):
        raise RuntimeError(
            "MostPop is counted from the training data, not trained; run it with its trainer "
            "(recbole_m6rec.plugin_trainer.NoTrainingTrainer), which recbole_m6rec.quick_start picks"
        )

    def predict(self, interaction):
        return self.item_score[interaction[self.ITEM_ID]]  # [B]

    def full_sort_predict(self, interaction):
        batch_user_num = interaction[self.USER_ID].shape[0]
        # a copy: RecBole writes -inf into the returned scores (padding, history), which must never reach the buffer
        # (for a one-user batch, ``expand(...).reshape(-1)`` would be a view of it)
        return self.item_score.repeat(batch_user_num)  # [B * n_items]

    def report_facts(self) -> dict:
        return {"trains": False}
