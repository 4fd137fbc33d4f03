"""Per-user values of RecBole's top-k metrics, kept next to the averages RecBole reports.

RecBole's evaluator returns one mean per metric; a paired significance test between two models needs each user's
value. ``PerUserEvaluator`` computes exactly what RecBole averages (the metric classes' own ``metric_info``); the
run's trainer (:class:`recbole_m6rec.trainer.RunHooks`) records which user each row belongs to (full-ranking
evaluation only: sampled evaluation has no one-row-per-user layout to pair on).
"""

from __future__ import annotations

import inspect

import numpy as np
from recbole.evaluator import Evaluator
from recbole.evaluator.base_metric import TopkMetric

__all__ = ["PerUserEvaluator", "per_user_topk"]


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
