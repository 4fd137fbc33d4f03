"""M6RecCTR through RecBole's pipeline: one labelled split shared with DIN and FM (proven by fingerprint), AUC and
LogLoss from RecBole's evaluator, and re-ranking a retriever's top-K (tiny backbones, a slice of ml-100k)."""

import pytest
from helpers import QUIET

from recbole_m6rec.benchmarks.rerank import rerank
from recbole_m6rec.config import PluginConfig
from recbole_m6rec.quick_start import run_pipeline

SLICE = {"user_inter_num_interval": "[0,30]", "MAX_ITEM_LIST_LENGTH": 10, "epochs": 2, "stopping_step": 100, **QUIET}
LABELLED = {
    "threshold": {"rating": 4},
    "train_neg_sample_args": None,
    "metrics": ["AUC", "LogLoss"],
    "valid_metric": "AUC",
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "labeled", "group_by": "user"},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, request):
    path = tmp_path_factory.mktemp("ctr")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path)  # RecBole writes log/ and saved/ under the working directory
        yield path


def run(model, workdir, **settings):
    config = PluginConfig(
        model=model,
        dataset="ml-100k",
        config_dict={
            **SLICE,
            "checkpoint_dir": str(workdir / "saved"),
            "text_cache_dir": str(workdir / "cache"),
            **settings,
        },
    )
    return run_pipeline(config, saved=True)


@pytest.fixture(scope="module")
def ctr(workdir):
    return run("M6RecCTR", workdir, plm_name_or_path="tiny-random-llama")


def test_m6recctr_din_and_fm_share_one_labelled_split(ctr, workdir):
    din = run("DIN", workdir, **LABELLED)
    fm = run("FM", workdir, **LABELLED)
    assert ctr.split_fingerprint == din.split_fingerprint == fm.split_fingerprint
    for outcome in (ctr, din, fm):
        test = outcome.result["test_result"]
        assert set(test) == {"auc", "logloss"}
        assert 0.0 < test["auc"] < 1.0 and test["logloss"] > 0.0
    # the labels are part of the fingerprint: another threshold is another split
    other = run("FM", workdir, **{**LABELLED, "threshold": {"rating": 3}})
    assert other.split_fingerprint != fm.split_fingerprint


def test_reranking_the_top_10_keeps_recall_and_reports_liked_and_disliked_targets(ctr, workdir):
    retriever = run("M6Rec", workdir, plm_name_or_path="tiny-random-llama", eval_history_mask="all")
    result = rerank(retriever.checkpoint_file, ctr.checkpoint_file, top_k=10)
    assert result["users"] == result["liked"]["users"] + result["not_liked"]["users"] > 0
    assert result["liked"]["users"] > 0 and result["not_liked"]["users"] > 0
    for group in ("all", "liked", "not_liked"):  # re-sorting the top 10 cannot move a target in or out of it
        assert result[group]["recall@10_after"] == result[group]["recall@10_before"]
    assert result["all"]["recall@10_before"] == pytest.approx(retriever.result["test_result"]["recall@10"], abs=1e-4)
    assert 0 <= result["mean_top10_items_replaced"] == 0  # the same ten items, in another order


def test_reranking_refuses_checkpoints_of_different_splits(ctr, workdir):
    # dropping ratings below 3 changes some users' last interaction, so their test targets differ
    retriever = run(
        "M6Rec",
        workdir,
        plm_name_or_path="tiny-random-llama",
        eval_history_mask="all",
        val_interval={"rating": "[3,inf)"},
        epochs=1,
    )
    with pytest.raises(ValueError, match="different splits"):
        rerank(retriever.checkpoint_file, ctr.checkpoint_file, top_k=10)
