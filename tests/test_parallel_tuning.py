"""Two leaderboard processes sharing a plan's tuning: ``--trials`` runs a share of the trials, a claim file keeps a
job from running twice, and the plan's command waits for a job the other runs and takes its result."""

import json
import subprocess
import sys
import threading
import time

import pytest
import yaml

from recbole_m6rec.benchmarks import claims, leaderboard, runner
from recbole_m6rec.benchmarks.plan import job_spec, load_plan

SLICE = {
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "user_inter_num_interval": "[0,25]",
    "metrics": ["Recall", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "epochs": 1,
    "show_progress": False,
    "state": "WARNING",
}


def _plan_file(tmp_path):
    plan = {
        "dataset": "ml-100k",
        "seeds": [1],
        "tuning": {"trials": 2, "seed": 1, "algo": "exhaustive"},
        "common": SLICE,
        "rows": {"BPR": {"model": "BPR", "search": {"learning_rate": ["choice", 0.001, 0.01]}}},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_a_claim_holds_while_its_process_lives_and_goes_with_it(tmp_path):
    out = tmp_path / "results" / "A-seed1.json"
    mine = claims.claim(out)
    assert mine is not None and claims.claim(out) is None  # held, even against another descriptor of this process
    claims.release(mine)
    again = claims.claim(out)
    assert again is not None
    claims.release(again)
    script = f"import fcntl, os, sys, time; fd = os.open({str(claims.claim_path(out))!r}, os.O_RDWR); "
    script += "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
    other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "held" and claims.claim(out) is None
    other.kill()  # a process that dies (a machine that went away) leaves no claim behind
    other.wait()
    taken = claims.claim(out)
    assert taken is not None
    claims.release(taken)


def test_status_says_a_job_runs_now_while_a_process_holds_its_claim(tmp_path, monkeypatch):
    """``--status`` tells a run going on in another process from an interrupted one: the claim is held."""
    from recbole_m6rec.benchmarks import status

    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    plan = load_plan(str(_plan_file(tmp_path)), {}, None, None)
    report = tmp_path / "report"
    params = {"learning_rate": 0.01}
    out = report / "results" / "BPR-seed1.json"
    assert not claims.held(out)  # never claimed: no claim file
    mine = claims.claim(out)
    assert claims.held(out)
    assert status.job_status(plan, "BPR", 1, report, params=params) == "running now (no epoch saved yet)"
    claims.release(mine)
    assert not claims.held(out) and status.job_status(plan, "BPR", 1, report, params=params) == "to run"
    # a tuning trial: the row's tuning cell names it
    trial = runner.trial_path(report, job_spec(plan, "BPR", 1, params))
    mine = claims.claim(trial)
    assert status.tuning_status(plan, "BPR", report)["running_now"] == ["running now (no epoch saved yet)"]
    assert "0 of 2 trials; a trial running now" in status.status_report(plan, report)
    claims.release(mine)
    assert status.tuning_status(plan, "BPR", report)["running_now"] == []
    again = claims.claim(trial)  # testing a claim takes nothing away
    assert again is not None
    claims.release(again)


def _wait_beside(other, out, spec, monkeypatch):
    """``run_or_reuse`` of ``spec`` while a thread (standing for another process) holds the claim and runs ``other``."""
    monkeypatch.setattr(claims, "POLL_SECONDS", 0.2)
    held = claims.claim(out)
    assert held is not None

    def run():
        try:
            other(held)
        finally:
            claims.release(held)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    record = runner.run_or_reuse(spec, out, "1/1")
    thread.join()
    return record


def test_a_job_another_process_runs_is_waited_for_and_its_result_taken(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    plan = load_plan(str(_plan_file(tmp_path)), {}, None, None)
    spec = job_spec(plan, "BPR", 1, {"learning_rate": 0.01})
    out = tmp_path / "results" / "BPR-seed1.json"
    record = _wait_beside(lambda held: runner._run_job(spec, out, "[other]", None, held), out, spec, monkeypatch)
    log = capsys.readouterr().out
    assert record["status"] == "ok" and "waiting for it" in log and "taking the result another process wrote" in log
    assert log.count("running ...") == 1  # one run, by the other
    # a run that failed in the other process is taken as failed, not run again
    failed = {k: spec[k] for k in ("row", "model", "dataset", "seed", "config_hash")}
    failed.update(status="failed", error="out of memory")
    gone = tmp_path / "results" / "BPR-seed2.json"
    record = _wait_beside(lambda held: time.sleep(1.5) or gone.write_text(json.dumps(failed)), gone, spec, monkeypatch)
    assert record["error"] == "out of memory" and "running ..." not in capsys.readouterr().out


def test_a_second_process_runs_its_share_of_the_trials_and_the_plans_command_reuses_it(tmp_path, capsys):
    plan_file, out = _plan_file(tmp_path), tmp_path / "report"
    command = [f"--config_files={plan_file}", f"--report={out}"]
    assert leaderboard.main([*command, "--trials=2"]) == 0
    log = capsys.readouterr().out
    assert "[tuning BPR 2/2]" in log and "[tuning BPR 1/2]" not in log
    assert (
        len(list((out / "tuning" / "BPR").glob("trial-*.json"))) == 1
        and not (out / "tuning" / "BPR-tuning.json").exists()
    )
    assert not (out / "report.md").exists()
    assert leaderboard.main([*command, "--resume"]) == 0
    log = capsys.readouterr().out
    assert (
        "[tuning BPR 1/2] BPR seed 1 (BPR): running" in log and "[tuning BPR 2/2] BPR seed 1: reusing finished" in log
    )
    assert len(json.loads((out / "tuning" / "BPR-tuning.json").read_text())["trials"]) == 2
    with pytest.raises(SystemExit, match="trial numbers run from 1 to the plan's budget, 2"):
        leaderboard.main([*command, "--trials=3"])


def test_status_names_a_failed_trial_that_resume_would_run_again(tmp_path, monkeypatch):
    """A trial that failed (here a real NaN loss from a learning rate of 1e30) is not done: ``--resume`` runs it
    again with the same settings and seed, hours for a slow row, so ``--status`` names it and its error."""
    from recbole_m6rec.benchmarks import status

    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    plan_file = tmp_path / "plan.yaml"
    plan = yaml.safe_load(_plan_file(tmp_path).read_text())
    plan["rows"]["BPR"]["search"] = {"learning_rate": ["choice", 0.001, 1.0e30]}
    plan_file.write_text(yaml.safe_dump(plan))
    report = tmp_path / "report"
    leaderboard.main([f"--config_files={plan_file}", f"--report={report}"])  # tunes, then the chosen trial's seed
    loaded = load_plan(str(plan_file), {}, None, None)
    tuned = status.tuning_status(loaded, "BPR", report)
    assert tuned["done"] == 1 and len(tuned["failed"]) == 1
    assert "failed (" in tuned["failed"][0] and "nan" in tuned["failed"][0].lower()
    assert "`--resume` runs it again" in status.status_report(loaded, report)
