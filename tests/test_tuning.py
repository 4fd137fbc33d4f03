"""Equal-budget tuning of a leaderboard row through RecBole's HyperTuning: cheap stand-in objectives for search,
selection, determinism, resumption and types; one tiny real RecBole run for the objective path."""

import json
import math
import sys

import pytest

from recbole_m6rec.benchmarks.tuning import tune_row

BEST_LR = 0.003


def make_plan(trials=12, seed=2020, algo="random", metric="NDCG@10", search=None):
    search = search or {
        "learning_rate": ["loguniform", 0.0001, 0.01],
        "dropout_prob": ["choice", 0.1, 0.3, 0.5],
        "adapter_rank": ["choice", 64, 256],
        "n_layers": ["quniform", 1, 4, 1],
        "weight_decay": ["uniform", 0.0, 0.1],
    }
    return {
        "dataset": "ml-100k",
        "seeds": [2020],
        "common": {"valid_metric": metric},
        "tuning": {"trials": trials, "seed": seed, "algo": algo},
        "rows": {"M": {"model": "M6Rec", "search": search}, "Pop": {"model": "Pop"}},
    }


class Objective:
    """A quadratic in log10(learning rate), best at BEST_LR, plus a small dropout term; records its calls."""

    def __init__(self, metric="ndcg@10", sign=1.0, fail_on=(), raise_on_call=None):
        self.metric, self.sign, self.fail_on, self.raise_on_call = metric, sign, fail_on, raise_on_call
        self.calls = []

    def __call__(self, params):
        if len(self.calls) == self.raise_on_call:
            raise KeyboardInterrupt("stopped during a trial")
        self.calls.append(dict(params))
        score = 0.5 - (math.log10(params.get("learning_rate", BEST_LR)) - math.log10(BEST_LR)) ** 2
        score -= 0.01 * (params.get("dropout_prob", 0.3) - 0.3) ** 2
        if len(self.calls) - 1 in self.fail_on:  # a failed run: its (stale) valid score must never win
            return {"status": "failed", "best_valid_result": {self.metric: 99.0}, "epochs_run": 0}
        return {
            "status": "ok",
            "best_valid_result": {self.metric.upper(): self.sign * score, "recall@10": 0.1},
            "test_result": {self.metric: -1.0},
            "epochs_run": 3,
        }


def params_of(result):
    return [t["params"] for t in result["trials"]]


@pytest.mark.parametrize("algo", ["random", "bayes"])
def test_finds_near_the_optimum_and_reports_the_best_valid_trial(tmp_path, algo):
    result = tune_row(make_plan(trials=25, algo=algo), "M", Objective(), tmp_path)
    assert len(result["trials"]) == 25 and [t["index"] for t in result["trials"]] == list(range(25))
    assert abs(math.log10(result["best_params"]["learning_rate"]) - math.log10(BEST_LR)) < 0.25
    best = max(result["trials"], key=lambda t: t["valid"]["ndcg@10"])
    assert result["best_params"] == best["params"] and result["best_valid"] == best["valid"]["ndcg@10"]
    assert (result["row"], result["metric"], result["algo"], result["seed"]) == ("M", "ndcg@10", algo, 2020)
    assert result["trials"][0]["valid"] == {
        "ndcg@10": pytest.approx(result["trials"][0]["valid"]["ndcg@10"]),
        "recall@10": 0.1,
    }  # valid only: tuning never records test results
    assert json.loads((tmp_path / "M-tuning.json").read_text()) == result


def test_a_loss_metric_is_minimised(tmp_path):
    """valid_metric LogLoss: smaller is better (the objective returns minus the quadratic)."""
    result = tune_row(make_plan(trials=25, metric="LogLoss"), "M", Objective("logloss", sign=-1.0), tmp_path)
    assert result["best_valid"] == min(t["valid"]["logloss"] for t in result["trials"])
    assert abs(math.log10(result["best_params"]["learning_rate"]) - math.log10(BEST_LR)) < 0.25


@pytest.mark.parametrize("algo", ["random", "bayes"])
def test_same_plan_same_trials_and_another_seed_others(tmp_path, algo):
    first = tune_row(make_plan(algo=algo), "M", Objective(), tmp_path / "a")
    again = tune_row(make_plan(algo=algo), "M", Objective(), tmp_path / "b")
    other = tune_row(make_plan(algo=algo, seed=7), "M", Objective(), tmp_path / "c")
    assert params_of(first) == params_of(again)
    assert params_of(first) != params_of(other)


@pytest.mark.parametrize("algo", ["random", "bayes"])
def test_an_interrupted_tuning_resumes_from_its_record(tmp_path, algo):
    plan = make_plan(trials=8, algo=algo)
    with pytest.raises(KeyboardInterrupt):
        tune_row(plan, "M", Objective(raise_on_call=3), tmp_path)
    record = json.loads((tmp_path / "M-tuning.json").read_text())
    assert len(record["trials"]) == 3 and record["best_params"] is not None

    rerun = Objective()
    result = tune_row(plan, "M", rerun, tmp_path)
    uninterrupted = tune_row(plan, "M", Objective(), tmp_path / "fresh")
    assert params_of(result) == params_of(uninterrupted)
    assert result["trials"][:3] == record["trials"]
    assert rerun.calls == params_of(result)[3:]  # the three finished trials were not run again


@pytest.mark.parametrize("algo", ["random", "bayes"])
def test_a_smaller_budget_takes_the_first_trials_of_a_larger_one_and_runs_none(tmp_path, algo):
    """A plan whose budget is cut (8 -> 4) keeps the trials it already ran: the first 4 proposals of either budget
    are the same, so nothing runs again, the record holds 4 trials and the best is chosen among them."""
    eight = tune_row(make_plan(trials=8, algo=algo), "M", Objective(), tmp_path)
    rerun = Objective()
    four = tune_row(make_plan(trials=4, algo=algo), "M", rerun, tmp_path)
    assert rerun.calls == []
    assert four["trials"] == eight["trials"][:4]
    assert four["best_valid"] == max(t["valid"]["ndcg@10"] for t in eight["trials"][:4])
    assert len(json.loads((tmp_path / "M-tuning.json").read_text())["trials"]) == 4


def test_recorded_trials_from_code_that_changed_are_run_again(tmp_path):
    plan = make_plan(trials=4)
    tune_row(plan, "M", Objective(), tmp_path)
    asked = []

    def still_current(params):  # the leaderboard checks the trial's provenance here
        asked.append(params)
        return len(asked) != 2  # the second recorded trial ran older code

    rerun = Objective()
    result = tune_row(plan, "M", rerun, tmp_path, still_current)
    assert rerun.calls == [params_of(result)[1]]
    assert len(asked) == 4


def test_a_reused_trial_scores_what_its_current_result_file_holds_not_the_tuning_record(tmp_path):
    """The tuning record can hold another run of the same settings (older code, rerun since by a second process,
    which does not write the record): the current result file's numbers are the trial's."""
    plan = make_plan(trials=4)
    first = tune_row(plan, "M", Objective(), tmp_path)
    loser = min(range(4), key=lambda i: first["trials"][i]["valid"]["ndcg@10"])

    def current_file(params):  # the leaderboard returns the reusable result file's record
        better = params == first["trials"][loser]["params"]
        return {"status": "ok", "valid": {"ndcg@10": 9.0 if better else 0.1}, "epochs_run": 11}

    rerun = Objective()
    result = tune_row(plan, "M", rerun, tmp_path, current_file)
    assert rerun.calls == []  # every trial reused
    assert [t["valid"]["ndcg@10"] for t in result["trials"]] == [9.0 if i == loser else 0.1 for i in range(4)]
    assert result["best_params"] == first["trials"][loser]["params"] and result["best_valid"] == 9.0
    assert {t["epochs_run"] for t in result["trials"]} == {11}


@pytest.mark.parametrize("nudge, reused", [(1, True), (10**7, False)])
def test_recorded_trials_are_found_again_when_another_cpu_draws_the_last_bit_differently(tmp_path, nudge, reused):
    """hyperopt's log-uniform values go through exp, whose last bit differs between CPUs and numpy builds: a trial
    recorded on one machine must still be reused on another (and rerun only when the value really differs)."""
    plan = make_plan(trials=3)
    first = tune_row(plan, "M", Objective(), tmp_path)
    record = json.loads((tmp_path / "M-tuning.json").read_text())
    for trial in record["trials"]:  # as if the earlier machine had drawn these `nudge` ulps away
        trial["params"]["learning_rate"] = trial["params"]["learning_rate"] + nudge * math.ulp(
            trial["params"]["learning_rate"]
        )
    (tmp_path / "M-tuning.json").write_text(json.dumps(record))

    rerun = Objective()
    result = tune_row(plan, "M", rerun, tmp_path)
    if reused:
        assert rerun.calls == [] and result["trials"] == record["trials"]
        assert result["best_params"] in params_of(result)  # the recorded values, not the newly drawn ones
    else:
        assert len(rerun.calls) == 3 and params_of(result) == params_of(first)


def test_a_changed_space_does_not_reuse_the_record(tmp_path):
    tune_row(make_plan(trials=4), "M", Objective(), tmp_path)
    plan = make_plan(trials=4, search={"learning_rate": ["loguniform", 0.001, 0.01]})
    rerun = Objective()
    result = tune_row(plan, "M", rerun, tmp_path)
    assert len(rerun.calls) == 4 and set(result["space"]) == {"learning_rate"}


def test_values_have_the_types_recbole_expects(tmp_path):
    search = {
        "learning_rate": ["loguniform", 0.0001, 0.01],
        "adapter_rank": ["choice", 64, 256],
        "n_layers": ["quniform", 1, 4, 1],
        "dropout_prob": ["quniform", 0.1, 0.5, 0.1],
        "weight_decay": ["uniform", 0, 1],
        "hidden_sizes": ["choice", [64, 64], [128]],
        "loss_type": ["choice", "CE", "BPR"],
    }
    objective = Objective()
    result = tune_row(make_plan(trials=20, search=search), "M", objective, tmp_path)
    for params in objective.calls:  # what run_trial receives
        assert type(params["learning_rate"]) is float and 0.0001 <= params["learning_rate"] <= 0.01 + 1e-12
        assert type(params["adapter_rank"]) is int and params["adapter_rank"] in (64, 256)
        assert type(params["n_layers"]) is int and 1 <= params["n_layers"] <= 4
        assert type(params["dropout_prob"]) is float and params["dropout_prob"] in (0.1, 0.2, 0.3, 0.4, 0.5)
        assert type(params["weight_decay"]) is float and 0 <= params["weight_decay"] <= 1
        assert params["hidden_sizes"] in ([64, 64], [128]) and type(params["hidden_sizes"]) is list
        assert params["loss_type"] in ("CE", "BPR")
    assert {p["n_layers"] for p in objective.calls} == {1, 2, 3, 4}
    assert type(result["best_params"]["adapter_rank"]) is int


def test_failed_trials_count_towards_the_budget_and_never_win(tmp_path):
    result = tune_row(make_plan(trials=10), "M", Objective(fail_on=(0, 4, 5)), tmp_path)
    assert len(result["trials"]) == 10
    assert [t["index"] for t in result["trials"] if t["status"] == "failed"] == [0, 4, 5]
    assert result["best_valid"] < 1  # not the failed trials' 99
    assert result["best_params"] in [t["params"] for t in result["trials"] if t["status"] == "ok"]
    with pytest.raises(RuntimeError, match="none of its 3 tuning trials succeeded"):
        tune_row(make_plan(trials=3), "M", Objective(fail_on=(0, 1, 2)), tmp_path / "all-failed")


def test_a_flat_objective_still_gets_the_whole_budget(tmp_path):
    """RecBole's HyperTuning stops after 10 trials without progress by default; a row's budget is not cut short."""
    result = tune_row(
        make_plan(trials=14), "M", lambda params: {"status": "ok", "best_valid_result": {"ndcg@10": 0.1}}, tmp_path
    )
    assert len(result["trials"]) == 14 and result["best_params"] == result["trials"][0]["params"]


def test_exhaustive_runs_a_small_grid_once_and_caps_a_large_one_at_the_budget(tmp_path):
    small = {"adapter_rank": ["choice", 64, 256], "dropout_prob": ["choice", 0.1, 0.5]}
    result = tune_row(make_plan(trials=8, algo="exhaustive", search=small), "M", Objective(), tmp_path / "small")
    assert sorted(map(str, params_of(result))) == sorted(
        map(str, [{"adapter_rank": r, "dropout_prob": d} for r in (64, 256) for d in (0.1, 0.5)])
    )
    large = {"learning_rate": ["choice", 0.0001, 0.001, 0.01], "dropout_prob": ["choice", 0.1, 0.3, 0.5]}
    result = tune_row(make_plan(trials=4, algo="exhaustive", search=large), "M", Objective(), tmp_path / "large")
    assert len(result["trials"]) == 4 and len({str(p) for p in params_of(result)}) == 4


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p["rows"]["M"].pop("search"), "row 'M' has no `search`"),
        (lambda p: p.pop("tuning"), "no `tuning:"),
        (lambda p: p["tuning"].update(trials=0), r"tuning.trials must be a positive int \(got 0\)"),
        (lambda p: p["tuning"].update(algo="grid"), "tuning.algo must be one of random, bayes, exhaustive"),
        (lambda p: p["tuning"].update(budget=3), r"unknown keys \['budget'\]"),
        (
            lambda p: p["rows"]["M"]["search"].update(learning_rate=["logunif", 1e-4, 1e-2]),
            r"row 'M', search key 'learning_rate': got \['logunif'.*valid: \[choice",
        ),
        (
            lambda p: p["rows"]["M"]["search"].update(learning_rate=["loguniform", "1e-4", 0.01]),
            "'1e-4' is a str; write 1e-4 as 0.0001",
        ),
        (
            lambda p: p["rows"]["M"]["search"].update(learning_rate=["loguniform", 0, 0.01]),
            "search key 'learning_rate': loguniform bounds must be positive",
        ),
        (lambda p: p["rows"]["M"]["search"].update(n_layers=["quniform", 1, 4]), r"valid: \[quniform, low, high, q\]"),
        (lambda p: p["rows"]["M"]["search"].update(n_layers=["quniform", 1, 4, 2]), "multiples of it"),
        (lambda p: p["rows"]["M"]["search"].update(dropout_prob=["choice"]), "at least one value"),
        (lambda p: p["tuning"].update(algo="exhaustive"), "algo 'exhaustive' needs `choice` for every key"),
        (lambda p: p["rows"]["M"]["search"].update(adapter_rank=["choice", {64}]), "values must be numbers, strings"),
        (lambda p: p["rows"]["M"].update(adapter_rank=64), r"row 'M' sets \['adapter_rank'\] both as fixed values"),
        (lambda p: p["common"].pop("valid_metric"), "valid_metric"),
    ],
)
def test_plan_errors_name_the_row_key_and_value(tmp_path, change, message):
    plan = make_plan()
    change(plan)
    with pytest.raises(ValueError, match=message):
        tune_row(plan, "M", Objective(), tmp_path)
    with pytest.raises(ValueError, match="row 'Nope' is not in the plan; rows: M, Pop"):
        tune_row(make_plan(), "Nope", Objective(), tmp_path)


def test_a_real_recbole_run_as_the_objective(tmp_path, monkeypatch):
    """Two trials of BPR (1 epoch on a slice of ml-100k) through RecBole's own objective_function."""
    from recbole.quick_start import objective_function

    from tests.helpers import ML100K_YAML, QUIET

    monkeypatch.chdir(tmp_path)  # RecBole writes log/ under the working directory
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])  # and reads sys.argv

    def run_trial(params):
        config = {
            "model": "BPR",
            "dataset": "ml-100k",
            "epochs": 1,
            "user_inter_num_interval": "[0,30]",
            "valid_metric": "NDCG@10",
            **QUIET,
            **params,
        }
        out = objective_function(config_dict=config, config_file_list=[ML100K_YAML], saved=False)
        return {"status": "ok", "best_valid_result": dict(out["best_valid_result"]), "epochs_run": 1}

    plan = make_plan(
        trials=2, search={"learning_rate": ["loguniform", 0.0001, 0.01], "embedding_size": ["choice", 16, 32]}
    )
    result = tune_row(plan, "M", run_trial, tmp_path / "trials")
    assert [t["status"] for t in result["trials"]] == ["ok", "ok"]
    assert all(0 <= t["valid"]["ndcg@10"] <= 1 and "recall@10" in t["valid"] for t in result["trials"])
    assert result["best_valid"] == max(t["valid"]["ndcg@10"] for t in result["trials"])


@pytest.mark.parametrize("algo", ["random", "exhaustive"])
def test_a_second_process_runs_only_its_trials_with_the_proposals_of_the_tuning_in_order(tmp_path, algo):
    search = {"learning_rate": ["choice", 0.001, 0.003, 0.01, 0.03], "dropout_prob": ["choice", 0.1, 0.3, 0.5]}
    plan = make_plan(trials=6, algo=algo, search=search)
    in_order = tune_row(plan, "M", Objective(), tmp_path / "a")
    helper = Objective()
    part = tune_row(plan, "M", helper, tmp_path / "b", only={4, 5, 6})
    assert helper.calls == params_of(in_order)[3:]  # the same proposals, only its own run
    assert [t["index"] for t in part["trials"]] == [3, 4, 5] and not (tmp_path / "b" / "M-tuning.json").exists()
    with pytest.raises(ValueError, match="only run in order"):
        tune_row(make_plan(trials=30, algo="bayes"), "M", Objective(), tmp_path / "c", only={21})


def test_trials_record_their_best_epoch_and_resume_point_for_the_report(tmp_path):
    """The report's trial table says where each trial's best epoch was and whether it continued after an
    interruption (its recorded time then covers only the continued part)."""
    from recbole_m6rec.benchmarks.report_sections import tuning_lines

    plan = make_plan(trials=2)

    def current_file(params):  # the leaderboard's reusable result files, one continued from epoch 22
        first = params == recorded["trials"][0]["params"]
        extra = {"resumed_from_epoch": 22} if first else {"resumed_from_epoch": None}
        return {
            "status": "ok",
            "valid": {"ndcg@10": 0.1},
            "epochs_run": 71,
            "best_epoch": 0 if not first else 64,
            **extra,
        }

    recorded = tune_row(plan, "M", Objective(), tmp_path)
    result = tune_row(plan, "M", Objective(), tmp_path, current_file)
    assert [(t["best_epoch"], t.get("resumed_from_epoch")) for t in result["trials"]] == [(64, 22), (0, None)]
    table = "\n".join(tuning_lines({"M": {**result, "space": plan["rows"]["M"]["search"]}}, "ndcg@10"))
    assert "| 0.1000 | 71 (64), continued from 22 |" in table and "| 0.1000 | 71 (0) |" in table
