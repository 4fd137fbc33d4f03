"""The click-through protocol: leave-last-k-out split, per-sample test scores, the LikeRate floor, paired AUC tests.

Real ml-100k through RecBole's own pipeline (no language model: the rows here are LikeRate and an untrained FM).
"""

import json
import math
import os
import stat
import statistics

import numpy as np
import pandas as pd
import pytest
from helpers import QUIET

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks.kept_values import compact_samples
from recbole_m6rec.benchmarks.report import write_report
from recbole_m6rec.benchmarks.report_labelled import labelled_comparison_facts, labelled_significance_lines
from recbole_m6rec.benchmarks.significance import (
    auc_ci,
    auc_interval_over_users,
    holm,
    paired_auc_over_users,
    weighted_aucs,
)
from recbole_m6rec.config import PluginConfig
from recbole_m6rec.quick_start import run_pipeline
from recbole_m6rec.split import leave_last_counts

LABELLED = {
    **QUIET,
    "threshold": {"rating": 4},
    "train_neg_sample_args": None,
    "metrics": ["AUC", "LogLoss"],
    "valid_metric": "AUC",
}


def labelled_split(split) -> dict:
    return {**LABELLED, "eval_args": {"split": {"LS": split}, "order": "TO", "mode": "labeled", "group_by": "user"}}


def raw_interactions(outcome) -> pd.DataFrame:
    raw = pd.read_csv(os.path.join(outcome.config["data_path"], "ml-100k.inter"), sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    return raw


def run(model: str, split, **overrides):
    config = PluginConfig(model=model, dataset="ml-100k", config_dict={**labelled_split(split), **overrides})
    return run_pipeline(config, saved=False)


@pytest.fixture(scope="module")
def like_rate(no_foreign_argv_module):
    return run("LikeRate", [5, 5], like_rate_window=5)


@pytest.fixture(scope="module")
def untrained_fm(no_foreign_argv_module):
    return run("FM", [5, 5], epochs=0)


@pytest.fixture(scope="module")
def no_foreign_argv_module():
    import sys

    argv, sys.argv = sys.argv, [sys.argv[0]]
    yield
    sys.argv = argv


# --- the split ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, k_valid, k_test, expected",
    [
        (20, 5, 5, (5, 5)),
        (11, 5, 5, (5, 5)),
        (8, 5, 5, (2, 5)),
        (5, 5, 5, (0, 4)),
        (1, 5, 5, (0, 0)),
        (3, 0, 1, (0, 1)),
    ],
)
def test_leave_last_counts_keep_one_training_sample_and_fill_test_first(n, k_valid, k_test, expected):
    assert leave_last_counts(n, k_valid, k_test) == expected


@pytest.mark.parametrize("bad", [[5, 0], [5], [-1, 5], [1.5, 2], "last_five", [True, 1]])
def test_a_bad_leave_out_value_is_an_error_naming_it(bad):
    with pytest.raises(ValueError, match="eval_args.split.LS is"):
        PluginConfig(model="FM", dataset="ml-100k", config_dict=labelled_split(bad))


def test_sample_num_below_one_is_an_error_before_recbole_divides_by_it():
    with pytest.raises(ValueError, match="sample_num is 0"):
        PluginConfig(
            model="BPR",
            dataset="ml-100k",
            config_dict={**QUIET, "train_neg_sample_args": {"distribution": "uniform", "sample_num": 0}},
        )


def test_one_and_one_is_recboles_leave_one_out(no_foreign_argv_module):
    assert run("LikeRate", [1, 1]).split_fingerprint == run("LikeRate", "valid_and_test").split_fingerprint


def test_context_and_sequential_rows_get_the_same_last_five_samples(like_rate, untrained_fm):
    assert like_rate.split_fingerprint == untrained_fm.split_fingerprint
    assert len(like_rate.per_sample_test["score"]) == len(untrained_fm.per_sample_test["score"]) == 943 * 5


def test_test_samples_are_each_users_last_five_interactions(like_rate):
    raw = raw_interactions(like_rate)
    time_of = {(str(u), str(i)): t for u, i, t in zip(raw.user_id, raw.item_id, raw.timestamp)}
    samples = like_rate.per_sample_test
    held_out = pd.DataFrame(
        {"user": samples["user"], "time": [time_of[p] for p in zip(samples["user"], samples["item"])]}
    )
    for user, times in held_out.groupby("user").time:
        latest = np.sort(raw.timestamp[raw.user_id == int(user)].to_numpy())[-5:]
        # equal up to ties: RecBole orders min-max scaled float32 times, which merge times a few seconds apart
        np.testing.assert_allclose(np.sort(times.to_numpy()), latest, atol=5, err_msg=f"user {user}")


# --- per-sample scores -------------------------------------------------------------------------------------------
def test_per_sample_scores_give_recboles_test_auc(like_rate, untrained_fm):
    for outcome in (like_rate, untrained_fm):
        samples = outcome.per_sample_test
        assert auc_ci(samples["label"], samples["score"])["auc"] == pytest.approx(
            outcome.result["test_result"]["auc"], abs=1e-4
        )


def test_compact_samples_pair_a_context_row_with_a_sequential_row(like_rate, untrained_fm):
    a, b = compact_samples(like_rate.per_sample_test), compact_samples(untrained_fm.per_sample_test)
    assert a["samples_digest"] == b["samples_digest"]
    assert a["label"] == b["label"]
    assert a["user"] == b["user"] and len(set(a["user"])) == 943  # what the bootstrap resamples
    assert compact_samples({}) == {}


# --- the LikeRate floor ------------------------------------------------------------------------------------------
def test_like_rate_scores_equal_a_direct_count_on_the_raw_file(like_rate):
    raw = raw_interactions(like_rate)
    raw["label"] = (raw.rating >= 4).astype(float)
    raw = raw.sort_values("timestamp", kind="stable")
    # the times as the batches carry them: min-max scaled (normalize_all), float32
    span = raw.timestamp.max() - raw.timestamp.min()
    raw["time"] = ((raw.timestamp - raw.timestamp.min()) / span).astype(np.float32)
    position = raw.groupby("user_id").cumcount(ascending=False)  # 0 = the user's last interaction
    train = raw[position >= 10]
    prior = train.label.mean()
    per_item = train.groupby("item_id").label.agg(["sum", "count"])
    samples = like_rate.per_sample_test
    same_second = 0
    for k in range(0, len(samples["user"]), 197):  # a spread of test samples
        user, item = int(samples["user"][k]), int(samples["item"][k])
        history = raw[raw.user_id == user]
        row = int(np.flatnonzero((history.item_id == item).to_numpy())[0])
        window = history.iloc[max(0, row - 50) : row]  # MAX_ITEM_LIST_LENGTH
        earlier = window[window.time < history.time.iloc[row]]  # an outcome entered in the candidate's second: hidden
        same_second += len(earlier) < len(window)
        recent = earlier.label.to_numpy()[-5:]
        likes, count = per_item.loc[item] if item in per_item.index else (0.0, 0.0)
        item_rate = (likes + prior) / (count + 1)
        expected = (item_rate + (recent.mean() if len(recent) else prior)) / 2
        assert samples["score"][k] == pytest.approx(expected, abs=1e-5), (user, item)
    assert same_second >= 5  # samples whose history holds ratings of the candidate's second


def test_like_rate_window_must_be_a_whole_number(no_foreign_argv_module):
    with pytest.raises(ValueError, match="like_rate_window is -1"):
        run("LikeRate", [5, 5], like_rate_window=-1)


# --- paired AUC over seeds and the report's lines ----------------------------------------------------------------
def _record(row, seed, labels, scores):
    users = [str(u) for u in range(len(labels))]
    samples = compact_samples({"user": users, "item": ["1"] * len(labels), "label": labels, "score": scores})
    return {"row": row, "seed": seed, "status": "ok", "per_sample_test": samples}


def test_paired_auc_pairs_only_the_same_samples_and_sees_a_real_difference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000).tolist()
    good = [float(y + rng.normal(0, 1.0)) for y in labels]
    weak = [float(y + rng.normal(0, 3.0)) for y in labels]
    records = [_record("Mine", 1, labels, good), _record("Other", 1, labels, weak)]
    samples = {r["row"]: {r["seed"]: r["per_sample_test"]} for r in records}
    result = paired_auc_over_users(samples["Mine"], samples["Other"])
    assert result["diff"] > 0.1 and result["ci_low"] > 0 and result["p_value"] == result["p_floor"]
    shifted = _record("Other", 1, labels[1:] + labels[:1], weak)  # other samples: never paired
    assert paired_auc_over_users(samples["Mine"], {1: shifted["per_sample_test"]}) is None
    summary = [{"row": "Mine", "runs": 1, "valid": (0.7, 0.0)}, {"row": "Other", "runs": 1, "valid": (0.6, 0.0)}]
    lines = "\n".join(labelled_significance_lines(labelled_comparison_facts(records, summary, "auc", "Mine")))
    assert "vs Other (the best baseline on valid): **+" in lines and "2000 test samples from 2000 users" in lines
    assert "p ≤ 0.001, Holm p ≤ 0.001" in lines  # no resample on the far side: the bootstrap only bounds p


def _labelled_results(rng, n_samples: int):
    """``result(row, seed, noise, valid_auc)``: a finished click-through result on ``n_samples`` shared labelled test
    samples, scored as label + Gaussian noise of that size (less noise, higher AUC)."""
    labels = rng.integers(0, 2, n_samples).tolist()

    def result(row, seed, noise, valid_auc):
        record = _record(row, seed, labels, [float(y + rng.normal(0, noise)) for y in labels])
        samples = record["per_sample_test"]  # sorted by user: its own label order
        return {
            **record,
            "valid": {"auc": valid_auc},
            "test": {"auc": auc_ci(samples["label"], samples["score"])["auc"]},
            "train_seconds": 1.0,
            "peak_rss_mb": 1.0,
            "model": row,
            "dataset": "ml-100k",
            "split_fingerprint": "f",
        }

    return result


def test_a_labelled_report_writes_its_auc_comparison_as_data_with_the_reports_numbers(tmp_path):
    """``comparison.json`` of a click-through plan: the row chosen on validation, the best baseline on validation,
    their mean AUCs and differences over the seeds both ran, each row's test AUC interval and the paired differences,
    the same numbers as the report's lines."""
    result = _labelled_results(np.random.default_rng(4), 1500)
    # Mine-b is better on test, Mine-a on valid: validation chooses; Floor is the best baseline on valid
    records = [result("Mine-a", s, 1.5, 0.80) for s in (1, 2)] + [result("Mine-b", s, 0.5, 0.70) for s in (1, 2)]
    records += [result("Floor", s, 1.0, 0.75) for s in (1, 2)] + [result("Weak", s, 3.0, 0.72) for s in (1, 2)]
    labelled_eval = {"eval_args": {"mode": {"valid": "labeled", "test": "labeled"}}, "valid_metric": "AUC"}
    rows = {"Mine-a": {}, "Mine-b": {}, "Floor": {}, "Weak": {}}
    plan = {"dataset": "ml-100k", "seeds": [1, 2], "primary": "Mine-a", "common": labelled_eval, "rows": rows}
    write_report(plan, records, tmp_path, "x")
    facts = json.loads((tmp_path / "comparison.json").read_text())
    text = (tmp_path / "report.md").read_text()
    assert (facts["metric"], facts["chosen"], facts["best_baseline"], facts["seeds"]) == (
        "auc",
        "Mine-a",
        "Floor",
        [1, 2],
    )
    test_auc = {row: statistics.fmean(r["test"]["auc"] for r in records if r["row"] == row) for row in rows}
    assert facts["test"]["difference"] == pytest.approx(test_auc["Mine-a"] - test_auc["Floor"])
    assert facts["valid"]["difference"] == pytest.approx(0.80 - 0.75)
    assert f"valid **{0.05:+.4f}** (0.8000 vs 0.7500), test {facts['test']['difference']:+.4f} (" in text
    for row, interval in facts["test_auc"].items():
        assert interval["auc"] == pytest.approx(test_auc[row])
        assert f"{row} {interval['auc']:.4f} [{interval['ci_low']:.4f}, {interval['ci_high']:.4f}]" in text
    assert set(facts["paired_test"]) == {"Floor", "Weak"}  # Mine-b is of the chosen row's family
    for row, paired in facts["paired_test"].items():
        assert paired["diff"] == pytest.approx(test_auc["Mine-a"] - test_auc[row])
        line = next(line for line in text.splitlines() if line.startswith(f"  - vs {row}"))
        assert f"**{paired['diff']:+.4f}** [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}]" in line
        assert f"Holm p {'≤' if paired['p_is_bound'] else '='} {paired['holm_p']:.3g}" in line
    adjusted = holm({row: paired["p_value"] for row, paired in facts["paired_test"].items()})
    assert {row: paired["holm_p"] for row, paired in facts["paired_test"].items()} == pytest.approx(adjusted)
    assert facts["paired_test_vs_best_baseline"] == facts["paired_test"]["Floor"]


def test_results_without_a_samples_digest_are_never_paired():
    labels = [0, 1] * 50
    row = {"label": labels, "score": [float(y) for y in labels], "user": [str(u) for u in range(100)]}
    assert paired_auc_over_users({1: row}, {1: dict(row)}) is None  # nothing shows they scored the same samples
    assert paired_auc_over_users({1: {**row, "samples_digest": "d"}}, {1: {**row, "samples_digest": "d"}}) is not None


def test_the_p_floor_counts_only_resamples_with_an_auc():
    # four users, one sample each: a resample that draws only one class has no AUC and is left out
    row = {"samples_digest": "d", "label": [0, 1, 0, 1], "score": [0.1, 0.9, 0.2, 0.8], "user": ["a", "b", "c", "d"]}
    other = {**row, "score": [0.9, 0.1, 0.8, 0.2]}
    result = paired_auc_over_users({1: row}, {1: other}, n_boot=400)
    assert result["p_floor"] > 2 / 401  # about 1 in 8 resamples draws a single class
    assert result["p_value"] >= result["p_floor"]


def test_the_null_difference_is_not_significant():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 3000).tolist()
    a = [float(y + rng.normal(0, 2.0)) for y in labels]
    b = [float(y + rng.normal(0, 2.0)) for y in labels]
    result = paired_auc_over_users({1: compact_samples(_samples(labels, a))}, {1: compact_samples(_samples(labels, b))})
    assert result["ci_low"] < 0 < result["ci_high"] and result["p_value"] > 0.05
    assert not math.isnan(result["diff"])


def test_auc_intervals_resample_users_not_their_correlated_samples():
    rng = np.random.default_rng(2)
    n_users, per_user = 400, 5
    labels = np.repeat(rng.integers(0, 2, n_users), per_user)  # a user's samples move together
    a, b = (np.repeat(rng.normal(0, 1, n_users), per_user) + labels for _ in range(2))
    users = [str(u) for u in np.repeat(np.arange(n_users), per_user)]
    row_a = {"samples_digest": "same", "label": labels.tolist(), "score": a.tolist(), "user": users}
    row_b = {**row_a, "score": b.tolist()}
    by_sample_a = {key: value for key, value in row_a.items() if key != "user"}  # an older result: no users
    clustered, by_sample = auc_interval_over_users({1: row_a}), auc_interval_over_users({1: by_sample_a})
    assert clustered["clustered"] and clustered["n_users"] == n_users and not by_sample["clustered"]
    assert clustered["auc"] == by_sample["auc"] == pytest.approx(auc_ci(labels, a)["auc"], abs=1e-12)
    width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
    # five copies of each user carry one user's evidence: the interval is about sqrt(5) times wider
    assert width(clustered) > 1.8 * width(by_sample)
    paired = paired_auc_over_users({1: row_a}, {1: row_b})
    assert paired["n_users"] == n_users and paired["ci_low"] < paired["diff"] < paired["ci_high"]


def test_weighted_aucs_equal_the_auc_of_the_repeated_samples():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(labels + rng.normal(0, 1, 300), 1)  # rounded: many ties
    weights = rng.integers(0, 4, (3, 300))
    for row in weights:
        repeated = np.repeat(np.arange(300), row)
        expected = auc_ci(labels[repeated], scores[repeated])["auc"]
        assert weighted_aucs(labels, scores, row[None])[0] == pytest.approx(expected, abs=1e-12)


def _samples(labels, scores):
    return {"user": [str(u) for u in range(len(labels))], "item": ["1"] * len(labels), "label": labels, "score": scores}


# --- files ---------------------------------------------------------------------------------------------------------
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    path = atomic_write_text(tmp_path / "result.json", "{}")
    with open(tmp_path / "plain.json", "w") as handle:
        handle.write("{}")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)


def test_a_labelled_report_without_its_primary_row_yet_still_gives_each_rows_auc_interval(tmp_path):
    """An interim click-through report whose primary row has not finished compares nothing, but each finished row's
    test AUC still gets its interval and the samples and users it is over."""
    result = _labelled_results(np.random.default_rng(6), 900)
    records = [result("Base", s, 1.0, 0.75) for s in (1, 2)] + [result("Floor", s, 2.0, 0.70) for s in (1, 2)]
    labelled_eval = {"eval_args": {"mode": {"valid": "labeled", "test": "labeled"}}, "valid_metric": "AUC"}
    rows = {"Mine": {}, "Base": {}, "Floor": {}}
    write_report(
        {"dataset": "ml-100k", "seeds": [1, 2], "primary": "Mine", "common": labelled_eval, "rows": rows},
        records,
        tmp_path,
        "x",
    )
    text = (tmp_path / "report.md").read_text()
    assert not (tmp_path / "comparison.json").exists() or "chosen" not in json.loads(
        (tmp_path / "comparison.json").read_text()
    )
    line = next(line for line in text.splitlines() if line.startswith("- Test AUC with its 95% interval"))
    assert "900 test samples from 900 users" in line
    for row in ("Base", "Floor"):
        auc = statistics.fmean(r["test"]["auc"] for r in records if r["row"] == row)
        assert f"{row} {auc:.4f} [" in line


def test_a_labelled_plans_pairs_compare_rows_of_the_same_information_by_auc_difference(tmp_path):
    """Named pairs in a click-through plan (e.g. a row without history outcomes against a baseline that gets none):
    the AUC difference on the same test samples with its paired interval, Holm-adjusted over the pairs, in
    comparison.json and the report, whichever row validation chose."""
    result = _labelled_results(np.random.default_rng(5), 1200)
    records = [result("Mine", s, 0.6, 0.80) for s in (1, 2)] + [result("Mine-plain", s, 1.0, 0.70) for s in (1, 2)]
    records += [result("Base", s, 2.0, 0.65) for s in (1, 2)] + [result("Floor", s, 0.8, 0.75) for s in (1, 2)]
    labelled_eval = {"eval_args": {"mode": {"valid": "labeled", "test": "labeled"}}, "valid_metric": "AUC"}
    rows = {"Mine": {}, "Mine-plain": {}, "Base": {}, "Floor": {}}
    pairs = {"same-information": ["Mine-plain", "Base"], "with-outcomes": ["Mine", "Floor"]}
    plan = {"dataset": "ml-100k", "seeds": [1, 2], "primary": "Mine", "common": labelled_eval, "rows": rows}
    write_report({**plan, "pairs": pairs}, records, tmp_path, "x")
    facts = json.loads((tmp_path / "comparison.json").read_text())
    text = (tmp_path / "report.md").read_text()
    same = facts["pairs"]["same-information"]
    assert (same["row"], same["reference"], same["seeds"]) == ("Mine-plain", "Base", [1, 2])
    test_auc = {row: statistics.fmean(r["test"]["auc"] for r in records if r["row"] == row) for row in rows}
    assert same["test"]["difference"] == pytest.approx(test_auc["Mine-plain"] - test_auc["Base"])
    assert same["valid"]["difference"] == pytest.approx(0.70 - 0.65)
    paired = same["paired_test"]
    assert paired["ci_low"] > 0 and paired["diff"] == pytest.approx(same["test"]["difference"])
    adjusted = holm({name: pair["paired_test"]["p_value"] for name, pair in facts["pairs"].items()})
    assert {name: pair["paired_test"]["holm_p"] for name, pair in facts["pairs"].items()} == pytest.approx(adjusted)
    assert f"- same-information: Mine-plain − Base, seed(s) 1, 2: valid **{0.05:+.4f}** (0.7000 vs 0.6500)" in text
    assert f"paired test **{paired['diff']:+.4f}** [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}]" in text
