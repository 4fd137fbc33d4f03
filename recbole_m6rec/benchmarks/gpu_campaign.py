"""The results that two CPU cores cannot produce, in one command sized for one large GPU and about 8 minutes.

    python -m recbole_m6rec.benchmarks.gpu_campaign --out=reports/gpu [--budget_s=480] [--resume | --fresh]
    python -m recbole_m6rec.benchmarks.gpu_campaign --out=runs/gpu-tiny --tiny --fresh    # the CPU check, ~1 min

Three parts, each a leaderboard plan in ``configs/gpu_*.yaml`` (:data:`PARTS`), each written as an ordinary report
folder under ``--out`` (same ``report.md``, ``results.csv``, ``results/<row>-seed<N>.json`` with split fingerprints
and provenance as :mod:`recbole_m6rec.benchmarks.leaderboard` writes; its functions do the work):

* ``ml-1m``: MostPop, BPR, GRU4Rec, SASRec, M6Rec (text+ID hybrid) and M6Rec-text, one seed, no tuning, early
  stopping on valid;
* ``ctr_ml-100k``: M6RecCTR with 1, 2 and 3 online layers next to the joined model (every layer online over every
  token, ``late_interaction_layers: all``, resolved here to the backbone's layer count);
* ``zero-shot_ml-100k``: M6RecZeroShot ranking every item for every user (no re-ranking), next to MostPop.

Time budget. The parts run at the same time, each row in its own job process, ``workers`` rows of a part at once.
A plan's ``campaign`` block gives each row a share of ``--budget_s`` (``row_budget``) and the part one
(``budget``, counted from the campaign's start). A row still running when its share or its part's runs out is
stopped and recorded with status ``cut``; a row that could not start before its part's end is recorded ``cut``
too; every finished row is kept and reported. A second try with ``--resume`` reuses every finished result that is
still current and reruns the rest.

Device. Without CUDA the full campaign refuses to start (it names what it found) unless ``--allow_cpu``.
``--tiny`` runs the same parts on the CPU in about a minute with each plan's ``tiny`` settings (a tiny random
backbone, a slice of ml-100k standing in for ml-1m, one epoch): the test suite's check that the command works
before it meets a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks import runner
from recbole_m6rec.benchmarks.gpu_checks import describe, device_refusal, device_summary, model_device_problem
from recbole_m6rec.benchmarks.gpu_plans import CONFIGS_DIR, PARTS, load_part
from recbole_m6rec.benchmarks.gpu_summary import summary_text
from recbole_m6rec.benchmarks.plan import job_spec, jobs
from recbole_m6rec.benchmarks.report import write_report

__all__ = ["main", "run_part"]

MIN_ROW_SECONDS = 5.0  # a row is not started with less time than this left in its part
DEFAULT_BUDGET_S = 480.0


# --- one part -----------------------------------------------------------------------------------------------------
def _not_run(spec: dict, out: Path, status: str, error: str) -> dict:
    record = {
        **{k: spec[k] for k in ("row", "model", "dataset", "seed", "config_hash")},
        "status": status,
        "error": error,
    }
    atomic_write_text(out, json.dumps(record, indent=1))
    return record


def _reusable(spec: dict, out: Path) -> dict | None:
    try:
        previous = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return previous if runner.reuse_verdict(previous, spec) is None else None


def run_part(
    name: str,
    plan: dict,
    report_dir: Path,
    budget_s: float,
    started: float,
    command: str,
    resume: bool = True,
    refused: dict[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict]:
    """Run one plan's rows within their budgets (see the module docstring) and write its report; returns the
    records in the plan's row order. ``refused``: ``{model: why}`` for models not to start (recorded ``skipped``)."""
    campaign = plan["campaign"]
    deadline = started + float(campaign["budget"]) * budget_s
    planned = jobs(plan)
    # longest budgets first: the rows that need the most time start at once
    order = sorted(planned, key=lambda job: -float(campaign["row_budget"][job[0]]))
    records: dict[tuple, dict] = {}

    def run_one(job: tuple[str, int]) -> None:
        row, seed = job
        # no validation re-evaluation after the run (benchmarks/valid_values.py): a second data load and
        # validation pass in every job would eat into row budgets sized for training
        spec = {**job_spec(plan, row, seed), "valid_values": False}
        out = report_dir / "results" / f"{row}-seed{seed}.json"
        label = f"[{name}] {row} seed {seed}"
        if (refused or {}).get(spec["model"]):
            print(f"{label}: not started: {refused[spec['model']]}", flush=True)
            records[job] = _not_run(spec, out, "skipped", refused[spec["model"]])
            return
        limit = min(float(campaign["row_budget"][row]) * budget_s, deadline - clock())
        if limit < MIN_ROW_SECONDS:
            previous = _reusable(spec, out) if resume else None
            if previous is not None:
                print(f"{label}: reusing finished result {out}", flush=True)
                records[job] = previous
                return
            print(f"{label}: not started, {max(limit, 0):.0f} s left of the part's budget", flush=True)
            records[job] = _not_run(
                spec,
                out,
                "cut",
                f"not started: the part's time budget " f"({float(campaign['budget']) * budget_s:.0f} s) was spent",
            )
            return
        records[job] = runner.run_or_reuse(
            spec, out, f"{name}, {label.split('] ')[1]}, limit {limit:.0f} s", resume, timeout=limit
        )

    with ThreadPoolExecutor(max_workers=int(campaign["workers"]), thread_name_prefix=name) as pool:
        for future in [pool.submit(run_one, job) for job in order]:
            future.result()
    ordered = [records[job] for job in planned]
    write_report(plan, ordered, report_dir, command)
    return ordered


# --- command ------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the parts' report folders and campaign.md")
    parser.add_argument(
        "--budget_s",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="wall-clock seconds for the whole campaign; every part and row gets its share",
    )
    parser.add_argument("--tiny", action="store_true", help="the CPU check: each plan's tiny settings")
    parser.add_argument("--allow_cpu", action="store_true", help="run the full campaign without CUDA anyway")
    parser.add_argument("--parts", default=None, help=f"comma-separated subset of {', '.join(PARTS)}")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="reuse the finished results that are still current")
    resume.add_argument("--fresh", action="store_true", help="delete earlier results first")
    args = parser.parse_args(argv)
    parts = args.parts.split(",") if args.parts else list(PARTS)
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; the campaign's parts are {', '.join(PARTS)}")
    device = device_summary()
    refusal = device_refusal(device)
    if refusal and not (args.tiny or args.allow_cpu):
        raise SystemExit(refusal)
    print(
        f"gpu campaign on {describe(device)}; budget {args.budget_s:.0f} s{' (tiny)' if args.tiny else ''}", flush=True
    )
    out = Path(args.out)
    plans = {part: load_part(CONFIGS_DIR / PARTS[part], args.tiny) for part in parts}
    for part in parts:
        runner.prepare_report_dir(out / part, args.resume, args.fresh)
    # rows run side by side: split the CPU threads between them rather than each taking every core
    at_once = sum(int(plans[part]["campaign"]["workers"]) for part in parts)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // min(at_once, 4))))
    command = "python -m recbole_m6rec.benchmarks.gpu_campaign " + " ".join(argv)
    started = time.monotonic()
    results: dict[str, list] = {}

    def run(part: str) -> None:
        plan = plans[part]
        plan["method"] = f"{plan.get('method', '').strip()} Ran on {describe(device)}.".strip()
        refused = {}
        if device["cuda"]:
            for model in plan["campaign"].get("device_check") or []:
                problem = model_device_problem(model, plan, "cuda")
                if problem:
                    refused[model] = problem
        results[part] = run_part(part, plan, out / part, args.budget_s, started, command, resume=True, refused=refused)

    threads = [threading.Thread(target=run, args=(part,), name=part) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    missing = [part for part in parts if part not in results]
    text = summary_text(
        command,
        device,
        args.budget_s,
        time.monotonic() - started,
        {part: (plans[part], results[part]) for part in parts if part in results},
        args.tiny,
    )
    if missing:
        text += f"\nParts that stopped with an error before their report: {', '.join(missing)} (see the log).\n"
    atomic_write_text(out / "campaign.md", text)
    atomic_write_text(
        out / "campaign.json",
        json.dumps(
            {
                "command": command,
                "device": device,
                "budget_s": args.budget_s,
                "tiny": args.tiny,
                "parts": {
                    part: [
                        {k: r.get(k) for k in ("row", "seed", "status", "wall_seconds", "error")}
                        for r in results.get(part, [])
                    ]
                    for part in parts
                },
            },
            indent=1,
        ),
    )
    print(text, flush=True)
    records = [r for part in results.values() for r in part]
    return 0 if not missing and all(r.get("status") == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
