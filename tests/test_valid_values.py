"""A job's result keeps each validation user's (or labelled sample's) values, re-evaluated from the best model, so that
validation can be compared paired as test is; a re-evaluation that differs from the run is recorded, not kept; and
it imports no plugin module the run did not, so a result's code hash is unchanged by it.

Real ml-100k through RecBole's own pipeline: SASRec (full ranking), LikeRate and FM (labelled), BPR on a cold-item
split.
"""

import ast
import json
import os
import statistics
import subprocess
import sys
import textwrap

import pytest
from helpers import QUIET, REPO

from recbole_m6rec.benchmarks import job
from recbole_m6rec.benchmarks.plan import job_spec
from recbole_m6rec.benchmarks.provenance import BENCHMARK_PACKAGE
from recbole_m6rec.benchmarks.significance import auc_ci
from recbole_m6rec.benchmarks.valid_values import validation_record
from recbole_m6rec.config import PluginConfig
from recbole_m6rec.quick_start import run_pipeline

pytestmark = pytest.mark.usefixtures("no_foreign_argv")  # conftest: RecBole never sees pytest's flags

LEAVE_ONE_OUT = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"}
SMALL = {**QUIET, "user_inter_num_interval": "[0,30]", "epochs": 2, "stopping_step": 100}
RANKING = {
    **SMALL,
    "eval_args": LEAVE_ONE_OUT,
    # the bench plan's metrics: coverage and popularity metrics need the item counts that fit registers
    "metrics": ["Recall", "MRR", "NDCG", "Hit", "ItemCoverage", "AveragePopularity", "GiniIndex", "TailPercentage"],
    "topk": [10, 20],
    "tail_ratio": 0.2,
    "valid_metric": "NDCG@10",
    "MAX_ITEM_LIST_LENGTH": 10,
    "train_batch_size": 256,
    "train_neg_sample_args": None,
}
LABELLED = {
    **SMALL,
    "threshold": {"rating": 4},
    "train_neg_sample_args": None,
    "metrics": ["AUC", "LogLoss"],
    "valid_metric": "AUC",
    "eval_args": {"split": {"LS": [2, 2]}, "order": "TO", "mode": "labeled", "group_by": "user"},
}


def run(row: dict, common: dict) -> dict:
    plan = {"dataset": "ml-100k", "common": common, "rows": {"row": row}}
    record = job.run_job(job_spec(plan, "row", 2020))
    assert record["status"] == "ok", record.get("traceback")
    return record


def test_a_ranking_result_keeps_each_validation_users_value_of_the_main_metric():
    record = run({"model": "SASRec"}, RANKING)
    assert "valid_values_error" not in record
    values = record["per_user_valid"]["ndcg@10"]
    assert set(record["per_user_valid"]) == {"ndcg@10"} == set(record["per_user_test"])  # not a cold plan
    assert set(values) == set(record["per_user_test"]["ndcg@10"])  # every user has one validation target
    assert round(statistics.fmean(values.values()), 4) == record["valid"]["ndcg@10"]
    assert record["valid_values_seconds"] > 0


@pytest.mark.parametrize("model", ["LikeRate", "FM"])
def test_a_labelled_result_keeps_each_validation_samples_score(model):
    row = {"model": model, **({"like_rate_window": 5} if model == "LikeRate" else {})}
    record = run(row, LABELLED)
    valid, test = record["per_sample_valid"], record["per_sample_test"]
    assert "per_user_valid" not in record and len(valid["label"]) == len(test["label"])
    assert auc_ci(valid["label"], valid["score"])["auc"] == pytest.approx(
        record["valid"]["auc"], abs=5e-5
    )  # rounded to 4 places
    assert valid["samples_digest"] != test["samples_digest"]  # other samples than test's


def test_a_cold_item_result_splits_validation_into_cold_and_warm_users_and_keeps_every_recall():
    cold = {
        **RANKING,
        "cold_items": 0.1,
        "topk": [10, 50],
        "metrics": ["Recall", "NDCG", "ItemCoverage", "TailPercentage"],
    }
    record = run({"model": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}, cold)
    assert "valid_values_error" not in record
    assert set(record["per_user_valid"]) == {"ndcg@10", "recall@10", "recall@50"} == set(record["per_user_test"])
    split = record["valid_cold"]
    n_cold, n_warm = split["cold_valid_users"], split["warm_valid_users"]
    assert n_cold > 0 and n_warm > n_cold and n_cold + n_warm == len(record["per_user_valid"]["recall@10"])
    for metric in ("recall@10", "recall@50", "ndcg@10"):
        mean = (n_cold * split[f"cold_{metric}"] + n_warm * split[f"warm_{metric}"]) / (n_cold + n_warm)
        assert mean == pytest.approx(record["valid"][metric], abs=1e-4)  # both halves rounded to 4 places


def test_a_re_evaluation_that_differs_from_the_run_is_recorded_not_kept(tmp_path):
    config = PluginConfig(
        model="SASRec", dataset="ml-100k", config_dict={**RANKING, "checkpoint_dir": str(tmp_path), "epochs": 1}
    )
    outcome = run_pipeline(config, saved=True)
    kept = validation_record(outcome, "ndcg@10", True)
    assert "per_user_valid" in kept and "valid_values_error" not in kept

    outcome.result["best_valid_result"]["ndcg@10"] += 0.01  # as if the checkpoint held another epoch's model
    differs = validation_record(outcome, "ndcg@10", True)
    assert "per_user_valid" not in differs and "differs from the run: ndcg@10" in differs["valid_values_error"]

    outcome.checkpoint_file = str(tmp_path / "gone.pth")
    missing = validation_record(outcome, "ndcg@10", True)
    assert missing == {
        "valid_values_error": f"FileNotFoundError: the run's best-model checkpoint is missing "
        f"({outcome.checkpoint_file!r})"
    }


# The job's command line, with validation_values replaced by a SIGKILL: a job stopped during the extra step (a time
# budget, a machine that goes away) must still leave the run's result.
KILLED_DURING_VALIDATION = textwrap.dedent("""
    import os, signal, sys
    from recbole_m6rec.benchmarks import job, valid_values

    def stop(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    valid_values.validation_values = stop
    sys.exit(job.main(sys.argv[1:3]))
""")


def test_a_job_stopped_while_it_re_evaluates_validation_leaves_the_runs_result(tmp_path):
    plan = {"dataset": "ml-100k", "common": {**RANKING, "epochs": 1}, "rows": {"row": {"model": "SASRec"}}}
    spec = job_spec(plan, "row", 2020)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "row-seed2020.json"
    environment = {name: value for name, value in os.environ.items() if name != job.PARTIAL_DIR_ENV}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_DURING_VALIDATION, str(tmp_path / "spec.json"), str(out)],
        cwd=tmp_path,
        env={**environment, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["status"] == "ok" and record["config_hash"] == spec["config_hash"]
    assert record["provenance"]["code_hash"] and record["wall_seconds"] > 0 and "per_user_test" in record
    assert "per_user_valid" not in record and "valid_values_error" not in record
    # nor a partial run to continue: a later job for this result (deleted, or stale) starts over
    folder = tmp_path / ".partial" / out.stem
    assert folder.is_dir() and not list(folder.glob("*-last.pth"))
    assert job.resume_point(folder, spec)[0] is None


def test_sampled_validation_is_not_re_evaluated():
    """uni100 / pop100 draw their negatives again on each pass: a second evaluation could never equal the run."""
    run_config = {"eval_args": {"mode": {"valid": "uni100", "test": "uni100"}}}
    outcome = type("Outcome", (), {"config": run_config})()
    assert validation_record(outcome, "ndcg@10", True) == {
        "valid_values_error": "validation ranks sampled negatives (uni100), drawn anew on every pass"
    }


def test_it_imports_no_plugin_module_the_run_has_not():
    """A result's code hash covers the plugin modules outside ``benchmarks/`` the run imported; the re-evaluation
    must add none (benchmark modules are not hashed, so importing them changes nothing)."""
    source = (REPO / "recbole_m6rec" / "benchmarks" / "valid_values.py").read_text()
    wanted = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recbole_m6rec"):
            if node.module == "recbole_m6rec":
                wanted |= {f"recbole_m6rec.{alias.name}" for alias in node.names}
            else:
                wanted.add(node.module)
    wanted = {module for module in wanted if not module.startswith(BENCHMARK_PACKAGE)}
    assert "recbole_m6rec.quick_start" in wanted
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, recbole_m6rec.quick_start; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    assert wanted <= set(imported)


def _ranking_result(row: str, seed: int, valid_level: float, test_level: float, keeps_valid: bool = True) -> dict:
    """A finished ranking result as the report reads it: 60 users whose per-user NDCG@10 averages to the levels."""

    def per_user(level: float) -> dict:
        return {"ndcg@10": {str(user): level * (1 + user % 3) / 2 for user in range(60)}}

    return {
        "row": row,
        "seed": seed,
        "status": "ok",
        "model": row,
        "dataset": "ml-100k",
        "split_fingerprint": "f",
        "history_mask": "all",
        "valid": {"ndcg@10": valid_level},
        "test": {"ndcg@10": test_level},
        "train_seconds": 1.0,
        "peak_rss_mb": 1.0,
        "per_user_test": per_user(test_level),
        **({"per_user_valid": per_user(valid_level)} if keeps_valid else {}),
    }


def test_validation_values_feed_the_same_paired_tests_on_valid_in_the_report_and_its_comparison_file(tmp_path):
    from recbole_m6rec.benchmarks.report import write_report

    records = [_ranking_result("Mine", s, 0.12, 0.10) for s in (1, 2)]
    records += [_ranking_result("Base", s, 0.10, 0.11) for s in (1, 2)]
    records += [_ranking_result("Old", s, 0.05, 0.05, keeps_valid=False) for s in (1, 2)]  # finished before
    rows = {"Mine": {}, "Base": {}, "Old": {}}
    plan = {"dataset": "ml-100k", "seeds": [1, 2], "primary": "Mine", "common": {"valid_metric": "NDCG@10"}}
    write_report({**plan, "rows": rows, "pairs": {"mine-vs-base": ["Mine", "Base"]}}, records, tmp_path, "x")
    facts = json.loads((tmp_path / "comparison.json").read_text())
    text = (tmp_path / "report.md").read_text()
    assert set(facts["paired_valid"]) == {"Base"}  # Old's results keep no validation values: nothing to pair
    valid = facts["paired_valid_vs_best_baseline"]
    assert facts["best_baseline"] == "Base" and valid["ratio"] == pytest.approx(1.2) and valid["n_seeds"] == 2
    assert facts["paired_test_vs_best_baseline"]["ratio"] == pytest.approx(10 / 11)  # test's own values
    assert "- Valid ndcg@10 of Mine / each baseline, paired as on test" in text
    assert f"  - vs Base (the best baseline on valid): **{valid['ratio']:.3f}×** [{valid['ci_low']:.3f}, " in text
    pair = facts["pairs"]["mine-vs-base"]["paired_valid"]
    assert pair["ratio"] == pytest.approx(1.2)
    assert f"; paired valid {pair['ratio']:.3f}× [{pair['ci_low']:.3f}, {pair['ci_high']:.3f}]" in text

    # none kept: the report says nothing of validation pairs, as before
    write_report({**plan, "rows": rows}, [{**r, "per_user_valid": {}} for r in records], tmp_path, "x")
    facts = json.loads((tmp_path / "comparison.json").read_text())
    assert facts["paired_valid"] == {} and facts["paired_valid_vs_best_baseline"] is None
    assert "paired as on test" not in (tmp_path / "report.md").read_text()
