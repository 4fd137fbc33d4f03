"""The click-through protocol: leave-last-k-out split, per-sample test scores, the LikeRate floor, paired AUC tests.

Real ml-100k through RecBole's own pipeline (no language model: the rows here are LikeRate and an untrained FM).
"""

import math
import os
import stat

import numpy as np
import pandas as pd
import pytest
from helpers import QUIET

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks.job import compact_samples
from recbole_m6rec.benchmarks.report_stats import labelled_significance_lines
from recbole_m6rec.benchmarks.significance import auc_ci, paired_auc_over_seeds
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
    assert compact_samples({}) == {}


# --- the LikeRate floor ------------------------------------------------------------------------------------------
def test_like_rate_scores_equal_a_direct_count_on_the_raw_file(like_rate):
    raw = raw_interactions(like_rate)
    raw["label"] = (raw.rating >= 4).astype(float)
    raw = raw.sort_values("timestamp", kind="stable")
    position = raw.groupby("user_id").cumcount(ascending=False)  # 0 = the user's last interaction
    train = raw[position >= 10]
    prior = train.label.mean()
    per_item = train.groupby("item_id").label.agg(["sum", "count"])
    samples = like_rate.per_sample_test
    for k in range(0, len(samples["user"]), 397):  # a spread of test samples
        user, item = int(samples["user"][k]), int(samples["item"][k])
        history = raw[raw.user_id == user]
        row = int(np.flatnonzero((history.item_id == item).to_numpy())[0])
        recent = history.label.to_numpy()[max(0, row - 5) : row]
        likes, count = per_item.loc[item] if item in per_item.index else (0.0, 0.0)
        item_rate = (likes + prior) / (count + 1)
        expected = (item_rate + recent.mean()) / 2
        assert samples["score"][k] == pytest.approx(expected, abs=1e-5), (user, item)


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
    result = paired_auc_over_seeds(samples["Mine"], samples["Other"])
    assert result["diff"] > 0.1 and result["ci_low"] > 0 and result["p_value"] < 1e-6
    shifted = _record("Other", 1, labels[1:] + labels[:1], weak)  # other samples: never paired
    assert paired_auc_over_seeds(samples["Mine"], {1: shifted["per_sample_test"]}) is None
    summary = [{"row": "Mine", "runs": 1}, {"row": "Other", "runs": 1}]
    lines = "\n".join(labelled_significance_lines(records, summary, "auc", "Mine", "Other", ["Other"]))
    assert "vs Other (the best baseline on valid): **+" in lines and "2000 test samples" in lines


def test_the_null_difference_is_not_significant():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 3000).tolist()
    a = [float(y + rng.normal(0, 2.0)) for y in labels]
    b = [float(y + rng.normal(0, 2.0)) for y in labels]
    result = paired_auc_over_seeds({1: compact_samples(_samples(labels, a))}, {1: compact_samples(_samples(labels, b))})
    assert result["ci_low"] < 0 < result["ci_high"] and result["p_value"] > 0.05
    assert not math.isnan(result["diff"])


def _samples(labels, scores):
    return {"user": [str(u) for u in range(len(labels))], "item": ["1"] * len(labels), "label": labels, "score": scores}


# --- files ---------------------------------------------------------------------------------------------------------
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    path = atomic_write_text(tmp_path / "result.json", "{}")
    with open(tmp_path / "plain.json", "w") as handle:
        handle.write("{}")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)
