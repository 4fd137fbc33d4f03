"""The trainer of every run: RecBole's (or a plugin model's) trainer plus one class of named hooks.

:func:`build_trainer` is the only place a run's trainer is made. It takes the trainer class RecBole (or the plugin
registry) names for the model and subclasses it once with :class:`RunHooks`, whose overrides are the whole
difference from RecBole, each a named hook of RecBole's ``Trainer``:

* ``__init__``: multi-process runs on the CPU (RecBole 1.2.1 wraps the model with CUDA-only
  ``DistributedDataParallel(device_ids=[rank])`` and ``SyncBatchNorm``; here DDP without device ids, BatchNorm
  statistics per process, buffers broadcast from rank 0 as DDP does by default); the evaluator that keeps per-user
  metric values (:mod:`recbole_m6rec.per_user`); the collector that does not crash on non-tensor values
  (:class:`recbole_m6rec.compat.PlainValueCollector`).
* ``evaluate`` / ``_full_sort_batch_eval``: the ``eval_history_mask`` rule (:mod:`recbole_m6rec.evaluation`) and the
  user of every full-ranking row, so ``per_user_result`` can name each value's user.
* ``_neg_sample_batch_eval``: in labelled (value) evaluation, each sample's user, item, label and score, so
  ``per_sample_result`` can hand them to a paired AUC test (DeLong) between models scored on the same samples.
* ``_save_checkpoint``: submodules left out of ``other_parameter`` (DIN and DIEN list their ``embedding_layer``, a
  module holding the whole dataset, there; RecBole would pickle the dataset into every checkpoint).

The plugin's own trainer classes, which the registry names for plugin models:

* :class:`M6RecTrainer`: whole-sequence training windows, plain-data checkpoints (:mod:`recbole_m6rec.checkpoint`),
  a resume point after every evaluated epoch, and a NaN stop that names the last good checkpoint.
* :class:`NoTrainingTrainer`: for models used as they are (M6RecZeroShot, MostPop): ``fit`` evaluates the
  validation data once.

**Whole-sequence windows.** RecBole's sequential datasets turn every prefix of every user's training history into
one sample (~97k on ml-100k). M6Rec computes the state after every step in one causal pass, so it needs only the
samples whose prefixes tile each history: for a user with ``m`` training samples and
``L = MAX_ITEM_LIST_LENGTH`` these are the samples ``m-1, m-1-L, m-1-2L, ...``, whose windows cover every training
target exactly once (the causal loss in ``M6Rec.calculate_loss`` puts a loss at every position). Validation and
test data are untouched, so the split is RecBole's own.

**Resume points.** Besides the best model, :class:`M6RecTrainer` writes ``<best file>-last.pth`` after every
evaluated epoch, holding the optimizer, the early-stopping state and every random state, so ``resume_checkpoint``
continues an interrupted run to the same final metrics as an uninterrupted one.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.trainer import Trainer
from recbole.utils import EvaluatorType, set_color

from recbole_m6rec import registry
from recbole_m6rec.checkpoint import (
    capture_rng,
    load_plain_checkpoint,
    plain_settings,
    restore_rng,
    save_plain_checkpoint,
)
from recbole_m6rec.compat import PlainValueCollector
from recbole_m6rec.evaluation import check_history_mask_rule, known_item_index, sequential_history_matrix
from recbole_m6rec.per_user import PerUserEvaluator

__all__ = [
    "build_trainer",
    "RunHooks",
    "PluginTrainer",
    "M6RecTrainer",
    "NoTrainingTrainer",
    "whole_sequence_indices",
    "whole_sequence_loader",
]


def build_trainer(config, model, train_data, valid_data, test_data):
    """The trainer for ``model``: the class the registry names for it (RecBole's for RecBole models), with the
    run's hooks (:class:`RunHooks`). The data loaders are needed for the ``eval_history_mask: all`` rule."""
    rule = check_history_mask_rule(config["eval_history_mask"] or "recbole")
    base = registry.get_trainer(config["MODEL_TYPE"], config["model"])

    class RunTrainer(RunHooks, base):
        pass

    RunTrainer.__name__ = RunTrainer.__qualname__ = f"{base.__name__}WithRunHooks"
    return RunTrainer(config, model, rule, _known_items(rule, train_data, valid_data, test_data))


def _known_items(rule: str, train_data, valid_data, test_data) -> list:
    """``[(eval loader, user x item 0/1 matrix of the items to mask)]`` for the ``all`` rule on sequential data
    (RecBole passes no history index there; general models already get theirs from RecBole)."""
    dataset = train_data._dataset
    if rule != "all" or not hasattr(dataset, "item_id_list_field"):
        return []
    n_users, n_items = dataset.user_num, dataset.item_num
    return [
        (valid_data, sequential_history_matrix(n_users, n_items, dataset)),
        (test_data, sequential_history_matrix(n_users, n_items, dataset, valid_data._dataset)),
    ]


class RunHooks:
    """Hook overrides every run's trainer gets, whatever its model; subclassed once, by :func:`build_trainer`."""

    def __init__(self, config, model, history_mask_rule: str = "recbole", known_items: list | None = None):
        cpu_ddp = not config["single_spec"] and config["device"].type == "cpu"
        if cpu_ddp:
            config["single_spec"] = True  # skip AbstractTrainer's CUDA-only wrapping; done below instead
        try:
            super().__init__(config, model)
        finally:
            if cpu_ddp:
                config["single_spec"] = False
        if cpu_ddp:
            from torch.nn.parallel import DistributedDataParallel

            self.distributed_model = DistributedDataParallel(self.model)
        self.eval_collector = PlainValueCollector(config)
        self.evaluator = PerUserEvaluator(config)
        self.history_mask_rule = history_mask_rule
        self._known_items = list(known_items or [])
        self._current_eval_data = None
        self._evaluated_users: list[torch.Tensor] = []
        self._evaluated_samples: list[tuple[torch.Tensor, ...]] = []
        self._uid_field = config["USER_ID_FIELD"]
        self._iid_field = config["ITEM_ID_FIELD"]
        self._label_field = config["LABEL_FIELD"]

    def evaluate(self, eval_data, *args, **kwargs):
        self._current_eval_data = eval_data
        self._evaluated_users = []
        self._evaluated_samples = []
        return super().evaluate(eval_data, *args, **kwargs)

    def _full_sort_batch_eval(self, batched_data):
        interaction, history_index, positive_u, positive_i = batched_data
        if self.history_mask_rule == "none":
            history_index = None
        elif self.history_mask_rule == "all" and history_index is None:
            matrix = next((m for data, m in self._known_items if data is self._current_eval_data), None)
            if matrix is not None:
                history_index = known_item_index(matrix, interaction[self._uid_field].cpu().numpy())
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(
            (interaction, history_index, positive_u, positive_i)
        )
        self._evaluated_users.append(interaction[self._uid_field].detach().cpu())
        return interaction, scores, positive_u, positive_i

    def _neg_sample_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._neg_sample_batch_eval(batched_data)
        if self.config["eval_type"] == EvaluatorType.VALUE and self._label_field in interaction:
            fields = (self._uid_field, self._iid_field, self._label_field)
            columns = [interaction[name].detach().cpu().reshape(-1) for name in fields]
            self._evaluated_samples.append((*columns, scores.detach().float().cpu().reshape(-1)))
        return interaction, scores, positive_u, positive_i

    def per_sample_result(self, user_tokens, item_tokens) -> dict[str, list]:
        """``{"user": [...], "item": [...], "label": [...], "score": [...]}`` (raw tokens) for every sample of the
        last labelled evaluation, in evaluation order ({} after a ranking evaluation)."""
        if not self._evaluated_samples:
            return {}
        users, items, labels, scores = (torch.cat(column).numpy() for column in zip(*self._evaluated_samples))
        return {
            "user": [str(user_tokens[u]) for u in users],
            "item": [str(item_tokens[i]) for i in items],
            "label": [float(label) for label in labels],
            "score": [float(score) for score in scores],
        }

    def per_user_result(self, user_tokens) -> dict[str, dict[str, float]]:
        """``{metric: {raw user token: value}}`` for the last full-ranking evaluation ({} after sampled evaluation)."""
        if not self._evaluated_users or not self.evaluator.last_per_user:
            return {}
        users = torch.cat(self._evaluated_users).numpy()
        result = {}
        for metric, values in self.evaluator.last_per_user.items():
            if len(values) != len(users):
                return {}  # not one row per user (should not happen in full ranking); pair nothing rather than wrong
            result[metric] = {str(user_tokens[u]): float(v) for u, v in zip(users, values)}
        return result

    def _save_checkpoint(self, epoch, *args, **kwargs):
        model = self.model
        everything = model.other_parameter()
        if not any(isinstance(value, torch.nn.Module) for value in everything.values()):
            return super()._save_checkpoint(epoch, *args, **kwargs)
        # on this model instance only, while the checkpoint is written (a submodule's weights are in state_dict)
        model.other_parameter = lambda: {k: v for k, v in everything.items() if not isinstance(v, torch.nn.Module)}
        try:
            return super()._save_checkpoint(epoch, *args, **kwargs)
        finally:
            del model.other_parameter  # the class's method again


# --- the plugin's trainers -------------------------------------------------------------------------------------------
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


# settings that may differ between an interrupted run and its resumption without changing the result
_RESUME_NEUTRAL_KEYS = {"resume_checkpoint", "checkpoint_dir", "show_progress", "state", "log_wandb"}


class PluginTrainer(Trainer):
    """RecBole's ``Trainer`` with plain-data checkpoints and resume points (see the module docstring)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.resume_file = os.path.splitext(self.saved_model_file)[0] + "-last.pth"
        self._train_loader = None
        self._pending_rng = None

    def epoch_data(self, train_data):
        """The loader the training epochs iterate over (RecBole's training data itself here)."""
        return train_data

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        # RecBole sees the real training data (its evaluation collector counts item popularity there, for
        # AveragePopularity and TailPercentage); only the epochs iterate over epoch_data.
        self._train_loader = self.epoch_data(train_data)
        if self._pending_rng is not None:
            restore_rng(self._pending_rng, getattr(self._train_loader, "generator", None))
            self._pending_rng = None

        def after_evaluation(epoch_idx, valid_score):
            if saved:
                self._save_resume_point(epoch_idx, verbose)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        return super().fit(train_data, valid_data, verbose, saved, show_progress, after_evaluation)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        return super()._train_epoch(self._train_loader or train_data, epoch_idx, loss_func, show_progress)

    # ------------------------------------------------------------------------------------------- checkpoints
    def _training_state(self, epoch: int) -> dict:
        best_result = self.best_valid_result
        return {
            "model": self.config["model"],
            "dataset": self.config["dataset"],
            "settings": plain_settings(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": None if best_result is None else {k: float(v) for k, v in best_result.items()},
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def _is_writer(self) -> bool:
        return self.config["single_spec"] or self.config["local_rank"] == 0

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """The best model so far, as plain data (RecBole's own pickles its Config object)."""
        if not self._is_writer():
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        save_plain_checkpoint(saved_model_file, **self._training_state(epoch))
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _save_resume_point(self, epoch: int, verbose: bool = True) -> None:
        if not self._is_writer():
            return
        loader_generator = getattr(self._train_loader, "generator", None)
        save_plain_checkpoint(
            self.resume_file,
            **self._training_state(epoch),
            best_file=self.saved_model_file,
            train_loss={int(k): float(v) for k, v in self.train_loss_dict.items()},
            rng=capture_rng(loader_generator),
        )
        if verbose:
            self.logger.info(
                set_color("Resume point", "blue") + f": {self.resume_file} (epoch {epoch}; continue "
                f"with --resume_checkpoint={self.resume_file})"
            )

    def resume_checkpoint(self, resume_file):
        """Continue from a resume point (or a best-model checkpoint, then without its random states)."""
        checkpoint = load_plain_checkpoint(resume_file, map_location=self.device)
        if checkpoint["model"] != self.config["model"] or checkpoint["dataset"] != self.config["dataset"]:
            raise ValueError(
                f"'{resume_file}' holds {checkpoint['model']} on {checkpoint['dataset']}; this run is "
                f"{self.config['model']} on {self.config['dataset']}"
            )
        saved, current = checkpoint["settings"], plain_settings(self.config)
        changed = sorted(
            k for k in set(saved) | set(current) if k not in _RESUME_NEUTRAL_KEYS and saved.get(k) != current.get(k)
        )
        if changed:
            self.logger.warning(
                f"resuming with settings that differ from the checkpoint's: {changed}; the result "
                "will not match an uninterrupted run"
            )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint["other_parameter"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint["best_valid_result"]
        self.train_loss_dict = dict(checkpoint.get("train_loss") or {})
        if checkpoint.get("best_file"):
            self.saved_model_file = checkpoint["best_file"]
            self.resume_file = str(resume_file)
        self._pending_rng = checkpoint.get("rng")
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


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


class NoTrainingTrainer(PluginTrainer):
    """No training: the model is used as it is; ``fit`` evaluates the validation data once. No optimizer is built,
    so a model without trainable parameters needs no placeholder one."""

    def _build_optimizer(self, **kwargs):
        return None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.eval_collector.data_collect(train_data)
        if saved:
            self._save_checkpoint(-1, verbose=verbose)
        if not valid_data:
            return -1, None
        self.best_valid_score, self.best_valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
        if verbose:
            self.logger.info(f"{self.config['model']} (no training) valid result: {dict(self.best_valid_result)}")
        return self.best_valid_score, self.best_valid_result
