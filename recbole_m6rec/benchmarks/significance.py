"""Paired significance test over users between two rows of a leaderboard.

Each run stores every test user's value of the main metric (``per_user_test`` in its result file). For two rows,
a user's value is averaged over the seeds both rows finished, and the two models are compared user by user:
Wilcoxon's signed-rank test (no normality assumed; ties at zero difference, common for NDCG@10, are dropped as in
``scipy.stats.wilcoxon``'s default) and the paired t-test, both two-sided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedTest", "paired_test", "per_user_means"]


@dataclass
class PairedTest:
    metric: str
    row_a: str
    row_b: str
    seeds: list
    n_users: int
    mean_a: float
    mean_b: float
    wilcoxon_p: float
    t_test_p: float

    def sentence(self) -> str:
        diff = self.mean_a - self.mean_b
        return (f"{self.row_a} vs {self.row_b}, test {self.metric} per user (averaged over seeds "
                f"{', '.join(map(str, self.seeds))}), {self.n_users} users: {self.mean_a:.4f} vs {self.mean_b:.4f} "
                f"(difference {diff:+.4f}); Wilcoxon signed-rank p = {self.wilcoxon_p:.3g}, paired t-test "
                f"p = {self.t_test_p:.3g}")


def per_user_means(records: list[dict], row: str, metric: str, seeds: list) -> dict[str, float]:
    """A row's per-user value of ``metric``, averaged over ``seeds``."""
    runs = [r["per_user_test"][metric] for r in records
            if r["row"] == row and r.get("status") == "ok" and r["seed"] in seeds
            and metric in (r.get("per_user_test") or {})]
    if not runs:
        return {}
    users = set(runs[0]).intersection(*runs[1:])
    return {u: float(np.mean([run[u] for run in runs])) for u in users}


def paired_test(records: list[dict], row_a: str, row_b: str, metric: str) -> PairedTest | None:
    """The test on the users and seeds both rows have; None when they share no per-user values."""

    def seeds_of(row):
        return {r["seed"] for r in records if r["row"] == row and r.get("status") == "ok"
                and metric in (r.get("per_user_test") or {})}

    seeds = sorted(seeds_of(row_a) & seeds_of(row_b))
    a, b = per_user_means(records, row_a, metric, seeds), per_user_means(records, row_b, metric, seeds)
    users = sorted(set(a) & set(b))
    if not users:
        return None
    x = np.array([a[u] for u in users])
    y = np.array([b[u] for u in users])
    if np.allclose(x, y):
        wilcoxon_p = t_test_p = 1.0  # identical per-user values: no evidence of any difference
    else:
        wilcoxon_p = float(stats.wilcoxon(x, y).pvalue)
        t_test_p = float(stats.ttest_rel(x, y).pvalue)
    return PairedTest(metric, row_a, row_b, seeds, len(users), float(x.mean()), float(y.mean()), wilcoxon_p, t_test_p)
