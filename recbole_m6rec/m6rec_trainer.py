"""M6Rec's and M6RecCTR's trainer: training on whole-sequence windows instead of RecBole's per-prefix samples.

**Whole-sequence windows.** RecBole's sequential datasets turn every prefix of every user's training history into
one sample (~97k on ml-100k). M6Rec computes the state after every step in one causal pass, so it needs only the
samples whose prefixes tile each history: for a user with ``m`` training samples and
``L = MAX_ITEM_LIST_LENGTH`` these are the samples ``m-1, m-1-L, m-1-2L, ...``, whose windows cover every training
target exactly once (the causal loss in ``M6Rec.calculate_loss`` puts a loss at every position). Validation and
test data are untouched, so the split is RecBole's own.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader

from recbole_m6rec.plugin_trainer import PluginTrainer

__all__ = ["M6RecTrainer", "whole_sequence_indices", "whole_sequence_loader"]


def whole_sequence_indices(user_ids: np.ndarray, max_length: int) -> np.ndarray:
    """Indices of the prefix samples that tile each user's history (samples of a user are in time order)."""
    user_ids = np.asarray(user_ids)
    order = np.argsort(user_ids, kind="stable")  # keeps each user's samples in time order
    sorted_users = user_ids[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    ends = np.r_[starts[1:], len(sorted_users)]
    keep = []
    for start, end in zip(starts, ends):
        keep.extend(order[start:end][::-1][::max_length])
    return np.sort(np.asarray(keep, dtype=np.int64))


def whole_sequence_loader(config, train_data) -> TrainDataLoader:
    dataset = train_data._dataset
    uid_field = dataset.uid_field
    keep = whole_sequence_indices(dataset.inter_feat[uid_field].numpy(), config["MAX_ITEM_LIST_LENGTH"])
    windows = dataset.copy(dataset.inter_feat[torch.from_numpy(keep)])
    # RecBole's training sampler (None without train_neg_sample_args) gives each window its NEG_ITEM_ID
    return TrainDataLoader(config, windows, train_data._sampler, shuffle=config["shuffle"])


class M6RecTrainer(PluginTrainer):
    """M6Rec's and M6RecCTR's trainer: whole-sequence windows (``train_whole_sequences``) and a clearer NaN stop."""

    def epoch_data(self, train_data):
        if not self.model.settings.train_whole_sequences:
            return train_data
        windows = whole_sequence_loader(self.config, train_data)
        self.logger.info(
            f"{self.config['model']} trains on {len(windows._dataset)} whole-sequence windows instead "
            f"of {len(train_data._dataset)} prefixes"
        )
        return windows

    def _check_nan(self, loss):
        if torch.isnan(loss):
            where = getattr(self, "saved_model_file", None)
            raise ValueError(
                "Training loss is nan; training stopped. The last good checkpoint (best validation so far) is "
                f"'{where}'. Try a lower learning_rate or a higher temperature."
            )
