"""M6Rec's and M6RecCTR's trainer: training on whole-sequence windows instead of RecBole's per-prefix samples.

**Whole-sequence windows.** RecBole's sequential datasets turn every prefix of every user's training history into
one sample (~97k on ml-100k). M6Rec computes the state after every step in one causal pass, so it needs only the
samples whose prefixes tile each history: for a user with ``m`` training samples and
``L = MAX_ITEM_LIST_LENGTH`` these are the samples ``m-1, m-1-L, m-1-2L, ...``, whose windows cover every training
target exactly once (the causal loss in ``M6Rec.calculate_loss`` puts a loss at every position). Validation and
test data are untouched, so the split is RecBole's own.

**Learning-rate schedule.** ``warmup_steps`` raises the step size linearly over the first training steps and
``lr_decay: inverse_sqrt`` lowers it after them. The step count lives in the optimizer's parameter groups, which
its state dict (and so every resume point) keeps: a resumed run continues the schedule where it stopped.

**Overlapping windows.** Tiled windows give the first targets of each window a short history (at ``L = 50``, a
target sees 25 items on average where RecBole's prefix sample sees up to 50). With ``window_stride`` ``S < L`` a
window ends every ``S`` samples (``m-1, m-1-S, ...``) and scores only its last ``S`` positions (a user's earliest
window has at most ``S``): every target is still scored exactly once, in the window where it has the longest
history, at about ``L / S`` times the compute. The count of leading positions a window leaves unscored travels
with each window as the ``WINDOW_SKIP_FIELD`` column.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader

from recbole_m6rec.model.losses import WINDOW_SKIP_FIELD
from recbole_m6rec.plugin_trainer import PluginTrainer

__all__ = ["M6RecTrainer", "step_size_factor", "whole_sequence_indices", "window_skips", "whole_sequence_loader"]


def whole_sequence_indices(user_ids: np.ndarray, max_length: int, stride: int | None = None) -> np.ndarray:
    """Indices of the prefix samples that end each user's windows: the user's last sample, then every ``stride``-th
    (default ``max_length``: windows that tile the history) going back (samples of a user are in time order). A
    window holds at most ``max_length`` items, so a longer stride acts as ``max_length``: it would leave targets
    between the windows unscored."""
    stride = min(stride or max_length, max_length)
    user_ids = np.asarray(user_ids)
    order = np.argsort(user_ids, kind="stable")  # keeps each user's samples in time order
    sorted_users = user_ids[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    ends = np.r_[starts[1:], len(sorted_users)]
    keep = []
    for start, end in zip(starts, ends):
        keep.extend(order[start:end][::-1][::stride])
    return np.sort(np.asarray(keep, dtype=np.int64))


def window_skips(lengths: np.ndarray, stride: int) -> np.ndarray:
    """Leading positions each window leaves unscored, ``max(0, length - stride)`` for windows of history
    ``lengths`` that end every ``stride`` samples: the later window scores those targets. A user's earliest window
    ends within its first ``stride`` samples, so it is never longer than ``stride`` and scores all its targets."""
    return np.maximum(np.asarray(lengths) - stride, 0).astype(np.int64)


def whole_sequence_loader(config, train_data, stride: int | None = None) -> TrainDataLoader:
    dataset = train_data._dataset
    uid_field = dataset.uid_field
    max_length = config["MAX_ITEM_LIST_LENGTH"]
    keep = whole_sequence_indices(dataset.inter_feat[uid_field].numpy(), max_length, stride)
    windows = dataset.copy(dataset.inter_feat[torch.from_numpy(keep)])
    if stride and stride < max_length:
        feat = windows.inter_feat
        skips = window_skips(feat[dataset.item_list_length_field].numpy(), stride)
        feat.interaction[WINDOW_SKIP_FIELD] = torch.from_numpy(skips)
    # RecBole's training sampler (None without train_neg_sample_args) gives each window its NEG_ITEM_ID
    return TrainDataLoader(config, windows, train_data._sampler, shuffle=config["shuffle"])


def step_size_factor(step: int, warmup_steps: int, decay: str) -> float:
    """The fraction of ``learning_rate`` used for training step ``step`` (1-based)."""
    factor = min(1.0, step / warmup_steps) if warmup_steps else 1.0
    if decay == "inverse_sqrt":
        factor *= (max(warmup_steps, 1) / max(step, warmup_steps, 1)) ** 0.5
    return factor


def _scheduled_step_size(warmup_steps: int, decay: str):
    def before_step(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            group["scheduled_steps"] = group.get("scheduled_steps", 0) + 1
            group["lr"] = group["initial_lr"] * step_size_factor(group["scheduled_steps"], warmup_steps, decay)

    return before_step


class M6RecTrainer(PluginTrainer):
    """M6Rec's and M6RecCTR's trainer: whole-sequence windows (``train_whole_sequences``) and a clearer NaN stop."""

    def epoch_data(self, train_data):
        if not self.model.settings.train_whole_sequences:
            return train_data
        windows = whole_sequence_loader(self.config, train_data, self.model.settings.window_stride)
        self.logger.info(
            f"{self.config['model']} trains on {len(windows._dataset)} whole-sequence windows instead "
            f"of {len(train_data._dataset)} prefixes"
        )
        return windows

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        settings = self.model.settings
        if optimizer is not None and (settings.warmup_steps or settings.lr_decay != "none"):
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
            optimizer.register_step_pre_hook(_scheduled_step_size(settings.warmup_steps, settings.lr_decay))
        return optimizer

    def _check_nan(self, loss):
        if torch.isnan(loss):
            where = getattr(self, "saved_model_file", None)
            raise ValueError(
                "Training loss is nan; training stopped. The last good checkpoint (best validation so far) is "
                f"'{where}'. Try a lower learning_rate or a higher temperature."
            )
