"""Paired comparisons between two rows of a leaderboard: tests, confidence intervals, multiple-comparison correction.

Each run stores every test user's value of the main metric (``per_user_test`` in its result file).

- :func:`paired_test`: a user's value is averaged over the seeds both rows finished, and the two models are compared
  user by user: Wilcoxon's signed-rank test (no normality assumed; ties at zero difference, common for NDCG@10, are
  dropped as in ``scipy.stats.wilcoxon``'s default) and the paired t-test, both two-sided.
- :func:`paired_ratio_ci`: the ratio of the two rows' means (``1.05`` = 5% better) with a 95% bootstrap interval
  and p-value. Values are keyed ``"<seed>:<user>"`` (:func:`per_user_by_seed`); the bootstrap resamples users, each
  with its values on every seed, so seeds of one user are not counted as independent evidence.
- :func:`holm`: Holm-Bonferroni adjusted p-values, for a report that compares the primary row with several others.
- :func:`auc_ci`, :func:`paired_auc_test`: DeLong's interval for one AUC, and DeLong's test for two AUCs on the same
  test samples (DeLong, DeLong & Clarke-Pearson, Biometrics 1988), computed with midranks (Sun & Xu, 2014). They
  treat samples as independent: right for one test sample per user.
- :func:`auc_interval_over_users`, :func:`paired_auc_over_users`: the same questions when a user has several test
  samples (leave-last-N-out), whose outcomes are correlated: a bootstrap that resamples users, each with all its
  samples, over the seeds both rows ran. The leaderboard's CTR reports use these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "PairedTest",
    "auc_ci",
    "auc_interval_over_users",
    "defined_paired_ratio",
    "holm",
    "paired_auc_over_users",
    "paired_auc_test",
    "paired_ratio_ci",
    "paired_test",
    "per_user_by_seed",
    "per_user_means",
    "weighted_aucs",
]


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
        return (
            f"{self.row_a} vs {self.row_b}, test {self.metric} per user (averaged over seeds "
            f"{', '.join(map(str, self.seeds))}), {self.n_users} users: {self.mean_a:.4f} vs {self.mean_b:.4f} "
            f"(difference {diff:+.4f}); Wilcoxon signed-rank p = {self.wilcoxon_p:.3g}, paired t-test "
            f"p = {self.t_test_p:.3g}"
        )


def per_user_means(records: list[dict], row: str, metric: str, seeds: list) -> dict[str, float]:
    """A row's per-user value of ``metric``, averaged over ``seeds``."""
    runs = [
        r["per_user_test"][metric]
        for r in records
        if r["row"] == row
        and r.get("status") == "ok"
        and r["seed"] in seeds
        and metric in (r.get("per_user_test") or {})
    ]
    if not runs:
        return {}
    users = set(runs[0]).intersection(*runs[1:])
    return {u: float(np.mean([run[u] for run in runs])) for u in users}


def paired_test(records: list[dict], row_a: str, row_b: str, metric: str) -> PairedTest | None:
    """The test on the users and seeds both rows have; None when they share no per-user values."""

    def seeds_of(row):
        return {
            r["seed"]
            for r in records
            if r["row"] == row and r.get("status") == "ok" and metric in (r.get("per_user_test") or {})
        }

    seeds = sorted(seeds_of(row_a) & seeds_of(row_b))
    a, b = per_user_means(records, row_a, metric, seeds), per_user_means(records, row_b, metric, seeds)
    users = sorted(set(a) & set(b))
    if not users:
        return None
    x = np.array([a[u] for u in users])
    y = np.array([b[u] for u in users])
    if np.array_equal(x, y):  # exactly: a small but consistent difference is still evidence
        wilcoxon_p = t_test_p = 1.0  # identical per-user values: no evidence of any difference
    else:
        wilcoxon_p = float(stats.wilcoxon(x, y).pvalue)
        t_test_p = float(stats.ttest_rel(x, y).pvalue)
    return PairedTest(metric, row_a, row_b, seeds, len(users), float(x.mean()), float(y.mean()), wilcoxon_p, t_test_p)


# --- ratio of means with a user bootstrap --------------------------------------------------------------------------
def per_user_by_seed(
    records: list[dict],
    row: str,
    metric: str,
    values: str = "per_user_test",
    keep: Callable[[str], bool] | None = None,
) -> dict[str, float]:
    """A row's per-user value of ``metric`` on every finished seed, keyed ``"<seed>:<user>"`` (for
    :func:`paired_ratio_ci`); from the results' ``values`` (``per_user_valid`` for validation), only the users
    ``keep`` accepts where it is given (a user group)."""
    return {
        f"{r['seed']}:{user}": float(value)
        for r in records
        if r["row"] == row and r.get("status") == "ok" and metric in (r.get(values) or {})
        for user, value in r[values][metric].items()
        if keep is None or keep(user)
    }


def _user_sums(primary: dict[str, float], baseline: dict[str, float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-user sums over the common ``"<seed>:<user>"`` keys of both rows, and the number of seeds."""
    keys = sorted(set(primary) & set(baseline))
    if not keys:
        raise ValueError(
            f"no common '<seed>:<user>' keys to pair (primary has {len(primary)} keys, e.g. "
            f"{next(iter(primary), None)!r}; baseline has {len(baseline)}, e.g. "
            f"{next(iter(baseline), None)!r})"
        )
    users, seeds, rows = {}, set(), []
    for key in keys:
        seed, sep, user = str(key).partition(":")
        if not sep:
            raise ValueError(f"key {key!r} is not '<seed>:<user>'")
        seeds.add(seed)
        rows.append(users.setdefault(user, len(users)))
    rows = np.asarray(rows)
    p = np.array([primary[k] for k in keys], dtype=float)
    b = np.array([baseline[k] for k in keys], dtype=float)
    if not (np.isfinite(p).all() and np.isfinite(b).all()):
        raise ValueError("per-user values must be finite numbers")
    return np.bincount(rows, p, len(users)), np.bincount(rows, b, len(users)), len(seeds)


def defined_paired_ratio(primary: dict[str, float], baseline: dict[str, float]) -> dict | None:
    """:func:`paired_ratio_ci` where the ratio is defined: ``None`` when the two share no ``"<seed>:<user>"`` key or
    the baseline's values on the shared keys are all 0 (a ratio over nothing found)."""
    shared = set(primary) & set(baseline)
    if not shared or not sum(baseline[key] for key in shared):
        return None
    return paired_ratio_ci(primary, baseline)


def paired_ratio_ci(primary: dict[str, float], baseline: dict[str, float], n_boot: int = 10000, seed: int = 0) -> dict:
    """``mean(primary) / mean(baseline)`` over their common ``"<seed>:<user>"`` keys, with a 95% percentile bootstrap
    interval and a two-sided p-value for ratio = 1.

    Each of ``n_boot`` resamples draws users with replacement, every drawn user bringing its values on all seeds, so
    the interval reflects how many users there are, not users times seeds. The p-value is the bootstrap's: twice the
    smaller share of resampled ratios on either side of 1 (so p < 0.05 exactly when 1 is outside the interval, up to
    resampling noise). A resample whose baseline sum is 0 has ratio inf (1 if the primary's is 0 too).
    Returns ``ratio, ci_low, ci_high, p_value, p_floor`` (the smallest p it can give), ``n_users, n_seeds``.
    """
    if not (isinstance(n_boot, int) and n_boot > 0):
        raise ValueError(f"n_boot must be a positive int (got {n_boot!r})")
    p_user, b_user, n_seeds = _user_sums(primary, baseline)
    if b_user.sum() == 0:
        raise ValueError("the baseline's mean is 0 on the common keys: the ratio is undefined")
    n = len(p_user)
    rng = np.random.default_rng(seed)
    ratios = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # bounded memory: chunk x n user indices at a time
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        num, den = p_user[idx].sum(axis=1), b_user[idx].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[start : start + len(idx)] = np.where(den > 0, num / den, np.where(num > 0, np.inf, 1.0))
    # resampled sums of equal values can differ in the last bits: ratios within 1e-12 of 1 count as 1
    below = np.count_nonzero(ratios <= 1 + 1e-12)
    above = np.count_nonzero(ratios >= 1 - 1e-12)
    p_value = min(1.0, 2 * (min(below, above) + 1) / (n_boot + 1))
    # between two inf resamples linear interpolation gives inf - inf = nan; the interval's end is inf there
    with np.errstate(invalid="ignore"):
        low, high = np.nan_to_num(np.percentile(ratios, [2.5, 97.5]), nan=np.inf, posinf=np.inf, neginf=-np.inf)
    return {
        "ratio": float(p_user.sum() / b_user.sum()),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p_value),
        "p_floor": 2 / (n_boot + 1),
        "n_users": int(n),
        "n_seeds": int(n_seeds),
    }


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down; controls the family-wise error rate), in the input's order."""
    for name, p in p_values.items():
        if not (isinstance(p, (int, float)) and 0 <= p <= 1):
            raise ValueError(f"p-value of {name!r} must be a number in [0, 1] (got {p!r})")
    ordered = sorted(p_values, key=lambda name: p_values[name])
    m, running, adjusted = len(ordered), 0.0, {}
    for i, name in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * float(p_values[name])))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}


# --- AUC: DeLong ---------------------------------------------------------------------------------------------------
def _labels_and_scores(labels, *scores) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be a 1-d sequence of 0/1 (got values {np.unique(y)[:5].tolist()})")
    y = y.astype(bool)
    if min(y.sum(), (~y).sum()) < 2:
        raise ValueError(
            f"DeLong needs at least 2 samples of each class (got {int(y.sum())} positives out of " f"{len(y)})"
        )
    out = []
    for s in scores:
        s = np.asarray(s, dtype=float)
        if s.shape != y.shape or not np.isfinite(s).all():
            raise ValueError(f"scores must be {len(y)} finite numbers, one per label (got shape {s.shape})")
        out.append(s)
    return y, out


def _delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of each score vector and their DeLong covariance matrix."""
    pos, neg = [s[y] for s in scores], [s[~y] for s in scores]
    m, n = len(pos[0]), len(neg[0])
    v10, v01, aucs = [], [], []
    for x, z in zip(pos, neg):
        r_all = stats.rankdata(np.concatenate([x, z]))  # midranks: ties count one half
        r_x, r_z = stats.rankdata(x), stats.rankdata(z)
        aucs.append((r_all[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((r_all[:m] - r_x) / n)  # per positive: share of negatives it beats
        v01.append(1 - (r_all[m:] - r_z) / m)  # per negative: share of positives that beat it
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return np.array(aucs), cov


def auc_ci(labels, scores, alpha: float = 0.05) -> dict:
    """AUC with DeLong's ``1 - alpha`` normal interval (clipped to [0, 1]): ``auc, ci_low, ci_high``."""
    y, (s,) = _labels_and_scores(labels, scores)
    aucs, cov = _delong(y, [s])
    half = stats.norm.ppf(1 - alpha / 2) * math.sqrt(max(cov[0, 0], 0.0))
    auc = float(aucs[0])
    return {"auc": auc, "ci_low": max(0.0, auc - half), "ci_high": min(1.0, auc + half)}


def paired_auc_test(labels, scores_a, scores_b, alpha: float = 0.05) -> dict:
    """DeLong's test of two AUCs on the same samples: ``auc_a, auc_b, diff`` (a - b) with its ``1 - alpha`` interval
    ``ci_low, ci_high``, its standard error ``se`` and the two-sided ``p_value`` for diff = 0."""
    y, (a, b) = _labels_and_scores(labels, scores_a, scores_b)
    aucs, cov = _delong(y, [a, b])
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    if se == 0:
        p_value = 1.0 if diff == 0 else 0.0
    else:
        p_value = float(2 * stats.norm.sf(abs(diff) / se))
    half = stats.norm.ppf(1 - alpha / 2) * se
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "diff": diff,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "se": se,
        "p_value": p_value,
    }


# --- AUC: a bootstrap over users ----------------------------------------------------------------------------------
def weighted_aucs(labels, scores, weights: np.ndarray) -> np.ndarray:
    """AUC of ``scores`` for each row of ``weights`` ``[B n]`` (sample k counted ``weights[b, k]`` times; ties count
    one half): the AUCs of ``B`` bootstrap resamples at once. With all weights 1 it is the ordinary AUC."""
    y, (s,) = _labels_and_scores(labels, scores)
    order = np.argsort(s, kind="stable")
    w = np.asarray(weights, dtype=float)[:, order]
    y, s = y[order], s[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first sample of each group of equal scores
    pos = np.add.reduceat(w * y, starts, axis=1)  # [B G] weight of positives per score group
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower than the group
    with np.errstate(divide="ignore", invalid="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def _user_resampled_aucs(runs: list[dict], n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Each run's AUC and its AUCs on ``n_boot`` resamples ``[B runs]`` that draw users with replacement, each drawn
    user bringing all its samples in every run (so one user's samples, correlated, are never counted as independent).
    A run is a result's ``per_sample_test`` (``label``, ``score``, ``user``); results without ``user`` (older ones)
    are resampled sample by sample, and the returned facts say so."""
    clustered = all("user" in run for run in runs)
    groups = [run["user"] if clustered else [str(k) for k in range(len(run["label"]))] for run in runs]
    users = sorted(set().union(*groups))
    index = {user: k for k, user in enumerate(users)}
    members = [np.array([index[u] for u in group]) for group in groups]
    rng = np.random.default_rng(seed)
    resampled = np.empty((n_boot, len(runs)))
    chunk = max(1, 1_000_000 // max(len(m) for m in members))
    for start in range(0, n_boot, chunk):
        draws = rng.integers(0, len(users), size=(min(chunk, n_boot - start), len(users)))
        counts = np.stack([np.bincount(row, minlength=len(users)) for row in draws])  # [b users]
        for j, (run, member) in enumerate(zip(runs, members)):
            resampled[start : start + len(draws), j] = weighted_aucs(run["label"], run["score"], counts[:, member])
    observed = np.array([weighted_aucs(r["label"], r["score"], np.ones((1, len(r["label"]))))[0] for r in runs])
    facts = {"clustered": clustered, "n_users": len(users), "samples": len(runs[0]["label"]), "n_boot": n_boot}
    return observed, resampled, facts


def _bootstrap_p(values: np.ndarray, null: float) -> float:
    """Two-sided bootstrap p for ``null``: twice the smaller share of resampled values on either side, +1 corrected
    (so never below ``2 / (B + 1)``)."""
    finite = values[np.isfinite(values)]
    below, above = np.count_nonzero(finite <= null), np.count_nonzero(finite >= null)
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(finite) + 1)))


def auc_interval_over_users(by_seed: dict, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """A row's test AUC, mean over its seeds, with a 95% percentile interval from resampling users (each with all
    its samples on every seed). ``by_seed`` maps a seed to a result's ``per_sample_test``; ``None`` when empty.
    Returns ``auc, ci_low, ci_high, seeds, samples, n_users, clustered``."""
    runs = [run for _, run in sorted(by_seed.items(), key=lambda kv: str(kv[0])) if run]
    if not runs:
        return None
    observed, resampled, facts = _user_resampled_aucs(runs, n_boot, seed)
    low, high = np.nanpercentile(resampled.mean(axis=1), [2.5, 97.5])
    return {"auc": float(observed.mean()), "ci_low": float(low), "ci_high": float(high), "seeds": len(runs), **facts}


def paired_auc_over_users(primary: dict, baseline: dict, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """Two rows' test AUCs compared on the same labelled samples, over the seeds both ran: the mean over seeds of
    the AUC difference (primary - baseline), a 95% percentile interval and a two-sided p for difference = 0 from a
    paired bootstrap that resamples users (the same users for both rows, each with all its samples on every seed).

    ``primary`` and ``baseline`` map a seed to ``{"samples_digest", "label", "score", "user"}`` (a result's
    ``per_sample_test``); a seed counts only when both rows scored the same samples in the same order (same digest).
    Resampling users, not samples, matters when a user contributes several test samples (leave-last-N-out): their
    outcomes are correlated, and a per-sample interval (DeLong's included) would be too narrow. ``None`` when no
    seed pairs. Returns ``auc_a, auc_b, diff, ci_low, ci_high, p_value, p_floor, seeds, samples, n_users,
    clustered``."""
    seeds = [
        s
        for s in sorted(set(primary) & set(baseline), key=str)
        if primary[s]
        and baseline[s]
        and primary[s].get("samples_digest") is not None  # no digest: nothing shows the samples are the same
        and primary[s].get("samples_digest") == baseline[s].get("samples_digest")
    ]
    if not seeds:
        return None
    runs = [primary[s] for s in seeds] + [baseline[s] for s in seeds]
    observed, resampled, facts = _user_resampled_aucs(runs, n_boot, seed)
    k = len(seeds)
    diffs = resampled[:, :k].mean(axis=1) - resampled[:, k:].mean(axis=1)
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return {
        "auc_a": float(observed[:k].mean()),
        "auc_b": float(observed[k:].mean()),
        "diff": float(observed[:k].mean() - observed[k:].mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": _bootstrap_p(diffs, 0.0),
        "p_floor": 2 / (int(np.isfinite(diffs).sum()) + 1),  # resamples without an AUC (one class only) are left out
        "seeds": k,
        **facts,
    }
