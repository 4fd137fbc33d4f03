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
* ``fit`` / ``_train_epoch`` / ``resume_checkpoint``: besides the best model, a resume point
  ``<best file>-last.pth`` after every evaluated epoch, holding the optimizer, the early-stopping state and every
  random state (:mod:`recbole_m6rec.checkpoint`), so ``resume_checkpoint`` continues an interrupted run, of a
  RecBole or a plugin model, to the same final metrics as an uninterrupted one (RecBole's own resume cannot load
  its checkpoints under torch >= 2.6, and they hold no random states). A base trainer may define
  ``epoch_data(train_data)``: the loader the epochs iterate over instead of RecBole's training data.
* ``_save_checkpoint``: submodules left out of ``other_parameter`` (DIN and DIEN list their ``embedding_layer``, a
  module holding the whole dataset, there; RecBole would pickle the dataset into every checkpoint).

The plugin's own trainer classes, which the registry names for plugin models, live in
:mod:`recbole_m6rec.plugin_trainer` (plain-data best-model checkpoints, no-training models) and
:mod:`recbole_m6rec.m6rec_trainer` (M6Rec's whole-sequence windows). A run of a RecBole model imports neither, so
its benchmark result does not depend on their code.
"""

from __future__ import annotations

import os

import torch
from recbole.utils import EvaluatorType, set_color

from recbole_m6rec import registry
from recbole_m6rec.checkpoint import (
    capture_rng,
    is_checkpoint_writer,
    load_plain_checkpoint,
    plain_settings,
    restore_rng,
    save_plain_checkpoint,
    training_state,
)
from recbole_m6rec.compat import PlainValueCollector
from recbole_m6rec.evaluation import check_history_mask_rule, known_item_index, sequential_history_matrix
from recbole_m6rec.per_user import PerUserEvaluator

__all__ = ["build_trainer", "RunHooks"]

# settings that may differ between an interrupted run and its resumption without changing the result
_RESUME_NEUTRAL_KEYS = {"resume_checkpoint", "checkpoint_dir", "show_progress", "state", "log_wandb"}


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
        self.resume_file = os.path.splitext(self.saved_model_file)[0] + "-last.pth"
        self._train_loader = None
        self._pending_rng = None

    # ------------------------------------------------------------------------------------- training and resuming
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        # RecBole sees the real training data (its evaluation collector counts item popularity there, for
        # AveragePopularity and TailPercentage); only the epochs iterate over epoch_data.
        epoch_data = getattr(self, "epoch_data", None)
        self._train_loader = epoch_data(train_data) if epoch_data else train_data
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
        loader = train_data if self._train_loader is None else self._train_loader
        return super()._train_epoch(loader, epoch_idx, loss_func, show_progress)

    def _save_resume_point(self, epoch: int, verbose: bool = True) -> None:
        if not is_checkpoint_writer(self.config):
            return
        save_plain_checkpoint(
            self.resume_file,
            **training_state(self, epoch),
            best_file=self.saved_model_file,
            train_loss={int(k): float(v) for k, v in self.train_loss_dict.items()},
            rng=capture_rng(getattr(self._train_loader, "generator", None)),
        )
        if verbose:
            self.logger.info(
                set_color("Resume point", "blue") + f": {self.resume_file} (epoch {epoch}; continue "
                f"with --resume_checkpoint={self.resume_file})"
            )

    def resume_checkpoint(self, resume_file):
        """Continue from a resume point (or a plain best-model checkpoint, then without its random states)."""
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
