"""Adding validation values to finished results by rerunning them: only where the rerun reproduces the result."""

import json

import pytest
import yaml
from helpers import QUIET
from test_job_resume import PLAN as RESUME_PLAN
from test_job_resume import run as run_killable_job

from recbole_m6rec.benchmarks import add_valid_values, job, leaderboard
from recbole_m6rec.benchmarks.plan import job_spec, load_plan
from recbole_m6rec.benchmarks.status import job_status

pytestmark = pytest.mark.usefixtures("no_foreign_argv")  # conftest: RecBole never sees pytest's flags

PLAN = {
    "dataset": "ml-100k",
    "seeds": [2020],
    "common": {
        **QUIET,
        "user_inter_num_interval": "[0,30]",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "epochs": 2,
    },
    "rows": {"BPR": {"model": "BPR"}, "MostPop": {"model": "MostPop"}},
}


def test_a_reproduced_rerun_adds_validation_values_and_one_that_differs_adds_none(tmp_path):
    plan_file, out = tmp_path / "plan.yaml", tmp_path / "report"
    plan_file.write_text(yaml.safe_dump(PLAN))
    assert leaderboard.main([f"--config_files={plan_file}", f"--report={out}"]) == 0
    bpr_file, pop_file = (out / "results" / f"{row}-seed2020.json" for row in ("BPR", "MostPop"))
    bpr, pop = (json.loads(path.read_text()) for path in (bpr_file, pop_file))
    kept_users = bpr["per_user_valid"]["ndcg@10"]
    for record in (bpr, pop):  # as results finished before jobs kept them
        for key in add_valid_values.VALID_VALUE_KEYS:
            record.pop(key, None)
    pop["test"]["ndcg@10"] += 0.01  # a result this code does not reproduce
    bpr_file.write_text(json.dumps(bpr))
    pop_file.write_text(json.dumps(pop))

    loaded = load_plan(str(plan_file), {}, None, None)
    assert job_status(loaded, "BPR", 2020, out) == "done; no validation values (`add_valid_values` adds them)"

    command = [f"--config_files={plan_file}", f"--report={out}"]
    assert add_valid_values.main(command) == 1  # one result could not be given its values
    bpr_after, pop_after = (json.loads(path.read_text()) for path in (bpr_file, pop_file))
    assert bpr_after["per_user_valid"]["ndcg@10"] == kept_users  # the rerun's values: the run's own
    assert bpr_after["valid_values_rerun"]["reproduced"] and bpr_after["train_seconds"] == bpr["train_seconds"]
    assert "per_user_valid" not in pop_after and pop_after["test"] == pop["test"]  # nothing of the rerun kept
    assert "test ndcg@10" in pop_after["valid_values_error"]
    assert job_status(loaded, "BPR", 2020, out) == "done"  # status: has them now
    assert job_status(loaded, "MostPop", 2020, out).startswith("done; validation values not kept: ")

    before = {path: path.read_text() for path in (bpr_file, pop_file)}
    assert add_valid_values.main(command) == 0  # nothing left to try: neither is run again
    assert {path: path.read_text() for path in (bpr_file, pop_file)} == before
    assert not list(tmp_path.glob("**/.partial/*/partial.json"))  # no checkpoints left behind


def test_differences_name_every_metric_the_rerun_changed():
    record = {"status": "ok", "config_hash": "a", "split_fingerprint": "s", "provenance": {"code_hash": "c"}}
    record.update(valid={"ndcg@10": 0.1}, test={"ndcg@10": 0.2, "recall@10": 0.3})
    assert add_valid_values.reproduction_differences(record, record) == []
    rerun = {**record, "test": {"ndcg@10": 0.2, "recall@10": 0.31}, "provenance": {"code_hash": "d"}}
    assert add_valid_values.reproduction_differences(record, rerun) == [
        "code hash d against c",
        "test recall@10 0.31 against 0.3",
    ]
    failed = add_valid_values.reproduction_differences(record, {"status": "failed", "error": "boom"})
    assert failed == ["the rerun failed: boom"]


def test_a_rerun_runs_under_the_cpu_kernel_set_the_result_ran_with():
    # torch's AVX2 and AVX512 kernels round float32 sums differently: a long run on another set drifts apart
    def ran_on(kernels):
        return {"provenance": {"runtime": {"cpu_capability": kernels}}}

    caller = {"PATH": "/bin", job.PARTIAL_DIR_ENV: "/elsewhere"}
    rerun = add_valid_values.rerun_environment(ran_on("AVX2"), caller, own_kernels="AVX512")
    assert rerun == {"PATH": "/bin", "ATEN_CPU_CAPABILITY": "avx2"}  # the rerun keeps its own checkpoints
    assert add_valid_values.rerun_environment(ran_on("AVX512"), caller, "AVX512")["ATEN_CPU_CAPABILITY"] == "avx512"
    assert "ATEN_CPU_CAPABILITY" not in add_valid_values.rerun_environment(ran_on("AVX512"), caller, "AVX2")
    assert "ATEN_CPU_CAPABILITY" not in add_valid_values.rerun_environment({}, caller, "AVX512")  # not recorded
    chosen = {**caller, "ATEN_CPU_CAPABILITY": "default"}  # the caller's choice stands
    assert add_valid_values.rerun_environment(ran_on("AVX2"), chosen, "AVX512")["ATEN_CPU_CAPABILITY"] == "default"

    record = {"status": "ok", "valid": {"ndcg@10": 0.1}, "test": {}, **ran_on("AVX2")}
    rerun_record = {**record, "valid": {"ndcg@10": 0.2}, **ran_on("AVX512")}
    assert add_valid_values.reproduction_differences(record, rerun_record)[-1] == (
        "torch's CPU kernels AVX512 against AVX2"
    )
    assert add_valid_values.reproduction_differences(record, {**record, **ran_on("AVX512")}) == []


def test_a_stopped_rerun_continues_from_its_last_epoch_and_still_reproduces(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(job.PARTIAL_DIR_ENV, raising=False)
    plan = {**RESUME_PLAN, "seeds": [2020], "common": {**RESUME_PLAN["common"], "valid_metric": "NDCG@10"}}
    plan_file, out = tmp_path / "plan.yaml", tmp_path / "report"
    plan_file.write_text(yaml.safe_dump(plan))
    assert leaderboard.main([f"--config_files={plan_file}", f"--report={out}"]) == 0
    result_file = out / "results" / "SASRec-seed2020.json"
    result = json.loads(result_file.read_text())
    kept_users = result["per_user_valid"]["ndcg@10"]
    for key in add_valid_values.VALID_VALUE_KEYS:
        result.pop(key, None)
    result_file.write_text(json.dumps(result))

    # the rerun, stopped inside its third epoch as a machine that goes away would stop it
    folder = add_valid_values.rerun_folder(result_file)
    folder.mkdir(parents=True)
    spec = job_spec(load_plan(str(plan_file), {}, None, None), "SASRec", 2020)
    killed, _ = run_killable_job(tmp_path, spec, folder / "result.json", kill_epoch=2)
    assert killed.returncode == -9 and list((folder / ".partial" / "result").glob("SASRec-*-last.pth"))
    capfd.readouterr()

    assert add_valid_values.main([f"--config_files={plan_file}", f"--report={out}"]) == 0
    assert "continuing the interrupted run in " in capfd.readouterr().out  # from epoch 2, not from the start
    after = json.loads(result_file.read_text())
    assert after["per_user_valid"]["ndcg@10"] == kept_users and after["valid_values_rerun"]["reproduced"]
    assert after["valid_values_rerun"]["resumed_from_epoch"] == 2  # its wall_seconds cover the continued epochs
    assert not folder.exists()  # the rerun's checkpoints go once its result is read
