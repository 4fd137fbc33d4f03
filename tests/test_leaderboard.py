"""A small real leaderboard: three models, two seeds, a slice of ml-100k, one deliberately failing row."""

import csv
import json

import pytest
import yaml

from recbole_m6rec.benchmarks import leaderboard


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("leaderboard")
    plan = {
        "dataset": "ml-100k",
        "seeds": [1, 2],
        "primary": "M6Rec-tiny",
        "common": {
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "user_inter_num_interval": "[0,25]",
            "metrics": ["Recall", "MRR", "NDCG", "Hit", "ItemCoverage", "GiniIndex"], "topk": [10, 20], "valid_metric": "NDCG@10",
            "eval_history_mask": "all", "epochs": 1, "show_progress": False, "state": "WARNING",
        },
        "rows": {
            "M6Rec-tiny": {"model": "M6Rec", "plm_name_or_path": "tiny-random-llama",
                           "text_cache_dir": str(folder / "cache"), "MAX_ITEM_LIST_LENGTH": 10},
            "BPR": {"model": "BPR"},
            "Pop": {"model": "Pop"},
            "Broken": {"model": "M6Rec", "tuning": "no-such-mode", "plm_name_or_path": "tiny-random-llama"},
        },
    }
    plan_file = folder / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    out = folder / "report"
    first = leaderboard.main([f"--config_files={plan_file}", f"--report={out}"])
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    second = leaderboard.main([f"--config_files={plan_file}", f"--report={out}"])
    return out, first, second, mtimes


def test_report_files_and_one_row_per_model_and_seed(report):
    out, first, _, _ = report
    assert first == 1  # the broken row makes the command fail, after everything else ran
    assert (out / "report.md").is_file() and (out / "ndcg_at_10.png").stat().st_size > 1000
    assert (out / "accuracy_vs_time.png").is_file()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted((r["model"], r["seed"]) for r in rows) == sorted(
        (m, s) for m in ("M6Rec-tiny", "BPR", "Pop", "Broken") for s in ("1", "2"))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6 and all(0 < float(r["ndcg@10"]) < 1 and float(r["train_seconds"]) > 0 for r in ok)
    assert {"split_fingerprint", "train_seconds", "recall@10", "ndcg@10", "dataset"} <= set(rows[0])


def test_every_row_shares_one_split_fingerprint(report):
    rows = [r for r in csv.DictReader(open(report[0] / "results.csv")) if r["status"] == "ok"]
    assert len({r["split_fingerprint"] for r in rows}) == 1 and len(rows[0]["split_fingerprint"]) == 16
    assert {r["history_mask"] for r in rows} == {"all"}
    text = (report[0] / "report.md").read_text()
    assert rows[0]["split_fingerprint"] in text and "no-such-mode" in text


def test_failed_row_is_recorded_and_rerun_reuses_finished_results(report):
    out, _, second, mtimes = report
    broken = json.loads((out / "results" / "Broken-seed1.json").read_text())
    assert broken["status"] == "failed" and "tuning must be one of" in broken["error"]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    reused = [name for name in mtimes if not name.startswith("Broken")]
    assert all(after[name] == mtimes[name] for name in reused)  # finished results were not recomputed
    assert second == 1


def test_rows_on_different_splits_are_refused():
    records = [
        {"row": "A", "seed": 1, "status": "ok", "split_fingerprint": "aaaa"},
        {"row": "B", "seed": 1, "status": "ok", "split_fingerprint": "bbbb"},
    ]
    with pytest.raises(leaderboard.SplitMismatchError, match="A/seed1.*B/seed1"):
        leaderboard.check_one_split(records)


def test_per_user_values_average_to_recbole_metric_and_feed_a_paired_test(report):
    out = report[0]
    for name in ("M6Rec-tiny-seed1.json", "BPR-seed2.json"):
        record = json.loads((out / "results" / name).read_text())
        values = record["per_user_test"]["ndcg@10"]
        assert len(values) > 100  # one value per test user of the slice (137 users)
        assert abs(sum(values.values()) / len(values) - record["test"]["ndcg@10"]) < 1e-4
    text = (out / "report.md").read_text()
    assert "M6Rec-tiny vs " in text and "Wilcoxon signed-rank p = " in text
    assert "giniindex@20" in text and "itemcoverage@10" in text  # beyond-accuracy table
    header = next(csv.reader(open(out / "results.csv")))
    assert {"ndcg@20", "itemcoverage@10", "giniindex@20"} <= set(header)


def test_paired_test_pairs_users_and_averages_seeds():
    from recbole_m6rec.benchmarks.significance import paired_test, per_user_means

    def run(row, seed, values):
        return {"row": row, "seed": seed, "status": "ok", "per_user_test": {"ndcg@10": values}}

    better = {str(u): 0.5 for u in range(40)}
    worse = {str(u): 0.1 * (u % 3) for u in range(40)}
    records = [run("A", 1, better), run("A", 2, {**better, "0": 0.3}), run("B", 1, worse), run("B", 3, worse)]
    assert per_user_means(records, "A", "ndcg@10", [1, 2])["0"] == pytest.approx(0.4)
    test = paired_test(records, "A", "B", "ndcg@10")
    assert test.seeds == [1] and test.n_users == 40  # only the seed both rows ran
    assert test.mean_a == pytest.approx(0.5) and test.wilcoxon_p < 1e-6 and test.t_test_p < 1e-6
    same = paired_test([run("A", 1, worse), run("B", 1, worse)], "A", "B", "ndcg@10")
    assert same.wilcoxon_p == 1.0 and same.t_test_p == 1.0
    assert paired_test([run("A", 1, better)], "A", "B", "ndcg@10") is None


def test_per_user_values_average_to_recbole_for_every_topk_metric(monkeypatch):
    import numpy as np
    import torch
    from recbole.evaluator.collector import DataStruct
    from recbole.evaluator.register import metrics_dict

    from recbole_m6rec.per_user import per_user_topk

    monkeypatch.setattr(np, "float", np.float64, raising=False)  # what RecBole's Config does for its metrics
    config = {"topk": [5, 10], "metric_decimal_place": 6}
    metrics = {m: metrics_dict[m](config) for m in ["recall", "mrr", "ndcg", "hit", "precision", "map"]}
    torch.manual_seed(0)
    struct = DataStruct()
    struct.set("rec.topk", torch.cat([(torch.rand(50, 10) < 0.1).int(), torch.randint(1, 4, (50, 1))], 1))
    per_user = per_user_topk(metrics, struct)
    assert len(per_user) == 12 and all(len(v) == 50 for v in per_user.values())
    for metric in metrics.values():
        for name, mean in metric.calculate_metric(struct).items():
            assert per_user[name].mean() == pytest.approx(mean, abs=1e-6)
