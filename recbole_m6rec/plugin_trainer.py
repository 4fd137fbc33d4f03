"""The plugin's trainers: RecBole's ``Trainer`` with plain-data checkpoints, and one for models that train nothing.

* :class:`PluginTrainer`: best-model checkpoints as plain data (:mod:`recbole_m6rec.checkpoint`; RecBole's own
  pickle its ``Config``). ``epoch_data`` lets a subclass train on other batches than RecBole's training data
  (:class:`recbole_m6rec.m6rec_trainer.M6RecTrainer`). Resume points, which every run gets, are
  :class:`recbole_m6rec.trainer.RunHooks`' job.
* :class:`NoTrainingTrainer`: for models used as they are (M6RecZeroShot, MostPop, LikeRate): ``fit`` evaluates the
  validation data once.

:func:`recbole_m6rec.trainer.build_trainer` adds the hooks every run gets on top of these.
"""

from __future__ import annotations

from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_m6rec.checkpoint import is_checkpoint_writer, save_plain_checkpoint, training_state

__all__ = ["PluginTrainer", "NoTrainingTrainer"]


class PluginTrainer(Trainer):
    """RecBole's ``Trainer`` whose best-model checkpoints are plain data (see the module docstring)."""

    def epoch_data(self, train_data):
        """The loader the training epochs iterate over (RecBole's training data itself here)."""
        return train_data

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """The best model so far, as plain data (RecBole's own pickles its Config object)."""
        if not is_checkpoint_writer(self.config):
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        save_plain_checkpoint(saved_model_file, **training_state(self, epoch))
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


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
