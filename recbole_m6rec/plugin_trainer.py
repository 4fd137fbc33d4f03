"""The plugin's trainers: RecBole's ``Trainer`` with plain-data checkpoints and resume points, and one for models
that train nothing.

* :class:`PluginTrainer`: checkpoints as plain data (:mod:`recbole_m6rec.checkpoint`; RecBole's own pickle its
  ``Config``), and besides the best model a resume point ``<best file>-last.pth`` after every evaluated epoch,
  holding the optimizer, the early-stopping state and every random state, so ``resume_checkpoint`` continues an
  interrupted run to the same final metrics as an uninterrupted one. ``epoch_data`` lets a subclass train on other
  batches than RecBole's training data (:class:`recbole_m6rec.m6rec_trainer.M6RecTrainer`).
* :class:`NoTrainingTrainer`: for models used as they are (M6RecZeroShot, MostPop, LikeRate): ``fit`` evaluates the
  validation data once.

:func:`recbole_m6rec.trainer.build_trainer` adds the hooks every run gets on top of these.
"""

from __future__ import annotations

import os

from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_m6rec.checkpoint import (
    capture_rng,
    load_plain_checkpoint,
    plain_settings,
    restore_rng,
    save_plain_checkpoint,
)

__all__ = ["PluginTrainer", "NoTrainingTrainer"]


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
