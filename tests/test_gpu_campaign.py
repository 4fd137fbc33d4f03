"""The GPU campaign's command on the CPU: its tiny mode end to end, the time budget that cuts a row, the device
refusal, and the GPU plans themselves (valid settings, ml-1m's files found, the joined row resolved)."""

import csv
import json
import os
import sys

import pytest
import torch
import yaml

from recbole_m6rec.benchmarks import gpu_campaign, gpu_checks, gpu_plans, job, runner
from recbole_m6rec.benchmarks.plan import job_spec

EXPECTED_ROWS = {
    "ml-1m": ["MostPop", "BPR", "GRU4Rec", "SASRec", "M6Rec", "M6Rec-text"],
    "ctr_ml-100k": ["M6RecCTR-L1", "M6RecCTR", "M6RecCTR-L3", "M6RecCTR-joined"],
    "zero-shot_ml-100k": ["M6Rec-zero-shot", "MostPop"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-campaign") / "tiny"
    threads = os.environ.get("OMP_NUM_THREADS")
    try:
        code = gpu_campaign.main([f"--out={out}", "--tiny", "--fresh"])
    finally:  # the command sets OMP_NUM_THREADS for its jobs where none is set: not for the tests after it
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    return out, code


def test_tiny_mode_writes_the_three_report_folders(tiny):
    out, code = tiny
    assert code == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(EXPECTED_ROWS)
    for part, rows in EXPECTED_ROWS.items():
        table = list(csv.DictReader(open(out / part / "results.csv")))
        assert [r["model"] for r in table] == rows, part
        assert {r["status"] for r in table} == {"ok"}, part
        assert len({r["split_fingerprint"] for r in table}) == 1, part  # one table, one split
        assert all(r["code_hash"] and r["git_commit"] for r in table), part  # provenance, as every report
        # time-budgeted jobs skip validation's re-evaluation
        assert not any(
            "valid_values_seconds" in r or "valid_values_error" in r for r in runner.load_results(out / part)
        )
        report = (out / part / "report.md").read_text()
        assert "GPU campaign" in report and "Tiny mode" in report
        assert "no tuning" in report or part.startswith("zero-shot")  # zero-shot has nothing to tune
        assert table[0]["split_fingerprint"] in report
    summary = (out / "campaign.md").read_text()
    assert "Tiny mode" in summary and "CPU only" in summary
    assert json.loads((out / "campaign.json").read_text())["tiny"] is True


def test_joined_ctr_row_runs_every_layer_over_every_token(tiny):
    out, _ = tiny
    records = {r["row"]: r for r in runner.load_results(out / "ctr_ml-100k")}
    settings = yaml.safe_load(
        (out / "ctr_ml-100k" / "report.md")
        .read_text()
        .split("Per-row overrides")[1]
        .split("```yaml")[1]
        .split("```")[0]
    )
    assert settings["M6RecCTR-joined"]["late_interaction_layers"] == 4  # every layer of the tiny backbone
    assert settings["M6RecCTR-joined"]["segment_tokens"] == "all"
    assert [settings[row]["late_interaction_layers"] for row in ("M6RecCTR-L1", "M6RecCTR", "M6RecCTR-L3")] == [1, 2, 3]
    assert all(0 <= records[row]["test"]["auc"] <= 1 for row in records)
    summary = (out / "campaign.md").read_text()
    joined = records["M6RecCTR-joined"]["test"]["auc"]
    l3 = records["M6RecCTR-L3"]["test"]["auc"]
    assert f"M6RecCTR-joined (4 online layers, every token): test AUC {joined:.4f}" in summary
    assert f"M6RecCTR-L3 (3 online layers): test AUC {l3:.4f}, {abs(100 * (l3 - joined) / joined):.1f}%" in summary


def test_zero_shot_part_ranks_every_item(tiny):
    out, _ = tiny
    record = next(r for r in runner.load_results(out / "zero-shot_ml-100k") if r["row"] == "M6Rec-zero-shot")
    plan = gpu_plans.load_part(gpu_plans.CONFIGS_DIR / "gpu_zero-shot_ml-100k.yaml", tiny=True)
    assert plan["rows"]["M6Rec-zero-shot"]["zero_shot_rerank_top_k"] is None  # full ranking, no re-rank
    assert record["trains"] is False and 0 <= record["test"]["ndcg@10"] <= 1


def cut_plan(row_budget: float) -> dict:
    return {
        "dataset": "ml-100k",
        "seeds": [1],
        "common": {
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "user_inter_num_interval": "[5,25]",
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "eval_history_mask": "all",
            "show_progress": False,
            "state": "WARNING",
        },
        # BPR-slow: hundreds of evaluated epochs, far longer than its share of the budget
        "rows": {"MostPop": {"model": "MostPop"}, "BPR-slow": {"model": "BPR", "epochs": 400, "stopping_step": 400}},
        "campaign": {"budget": 1.0, "workers": 2, "row_budget": {"MostPop": 1.0, "BPR-slow": row_budget}},
    }


def test_a_row_past_its_budget_is_cut_and_the_others_reported(tmp_path):
    plan = cut_plan(row_budget=0.25)  # 10 s of a 40 s budget
    report = tmp_path / "cut"
    runner.prepare_report_dir(report, resume=False, fresh=False)
    started = gpu_campaign.time.monotonic()
    records = gpu_campaign.run_part("cut", plan, report, 40, started, "test")
    # the slow row was stopped, not waited for: "cut" is recorded only when its job process outlived its budget and
    # was killed (a wall-clock bound here measured the machine's load instead: 41 s beside two benchmark jobs)
    by_row = {r["row"]: r for r in records}
    assert by_row["MostPop"]["status"] == "ok" and 0 < by_row["MostPop"]["test"]["ndcg@10"] < 1
    cut = by_row["BPR-slow"]
    assert cut["status"] == "cut" and "time budget" in cut["error"] and cut["budget_seconds"] == 10.0
    text = (report / "report.md").read_text()
    assert "| BPR-slow | 0 | cut |" in text and "BPR-slow seed 1 (cut): stopped by its time budget" in text
    assert f"{by_row['MostPop']['test']['ndcg@10']:.4f}" in text
    table = {r["model"]: r["status"] for r in csv.DictReader(open(report / "results.csv"))}
    assert table == {"MostPop": "ok", "BPR-slow": "cut"}

    # a second try: the finished row is reused, the cut one runs again; with the part's time already spent it is
    # recorded as not started, and the finished row is still reported
    finished = (report / "results" / "MostPop-seed1.json").stat().st_mtime_ns
    records = gpu_campaign.run_part("cut", plan, report, 40, started - 40, "test")
    assert (report / "results" / "MostPop-seed1.json").stat().st_mtime_ns == finished
    by_row = {r["row"]: r for r in records}
    assert by_row["MostPop"]["status"] == "ok"
    assert by_row["BPR-slow"]["status"] == "cut" and by_row["BPR-slow"]["error"].startswith("not started")


def test_full_campaign_refuses_a_machine_without_cuda(tmp_path, monkeypatch):
    cpu = {
        "cuda": False,
        "torch": "2.9.0+cpu",
        "torch_cuda": None,
        "devices": 0,
        "name": None,
        "memory_gib": None,
        "cuda_visible_devices": None,
        "cpu_cores": 2,
    }
    monkeypatch.setattr(gpu_campaign, "device_summary", lambda: cpu)  # the name main() calls
    with pytest.raises(SystemExit, match=r"no CUDA device: torch 2\.9\.0\+cpu \(built without CUDA\).*--allow_cpu"):
        gpu_campaign.main([f"--out={tmp_path / 'refused'}"])
    assert not (tmp_path / "refused").exists()
    assert gpu_checks.device_refusal({**cpu, "cuda": True}) is None


def test_modules_kept_off_the_device_are_named():
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(2, 2)
            self.__dict__["lm"] = torch.nn.Linear(2, 2)  # kept out of the module tree, as M6RecZeroShot's LM

    model = Holder().to("meta")
    assert gpu_checks.modules_off_device(model, "meta") == ["lm on cpu"]
    model.lm.to("meta")
    assert gpu_checks.modules_off_device(model, "meta") == []


def test_amp_dtype_and_matmul_precision_reach_torch():
    dtype, precision = torch.get_autocast_dtype("cuda"), torch.get_float32_matmul_precision()
    try:
        job.apply_torch_settings({"amp_dtype": "bfloat16", "float32_matmul_precision": "high"})
        assert torch.get_autocast_dtype("cuda") == torch.bfloat16
        assert torch.get_float32_matmul_precision() == "high"
        with pytest.raises(ValueError, match="amp_dtype must be one of bfloat16, float16"):
            job.apply_torch_settings({"amp_dtype": "fp8"})
    finally:
        torch.set_autocast_dtype("cuda", dtype)
        torch.set_float32_matmul_precision(precision)


def test_gpu_plans_are_valid_runs(monkeypatch):
    """Every row of the real plans builds a RecBole config (no unknown or misspelt key, ml-1m's files found), the
    joined row gets every layer of SmolLM2, and every row has a budget."""
    from recbole_m6rec.config import PluginConfig

    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    for part, plan_file in gpu_plans.PARTS.items():
        plan = gpu_plans.load_part(gpu_plans.CONFIGS_DIR / plan_file, tiny=False)
        assert list(plan["rows"]) == EXPECTED_ROWS[part]
        assert "tiny" not in plan and plan["seeds"] == [2020] and "tuning" not in plan
        for name in plan["rows"]:
            spec = job_spec(plan, name, 2020)
            config = PluginConfig(model=spec["model"], dataset=spec["dataset"], config_dict=spec["config_dict"])
            assert config["epochs"] >= 0 and config["eval_batch_size"] >= 64
        budgets = plan["campaign"]["row_budget"]
        assert all(0 < budgets[row] <= plan["campaign"]["budget"] <= 1 for row in plan["rows"])
    ctr = gpu_plans.load_part(gpu_plans.CONFIGS_DIR / "gpu_ctr_ml-100k.yaml", tiny=False)
    assert ctr["rows"]["M6RecCTR-joined"]["late_interaction_layers"] == 30
