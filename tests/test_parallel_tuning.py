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


def test_a_claim_holds_while_its_process_lives_and_a_dead_ones_is_taken_over(tmp_path):
    out = tmp_path / "results" / "A-seed1.json"
    assert claims.claim(out) and not claims.claim(out)  # this process holds it
    assert claims.holder(out)["pid"] == __import__("os").getpid()
    claims.release(out)
    assert claims.holder(out) is None and claims.claim(out)
    claims.release(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = claims._identity(dead.pid)
    dead.wait()
    claims.claim_path(out).write_text(json.dumps({"pid": dead.pid, "identity": identity}))
    assert claims.holder(out) is None and claims.claim(out)  # stale: its process is gone
    claims.release(out)


def test_a_job_another_process_runs_is_waited_for_and_its_result_taken(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    monkeypatch.setattr(claims, "POLL_SECONDS", 0.2)
    plan = load_plan(str(_plan_file(tmp_path)), {}, None, None)
    spec = job_spec(plan, "BPR", 1, {"learning_rate": 0.01})
    out = tmp_path / "results" / "BPR-seed1.json"
    assert claims.claim(out)  # the other process (a thread here) claims the job, then runs it

    def other():
        try:
            runner._run_job(spec, out, "[other]", None)
        finally:
            claims.release(out)

    thread = threading.Thread(target=other)
    thread.start()
    time.sleep(0.5)
    record = runner.run_or_reuse(spec, out, "1/1")
    thread.join()
    log = capsys.readouterr().out
    assert record["status"] == "ok" and "waiting for it" in log and "reusing the result the other process wrote" in log
    assert log.count("running ...") == 1  # one run, by the other


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
