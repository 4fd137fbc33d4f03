"""Give a report's finished results the validation values they lack, by running each once more.

Results that finished before jobs kept validation's per-user (per-sample) values have validation means only, so
the report's paired tests on validation leave them out. Their checkpoints are gone; this command runs each such
result's job again (same settings, same seed, today's code, which must be the code the result records), and adds
the rerun's validation values to the result only if the rerun reproduced it: the same split fingerprint, and every
validation and test metric equal. The result keeps its own times and provenance; ``valid_values_rerun`` says when
and how the values were added. A rerun that differs adds nothing but ``valid_values_error`` with the differences
(``--retry`` tries such results again): a finding about reproducibility the report should not hide.

    python -m recbole_m6rec.benchmarks.add_valid_values --config_files=configs/bench_ml-100k.yaml \\
        --report=reports/ml-100k --rows=GRU4Rec,SASRec

Only results the leaderboard would reuse now are touched (same settings, same code, same data and libraries);
rows whose tuning has not finished are skipped. A rerun takes as long as the run did; run it alone, or with the
thread settings the results ran with (their ``provenance.runtime``), since thread counts can change float sums.
It runs under the torch CPU kernel set the result records (``ATEN_CPU_CAPABILITY``, when this CPU has that set
and the caller has not named one): kernel sets round differently, and a long run on another set drifts apart.
A rerun that is stopped keeps its checkpoints (:func:`rerun_folder`, beside the report's own, under
``$RECBOLE_M6REC_PARTIAL_DIR`` when set) and the next call continues it from its last evaluated epoch, which gives
the metrics of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks import claims, job
from recbole_m6rec.benchmarks.kept_values import has_valid_values, metric_differences
from recbole_m6rec.benchmarks.plan import job_spec, jobs, load_plan, parse_seeds
from recbole_m6rec.benchmarks.runner import reusable_result, tune
from recbole_m6rec.benchmarks.time_limit import NoNewRuns

# what a job adds after its run (benchmarks/valid_values.py)
VALID_VALUE_KEYS = ("per_user_valid", "per_sample_valid", "valid_cold", "valid_values_seconds")
# why a row's results are skipped: what the tuning step says of a row whose settings are not chosen
UNTUNED = {"unfinished": "its tuning has not finished", "error": "its tuning failed"}
# torch's x86 CPU kernel sets, lowest first: a CPU runs its own set or any below it
KERNEL_SETS = ("DEFAULT", "AVX2", "AVX512")


def rerun_environment(record: dict, environment: dict[str, str], own_kernels: str) -> dict[str, str]:
    """The job process's environment for rerunning ``record``: the caller's, without the checkpoint folder setting
    (the rerun keeps its own), and with ``ATEN_CPU_CAPABILITY`` set to the kernel set the result ran with, where it
    records one, this CPU (``own_kernels``) has it and the caller has not chosen one."""
    rerun = {name: value for name, value in environment.items() if name != job.PARTIAL_DIR_ENV}
    recorded = ((record.get("provenance") or {}).get("runtime") or {}).get("cpu_capability")
    available = KERNEL_SETS[: KERNEL_SETS.index(own_kernels) + 1] if own_kernels in KERNEL_SETS else (own_kernels,)
    if recorded in available and "ATEN_CPU_CAPABILITY" not in rerun:
        rerun["ATEN_CPU_CAPABILITY"] = recorded.lower()
    return rerun


def reproduction_differences(record: dict, rerun: dict) -> list[str]:
    """How ``rerun`` differs from ``record`` in what a result reports ([] when it reproduced it)."""
    if rerun.get("status") != "ok":
        return [f"the rerun {rerun.get('status', 'did not finish')}: {rerun.get('error', '')}".rstrip(": ")]
    differences = []  # the settings hash is the spec's in both: the result was reusable for this very spec
    if rerun.get("split_fingerprint") != record.get("split_fingerprint"):
        differences.append(
            f"split_fingerprint {rerun.get('split_fingerprint')} against {record.get('split_fingerprint')}"
        )
    ran, recorded = (rerun.get("provenance") or {}), (record.get("provenance") or {})
    if ran.get("code_hash") != recorded.get("code_hash"):
        differences.append(f"code hash {ran.get('code_hash')} against {recorded.get('code_hash')}")
    for part in ("valid", "test"):
        differences += metric_differences(rerun.get(part) or {}, record.get(part) or {}, part)
    kernels = [(p.get("runtime") or {}).get("cpu_capability") for p in (ran, recorded)]
    if differences and all(kernels) and kernels[0] != kernels[1]:  # the likely cause: say it
        differences.append(f"torch's CPU kernels {kernels[0]} against {kernels[1]}")
    return differences


def rerun_folder(out: Path) -> Path:
    """Where the rerun of ``out``'s result runs: beside the report's checkpoints, never in its ``results/``."""
    return job.partial_parent(Path(out).parent) / "valid-values-rerun" / Path(out).stem


def rerun_job(spec: dict, folder: Path, environment: dict[str, str]) -> dict:
    """``spec``'s job run once more in a job process with ``environment``, in ``folder``: the record it wrote, or a
    failed one. A stopped rerun leaves its checkpoints there (``folder/.partial``) and the next rerun of the same
    spec and code continues it, as a leaderboard job would; the folder goes once the job has written its record (a
    job process killed before that keeps it, to be continued)."""
    scratch = folder / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    spec_path, out = folder / "spec.json", folder / "result.json"
    out.unlink(missing_ok=True)  # one a stopped call had not read yet: its checkpoints are gone, it runs again
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "recbole_m6rec.benchmarks.job", str(spec_path), str(out)],
        env={**environment, "TMPDIR": str(scratch)},
    )
    if not out.exists():
        return {"status": "failed", "error": f"job process exited with code {done.returncode} without a result"}
    record = json.loads(out.read_text(encoding="utf-8"))
    shutil.rmtree(folder, ignore_errors=True)
    return record


def add_to_result(out: Path, spec: dict, retry: bool = False) -> str:
    """Rerun ``out``'s result and add its validation values when the rerun reproduced it; what happened, in words."""
    record, why = reusable_result(spec, out)
    if record is None:
        return f"skipped: {why or 'no result yet'}"
    if has_valid_values(record):
        return "skipped: it has validation values"
    if "valid_values_error" in record and not retry:
        return f"skipped: an earlier attempt recorded {record['valid_values_error']!r} (--retry tries again)"
    held = claims.claim(out)
    if held is None:
        return "skipped: another process runs this job now"
    try:
        started = time.perf_counter()
        environment = rerun_environment(record, dict(os.environ), torch.backends.cpu.get_cpu_capability())
        rerun = rerun_job(spec, rerun_folder(out), environment)
        seconds = round(time.perf_counter() - started, 2)
        record = json.loads(out.read_text(encoding="utf-8"))  # as it is now, under the claim
        record.pop("valid_values_error", None)
        ran = rerun.get("provenance") or {}
        differences = reproduction_differences(record, rerun)
        if not differences and "valid_values_error" in rerun:
            differences = [f"the rerun reproduced the result but kept no values: {rerun['valid_values_error']}"]
        if differences:
            record["valid_values_error"] = "a rerun to add them differed: " + "; ".join(differences)
            verdict = f"not added: {record['valid_values_error']}"
        else:
            record.update({key: rerun[key] for key in VALID_VALUE_KEYS if key in rerun})
            record["valid_values_rerun"] = {
                "reproduced": "split fingerprint, code hash and every valid and test metric equal this result's",
                "git_commit": ran.get("git_commit"),
                "runtime": ran.get("runtime"),
                "machine": rerun.get("machine"),
                "wall_seconds": seconds,  # of this call: a rerun continued from a stopped one says where it resumed
                "resumed_from_epoch": rerun.get("resumed_from_epoch"),
                "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            }
            verdict = f"added: the rerun reproduced it ({seconds:.0f} s)"
        atomic_write_text(out, json.dumps(record, indent=1, default=str))
        return verdict
    finally:
        claims.release(held)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_m6rec.benchmarks.add_valid_values",
        description="Rerun a report's finished results that lack validation values and add them where the rerun "
        "reproduces the result.",
    )
    parser.add_argument("--config_files", required=True, help="the plan the report was made by")
    parser.add_argument("--report", required=True, help="the report folder (its results/ are updated in place)")
    parser.add_argument("--rows", help="comma-separated rows (default: every row of the plan)")
    parser.add_argument("--seeds", help="a count (the plan's first N) or comma-separated seeds")
    parser.add_argument("--retry", action="store_true", help="also rerun results whose earlier rerun differed")
    args = parser.parse_args(argv)
    report_dir = Path(args.report)
    if not (report_dir / "results").is_dir():
        parser.error(f"--report={args.report}: no results/ folder there")
    rows = args.rows.split(",") if args.rows else None
    plan = load_plan(args.config_files, {}, rows, parse_seeds(args.seeds, args.config_files))
    tuned = tune(plan, report_dir, resume=True, time_limit=NoNewRuns())  # the chosen settings; runs nothing
    planned = jobs(plan)
    missing = 0
    for k, (name, seed) in enumerate(planned, 1):
        label = f"[{k}/{len(planned)}] {name} seed {seed}"
        skipped = [text for key, text in UNTUNED.items() if key in tuned.get(name, {})]
        if skipped:
            print(f"{label}: skipped: {skipped[0]}", flush=True)
            continue
        print(f"{label}: ...", flush=True)
        verdict = add_to_result(
            report_dir / "results" / f"{name}-seed{seed}.json", job_spec(plan, name, seed), args.retry
        )
        missing += verdict.startswith("not added")
        print(f"{label}: {verdict}", flush=True)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
