"""Per-user values of RecBole's top-k metrics, kept next to the averages RecBole reports.

RecBole's evaluator returns one mean per metric; a paired significance test between two models needs each user's
value. ``PerUserEvaluator`` computes exactly what RecBole averages (the metric classes' own ``metric_info``), and
``with_per_user_record`` adds to any trainer the bookkeeping of which user each row belongs to (full-ranking
evaluation only: sampled evaluation has no one-row-per-user layout to pair on).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from recbole.evaluator import Evaluator
from recbole.evaluator.base_metric import TopkMetric

__all__ = ["PerUserEvaluator", "per_user_topk", "with_per_user_record"]


def per_user_topk(metric_objects: dict, dataobject) -> dict[str, np.ndarray]:
    """``{"ndcg@10": array of one value per evaluated user, ...}`` for every top-k metric with per-user values."""
    values = {}
    for name, metric in metric_objects.items():
        if not isinstance(metric, TopkMetric):
            continue  # coverage and popularity metrics describe the whole list set, not one user
        pos_index, pos_len = metric.used_info(dataobject)
        # Hit and MRR take pos_index only; Recall, NDCG, Precision also pos_len
        wants_pos_len = len(inspect.signature(metric.metric_info).parameters) > 1
        matrix = metric.metric_info(pos_index, pos_len) if wants_pos_len else metric.metric_info(pos_index)
        for k in metric.topk:
            values[f"{name}@{k}"] = np.asarray(matrix[:, k - 1], dtype=np.float64)
    return values


class PerUserEvaluator(Evaluator):
    """RecBole's evaluator; also keeps the per-user values of the last evaluation in ``last_per_user``."""

    def __init__(self, config):
        super().__init__(config)
        self.last_per_user: dict[str, np.ndarray] = {}

    def evaluate(self, dataobject):
        self.last_per_user = per_user_topk(self.metric_class, dataobject)
        return super().evaluate(dataobject)


class _PerUserRecordMixin:
    """Trainer mixin: the user of every full-ranking row, so ``per_user_result`` can name each value's user."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.evaluator = PerUserEvaluator(config)
        self._evaluated_users: list[torch.Tensor] = []
        self._uid_field = config["USER_ID_FIELD"]

    def evaluate(self, eval_data, *args, **kwargs):
        self._evaluated_users = []
        return super().evaluate(eval_data, *args, **kwargs)

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        self._evaluated_users.append(interaction[self._uid_field].detach().cpu())
        return interaction, scores, positive_u, positive_i

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


def with_per_user_record(trainer_class):
    """A subclass of ``trainer_class`` that records per-user metric values (see module docstring)."""
    return type(f"{trainer_class.__name__}PerUser", (_PerUserRecordMixin, trainer_class), {})
