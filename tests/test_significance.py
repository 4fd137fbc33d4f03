"""Confidence intervals and corrections for the leaderboard's comparisons: user bootstrap of a ratio of means,
Holm-Bonferroni, DeLong for AUC. Synthetic data with known answers; no model runs."""

import numpy as np
import pytest
from scipy import stats

from recbole_m6rec.benchmarks.significance import (
    auc_ci,
    defined_paired_ratio,
    holm,
    paired_auc_test,
    paired_ratio_ci,
    per_user_by_seed,
)


def keyed(values: np.ndarray, seeds=(2020, 2021, 2022)) -> dict[str, float]:
    """``values[s, u]`` -> ``{"<seed>:<user>": value}``."""
    return {f"{seed}:u{u}": float(values[i, u]) for i, seed in enumerate(seeds) for u in range(values.shape[1])}


def synthetic(rng, n_users, n_seeds=3, true_ratio=1.1, seed_noise=0.02, user_gain=0.3):
    """Per-user quality shared by both rows; the primary gains ``true_ratio`` on average, but each user by its own
    factor, the same on every seed (users differ more than seeds do); a small per-(seed, user) noise."""
    quality = rng.gamma(2.0, 0.1, size=n_users)
    gain = true_ratio + user_gain * rng.standard_normal(n_users)
    base = quality + seed_noise * rng.standard_normal((n_seeds, n_users))
    prim = gain * quality + seed_noise * rng.standard_normal((n_seeds, n_users))
    seeds = tuple(range(n_seeds))
    return keyed(prim, seeds), keyed(base, seeds)


# --- paired_ratio_ci ----------------------------------------------------------------------------------------------
def test_bootstrap_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(100):
        primary, baseline = synthetic(rng, n_users=150, n_seeds=5)
        ci = paired_ratio_ci(primary, baseline, n_boot=500, seed=rep)
        covered += ci["ci_low"] <= 1.1 <= ci["ci_high"]
    # 95% nominal; binomial sd over 100 runs is ~2 points. Resampling (seed, user) pairs as if independent
    # makes the interval too narrow here (each user's gain repeats on 5 seeds) and covers 59 of 100.
    assert covered >= 88


def test_interval_shrinks_with_more_users():
    rng = np.random.default_rng(1)
    small = paired_ratio_ci(*synthetic(rng, n_users=100), n_boot=2000)
    large = paired_ratio_ci(*synthetic(rng, n_users=1600), n_boot=2000)
    width = lambda ci: ci["ci_high"] - ci["ci_low"]  # noqa: E731
    assert width(large) < 0.4 * width(small)  # 16x the users: ~1/4 the width
    assert small["n_users"] == 100 and large["n_users"] == 1600 and small["n_seeds"] == 3


def test_identical_rows_give_ratio_1_and_p_1():
    rng = np.random.default_rng(2)
    values = keyed(rng.uniform(0, 1, size=(3, 200)))
    ci = paired_ratio_ci(values, dict(values))
    assert ci == {
        "ratio": 1.0,
        "ci_low": 1.0,
        "ci_high": 1.0,
        "p_value": 1.0,
        "p_floor": 2 / 10001,
        "n_users": 200,
        "n_seeds": 3,
    }


def test_a_pure_seed_shift_that_cancels_over_seeds_is_no_difference():
    """Primary = baseline + 0.05 on one seed and - 0.05 on the other: every user's total is unchanged, so every
    resample of users gives ratio 1. Resampling seeds apart from users would spread the ratios around 1."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 1, size=(2, 300))
    prim = base + np.array([[0.05], [-0.05]])
    ci = paired_ratio_ci(keyed(prim, (1, 2)), keyed(base, (1, 2)))
    assert ci["ratio"] == pytest.approx(1, abs=1e-12)
    assert ci["ci_low"] == pytest.approx(1, abs=1e-12) and ci["ci_high"] == pytest.approx(1, abs=1e-12)
    assert ci["p_value"] == 1.0


def test_a_shift_on_one_seed_only_is_a_real_difference():
    rng = np.random.default_rng(4)
    base = rng.uniform(0.2, 1, size=(2, 300))
    prim = base + np.array([[0.05], [0.0]])
    ci = paired_ratio_ci(keyed(prim, (1, 2)), keyed(base, (1, 2)), n_boot=2000)
    expected = prim.sum() / base.sum()
    assert ci["ratio"] == pytest.approx(expected)
    assert 1 < ci["ci_low"] < expected < ci["ci_high"]
    assert ci["p_value"] == pytest.approx(2 / 2001)  # no resample at or below 1: the smallest p this n_boot gives


def test_repeating_a_user_on_more_seeds_adds_no_evidence():
    """Three seeds with identical values say nothing more than one seed: the same interval."""
    rng = np.random.default_rng(5)
    prim, base = rng.uniform(0, 1, size=(1, 80)) + 0.05, rng.uniform(0, 1, size=(1, 80))
    one = paired_ratio_ci(keyed(prim, (1,)), keyed(base, (1,)), n_boot=3000, seed=7)
    three = paired_ratio_ci(
        keyed(np.repeat(prim, 3, 0), (1, 2, 3)), keyed(np.repeat(base, 3, 0), (1, 2, 3)), n_boot=3000, seed=7
    )
    for key in ("ratio", "ci_low", "ci_high", "p_value"):
        assert three[key] == pytest.approx(one[key], rel=1e-9)
    assert (one["n_seeds"], three["n_seeds"], three["n_users"]) == (1, 3, 80)


def test_pairs_on_common_keys_only_and_refuses_none():
    primary = {"1:a": 2.0, "1:b": 4.0, "2:a": 2.0, "1:only-primary": 100.0}
    baseline = {"1:a": 1.0, "1:b": 2.0, "2:a": 1.0, "2:only-baseline": 100.0}
    ci = paired_ratio_ci(primary, baseline, n_boot=200)
    assert ci["ratio"] == 2.0 and ci["n_users"] == 2 and ci["n_seeds"] == 2
    with pytest.raises(ValueError, match="no common"):
        paired_ratio_ci({"1:a": 1.0}, {"2:a": 1.0})
    with pytest.raises(ValueError, match="not '<seed>:<user>'"):
        paired_ratio_ci({"a": 1.0}, {"a": 1.0})
    with pytest.raises(ValueError, match="baseline's mean is 0"):
        paired_ratio_ci({"1:a": 1.0}, {"1:a": 0.0})


def test_an_interval_end_between_two_infinite_resamples_is_inf_not_nan():
    # the baseline scores on 2 of 100 users only: many resamples draw neither, and their ratio is inf
    primary = {f"1:u{u}": 0.3 for u in range(100)}
    baseline = {f"1:u{u}": 1.0 if u < 2 else 0.0 for u in range(100)}
    ci = paired_ratio_ci(primary, baseline, n_boot=2000)
    assert ci["ci_high"] == np.inf and np.isfinite(ci["ci_low"]) and ci["ci_low"] > 1


def test_same_seed_same_interval():
    primary, baseline = synthetic(np.random.default_rng(6), n_users=50)
    assert paired_ratio_ci(primary, baseline, seed=3) == paired_ratio_ci(primary, baseline, seed=3)


def test_per_user_by_seed_keys_finished_runs_by_seed_and_user():
    records = [
        {"row": "A", "seed": 1, "status": "ok", "per_user_test": {"ndcg@10": {"7": 0.5, "9": 0.0}}},
        {"row": "A", "seed": 2, "status": "ok", "per_user_test": {"ndcg@10": {"7": 0.25}}},
        {"row": "A", "seed": 3, "status": "failed"},
        {"row": "B", "seed": 1, "status": "ok", "per_user_test": {"ndcg@10": {"7": 1.0}}},
    ]
    assert per_user_by_seed(records, "A", "ndcg@10") == {"1:7": 0.5, "1:9": 0.0, "2:7": 0.25}


def test_a_paired_ratio_is_given_only_where_it_is_defined():
    mine = {"1:a": 1.0, "1:b": 0.0, "1:c": 1.0}
    assert defined_paired_ratio(mine, {"2:a": 1.0}) is None  # no shared key
    assert defined_paired_ratio(mine, {"1:a": 0.0, "1:b": 0.0, "1:z": 1.0}) is None  # nothing found on the shared
    assert defined_paired_ratio(mine, {"1:a": 1.0, "1:b": 1.0}) == paired_ratio_ci(mine, {"1:a": 1.0, "1:b": 1.0})


def test_per_user_by_seed_reads_the_named_values_of_the_kept_users_only():
    records = [
        {
            "row": "A",
            "seed": 1,
            "status": "ok",
            "per_user_test": {"recall@10": {"7": 1.0, "9": 0.0}},
            "per_user_valid": {"recall@10": {"7": 0.5, "8": 0.25, "9": 1.0}},
        },
    ]
    assert per_user_by_seed(records, "A", "recall@10", "per_user_valid") == {"1:7": 0.5, "1:8": 0.25, "1:9": 1.0}
    kept = per_user_by_seed(records, "A", "recall@10", "per_user_valid", keep={"8", "9"}.__contains__)
    assert kept == {"1:8": 0.25, "1:9": 1.0}


# --- holm ---------------------------------------------------------------------------------------------------------
def test_holm_matches_a_hand_computation():
    # sorted: d .005*4 = .02; a .01*3 = .03; c .03*2 = .06; b .04*1 = .04, raised to .06 to stay monotone
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert list(adjusted) == ["a", "b", "c", "d"]
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert holm({"x": 0.6, "y": 0.2}) == pytest.approx({"x": 0.6, "y": 0.4})
    assert holm({"x": 0.6, "y": 0.9, "z": 0.7}) == {"x": 1.0, "y": 1.0, "z": 1.0}
    assert holm({}) == {}
    with pytest.raises(ValueError, match="'x'"):
        holm({"x": 1.5})


# --- AUC ----------------------------------------------------------------------------------------------------------
def _ctr(rng, n=600, separation=1.0):
    """Imbalanced labels (~15% clicks) and a wider score spread for clicks: the two classes' variance terms differ."""
    labels = rng.uniform(size=n) < 0.15
    labels[:2], labels[2:4] = True, False
    signal = labels * separation + rng.standard_normal(n) * np.where(labels, 2.0, 0.5)
    a = np.round(signal + 0.5 * rng.standard_normal(n), 1)  # rounded: ties between the classes
    b = np.round(signal + 1.0 * rng.standard_normal(n), 1)
    return labels.astype(int), a, b


def test_auc_is_the_mann_whitney_statistic_with_ties_counted_half():
    labels, a, _ = _ctr(np.random.default_rng(0))
    u = stats.mannwhitneyu(a[labels == 1], a[labels == 0]).statistic
    expected = u / ((labels == 1).sum() * (labels == 0).sum())
    direct = np.mean([(p > q) + 0.5 * (p == q) for p in a[labels == 1] for q in a[labels == 0]])
    assert auc_ci(labels, a)["auc"] == pytest.approx(expected, abs=1e-12) == pytest.approx(direct, abs=1e-12)


def _bootstrap(labels, a, b, n_boot=2000, seed=0):
    """Stratified bootstrap of AUC(a), AUC(b): positives and negatives resampled separately, as DeLong assumes."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    m, n = len(pos), len(neg)

    def auc(s):  # Mann-Whitney through ranks of the pooled sample, midranks for ties
        return (stats.rankdata(s)[:m].sum() - m * (m + 1) / 2) / (m * n)

    out = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, m), rng.choice(neg, n)])
        out.append([auc(a[idx]), auc(b[idx])])
    return np.array(out)


def test_delong_variances_match_a_bootstrap():
    labels, a, b = _ctr(np.random.default_rng(1))
    boot = _bootstrap(labels, a, b)
    one = auc_ci(labels, a)
    delong_sd = (one["ci_high"] - one["ci_low"]) / (2 * stats.norm.ppf(0.975))
    assert delong_sd == pytest.approx(boot[:, 0].std(), rel=0.1)
    test = paired_auc_test(labels, a, b)
    diff_sd = (test["ci_high"] - test["ci_low"]) / (2 * stats.norm.ppf(0.975))
    # the scores are correlated: the difference's sd is well below what independent AUCs would give
    assert diff_sd == pytest.approx((boot[:, 0] - boot[:, 1]).std(), rel=0.1)
    assert diff_sd < 0.8 * np.hypot(boot[:, 0].std(), boot[:, 1].std())
    assert test["diff"] == pytest.approx(test["auc_a"] - test["auc_b"])
    assert test["auc_a"] == one["auc"]
    assert test["p_value"] == pytest.approx(2 * stats.norm.sf(abs(test["diff"]) / diff_sd))


def test_delong_on_equal_and_swapped_scores():
    labels, a, b = _ctr(np.random.default_rng(2))
    same = paired_auc_test(labels, a, a.copy())
    assert (same["diff"], same["ci_low"], same["ci_high"], same["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    ab, ba = paired_auc_test(labels, a, b), paired_auc_test(labels, b, a)
    assert ab["diff"] == pytest.approx(-ba["diff"]) and ab["p_value"] == pytest.approx(ba["p_value"])


def test_auc_input_errors_say_what_was_received():
    with pytest.raises(ValueError, match="0/1"):
        auc_ci([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="at least 2 samples of each class"):
        auc_ci([0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="one per label"):
        paired_auc_test([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2])
