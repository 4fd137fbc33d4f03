"""M6Rec with the real default language model (SmolLM2-135M) through RecBole's full pipeline on a slice of
ml-100k, against MostPop (ranking by training interactions) on the same split and under the same history-masking rule."""

import sys

import pytest

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.quick_start import run_pipeline

SLICE = {
    "user_inter_num_interval": "[0,60]",  # users with at most 60 ratings: a smaller, faster slice
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["Recall", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "eval_history_mask": "all",
    "show_progress": False,
    "state": "WARNING",
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        results = {}
        # ~450 users make ~500 training windows: small batches give M6Rec ~60 optimiser steps in 2 epochs (each step
        # scores every item, so steps are the cost). The learning rate and ID dropout are those before the defaults
        # took the full-data tuning's (0.0115, 0.5), which learn more slowly at first: with them this slice needed
        # 4 epochs (valid NDCG@10 0.027, 0.029, 0.078, 0.045 by epoch; test 0.058), twice this test's time.
        short_run = {"epochs": 2, "train_batch_size": 16, "learning_rate": 0.01, "item_id_dropout": 0.3}
        for model, extra in (("M6Rec", short_run), ("MostPop", {})):
            config = PluginConfig(
                model=model, dataset="ml-100k", config_dict={**SLICE, **extra, "checkpoint_dir": str(folder / "saved")}
            )
            results[model] = run_pipeline(config, saved=True)
    finally:
        sys.argv = argv
    return results


def test_m6rec_with_smollm2_beats_most_popular_on_the_same_slice(outcomes):
    m6rec, pop = outcomes["M6Rec"], outcomes["MostPop"]
    assert m6rec.split_fingerprint == pop.split_fingerprint
    assert m6rec.history_mask == pop.history_mask == "all"
    assert m6rec.extra["trainable_share"] < 0.02  # option-adapter, the item-state adapter and ID embeddings
    # concluded on validation (measured with these settings, 2 epochs, on a 2-core AMD EPYC: 0.0700 against
    # 0.0366; the defaults before the accuracy levers gave 0.0499 in 4 epochs); test has to agree (0.0617 against
    # 0.0453).
    # RecBole's Pop, a broken popularity count, would have been far easier: 0.0361 on test.
    m6rec_valid, pop_valid = m6rec.result["best_valid_result"]["ndcg@10"], pop.result["best_valid_result"]["ndcg@10"]
    assert m6rec_valid > 1.5 * pop_valid, (m6rec_valid, pop_valid)
    m6rec_test, pop_test = m6rec.result["test_result"]["ndcg@10"], pop.result["test_result"]["ndcg@10"]
    assert m6rec_test > 1.2 * pop_test, (m6rec_test, pop_test)
