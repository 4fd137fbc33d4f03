"""A plan whose rows take the settings another report's tuning chose (``tuning.from``)."""

import json

import pytest
import yaml

from recbole_m6rec.benchmarks import leaderboard
from recbole_m6rec.benchmarks.borrowed_tuning import NotTunedYet, borrowed_record
from recbole_m6rec.benchmarks.plan import job_spec, load_plan
from recbole_m6rec.benchmarks.status import status_report

SPACE = {"learning_rate": ["choice", 0.001, 0.01], "weight_decay": ["choice", 0.0, 0.0001]}


def _source(folder, row="BPR", trials=2, best=None, **header):
    """A finished (or, with fewer trials, unfinished) tuning record as the leaderboard writes it."""
    best = best or {"learning_rate": 0.01, "weight_decay": 0.0001}
    record = {
        "row": row,
        "space": SPACE,
        "metric": "ndcg@10",
        "algo": "random",
        "seed": 1,
        "trials": [
            {"index": i, "params": best, "status": "ok", "valid": {"ndcg@10": 0.05 + i / 100}} for i in range(trials)
        ],
        "best_params": best,
        "best_valid": 0.0612,
        **header,
    }
    (folder / "tuning").mkdir(parents=True, exist_ok=True)
    (folder / "tuning" / f"{row}-tuning.json").write_text(json.dumps(record))
    return record


def _plan(source, rows=None, **tuning):
    return {
        "dataset": "ml-100k",
        "seeds": [1],
        "tuning": {"from": str(source), "trials": 2, "seed": 1, "algo": "random", **tuning},
        "common": {
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "user_inter_num_interval": "[0,25]",
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "eval_history_mask": "all",
            "epochs": 1,
            "show_progress": False,
            "state": "WARNING",
        },
        "rows": rows or {"BPR": {"model": "BPR", "search": SPACE}, "MostPop": {"model": "MostPop"}},
    }


def test_a_row_takes_the_chosen_values_of_its_own_keys(tmp_path):
    _source(tmp_path / "src")
    plan = _plan(tmp_path / "src")
    record = borrowed_record(plan, "BPR")
    assert record["best_params"] == {"learning_rate": 0.01, "weight_decay": 0.0001}
    assert record["trials"] == [] and record["source_trials"] == 2 and record["best_valid"] == 0.0612
    # a variant searches part of the space and names the row whose tuning it takes
    plan["rows"]["BPR-lr"] = {"model": "BPR", "tuned_as": "BPR", "search": {"learning_rate": SPACE["learning_rate"]}}
    assert borrowed_record(plan, "BPR-lr")["best_params"] == {"learning_rate": 0.01}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"space": {**SPACE, "learning_rate": ["choice", 0.001, 0.1]}}, "'learning_rate': here"),
        ({"seed": 2}, "tuned with seed 2, this plan states 1"),
        ({"metric": "recall@10"}, "tuned with metric 'recall@10'"),
        ({"algo": "bayes"}, "tuned with algo 'bayes', this plan states 'random'"),
        ({"trials": 3}, "ran 3 trials, this plan states 2"),
    ],
)
def test_a_source_that_does_not_match_the_plan_is_refused(tmp_path, change, message):
    trials = change.pop("trials", 2)
    _source(tmp_path / "src", trials=trials, **change)
    with pytest.raises(ValueError, match=message):
        borrowed_record(_plan(tmp_path / "src"), "BPR")


def test_an_unfinished_or_missing_source_tuning_waits_and_a_missing_folder_is_an_error(tmp_path):
    _source(tmp_path / "src", trials=1)
    with pytest.raises(NotTunedYet, match="1 of 2 trials of BPR there so far"):
        borrowed_record(_plan(tmp_path / "src"), "BPR")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotTunedYet, match="has not been tuned there yet"):
        borrowed_record(_plan(tmp_path / "empty"), "BPR")
    with pytest.raises(ValueError, match="no report folder"):
        borrowed_record(_plan(tmp_path / "nowhere"), "BPR")


def test_the_budget_is_that_of_the_source_space_not_of_the_keys_a_row_takes(tmp_path):
    _source(tmp_path / "src", trials=3, algo="exhaustive")  # a 2 x 2 grid, 3 of its points
    plan = _plan(tmp_path / "src", algo="exhaustive", trials=3)
    plan["rows"]["BPR-lr"] = {"model": "BPR", "tuned_as": "BPR", "search": {"learning_rate": SPACE["learning_rate"]}}
    assert borrowed_record(plan, "BPR-lr")["best_params"] == {"learning_rate": 0.01}


def test_a_source_tuning_that_chose_nothing_is_an_error_and_a_file_that_is_no_record_waits(tmp_path):
    source = tmp_path / "src"
    _source(source, best_params=None, best_valid=None)  # every trial failed
    with pytest.raises(RuntimeError, match="finished without a successful trial"):
        borrowed_record(_plan(source), "BPR")
    _source(source, best_valid=None)
    with pytest.raises(RuntimeError, match="finished without a successful trial"):
        borrowed_record(_plan(source), "BPR")
    (source / "tuning" / "BPR-tuning.json").write_text("[1, 2]")
    with pytest.raises(NotTunedYet, match="no tuning record"):
        borrowed_record(_plan(source), "BPR")
    plan = _plan(source, rows={"BRP": {"model": "BPR", "search": SPACE}})  # a misspelt row: what is there is named
    with pytest.raises(NotTunedYet, match=r"BRP has not been tuned there yet \(it holds the tuning of BPR\)"):
        borrowed_record(plan, "BRP")


def test_tuned_as_needs_a_plan_that_borrows(tmp_path):
    plan = _plan(tmp_path, rows={"BPR": {"model": "BPR", "tuned_as": "BPR", "search": SPACE}})
    del plan["tuning"]["from"]
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    with pytest.raises(ValueError, match="tuned_as names the row of another report"):
        load_plan(str(tmp_path / "plan.yaml"), {}, None, None)


def test_a_borrowing_plan_runs_the_chosen_settings_and_says_where_they_came_from(tmp_path, capsys):
    source, out = tmp_path / "src", tmp_path / "out"
    _source(source, trials=1)
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(_plan(source)))
    command = [f"--config_files={plan_file}", f"--report={out}"]
    # the source's tuning has not finished: MostPop runs, BPR waits, and no report leaves it out
    assert leaderboard.main(command) == 0
    log = capsys.readouterr().out
    assert "tuning BPR waits for" in log and not (out / "report.md").exists()
    assert "Not every row could run; no report written" in log and "BPR seed 1 (after its settings)" in log
    assert sorted(p.name for p in (out / "results").glob("*.json")) == ["MostPop-seed1.json"]
    assert not (out / "tuning").exists()  # no trial runs here
    plan = load_plan(str(plan_file), {}, None, None)
    status = status_report(plan, out)
    assert "| BPR | waits for " in status and "runs left): BPR (1)" in status  # the seed runs here, not a trial
    assert leaderboard.main([*command, "--report_only"]) == 0
    interim = (out / "report.md").read_text()
    assert "not in it yet: BPR's settings (from " in interim and "- BPR **waits for " in interim

    _source(source, trials=2)
    assert leaderboard.main([*command, "--resume"]) == 0
    result = json.loads((out / "results" / "BPR-seed1.json").read_text())
    chosen = {"learning_rate": 0.01, "weight_decay": 0.0001}
    assert result["status"] == "ok" and result["config_hash"] == job_spec(plan, "BPR", 1, chosen)["config_hash"]
    text = (out / "report.md").read_text()
    assert "No row is tuned here" in text and json.dumps(chosen) in text and str(source / "tuning") in text
    # validation here chose no settings: the report does not say it did
    assert "(epochs and the rows compared below; the settings come from another report's tuning)" in text
    assert "tuned settings, the rows compared" not in text
    assert f"from {source / 'tuning' / 'BPR-tuning.json'}: valid ndcg@10 0.0612 there" in status_report(plan, out)


def test_a_row_whose_source_chose_nothing_runs_untuned_and_the_report_says_so(tmp_path):
    from recbole_m6rec.benchmarks.report_sections import tuning_lines
    from recbole_m6rec.benchmarks.runner import tune

    _source(tmp_path / "src", best_params=None, best_valid=None)
    _source(tmp_path / "src", row="SASRec")
    plan = _plan(
        tmp_path / "src",
        rows={"BPR": {"model": "BPR", "search": SPACE}, "SASRec": {"model": "SASRec", "search": SPACE}},
    )
    tuned = tune(plan, tmp_path / "out", resume=True)
    assert "learning_rate" not in plan["rows"]["BPR"] and plan["rows"]["SASRec"]["learning_rate"] == 0.01
    text = "\n".join(tuning_lines(tuned, "ndcg@10"))
    assert "No row is tuned here" in text and "- BPR: not tuned (" in text and "finished without a successful" in text
