"""What a plan has run into a report folder and what is left, read from the folder's files; nothing runs.

    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml --report=reports/ml-100k \\
        --status

A campaign of many CPU-hours runs over days and resumes after each interruption; this says where it stands with the
same rules the leaderboard reuses results by (settings hash, then code, data and library provenance), so it never
counts a result that a ``--resume`` would rerun. Per row: its tuning trials that still count, the best validation
score among them, and per seed whether the result is finished, would rerun (and why), has an interrupted run to
continue (``.partial/``, with the epochs it has finished), waits for the tuning, or is still to run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from recbole_m6rec.benchmarks import provenance
from recbole_m6rec.benchmarks.job import partial_folder
from recbole_m6rec.benchmarks.plan import job_spec, jobs
from recbole_m6rec.benchmarks.runner import reusable_result

__all__ = ["tuning_status", "job_status", "status_report"]


def _trial_path(report_dir: Path, spec: dict) -> Path:
    return report_dir / "tuning" / spec["row"] / f"trial-{spec['config_hash']}.json"


def _interrupted(folder: Path, spec: dict | None = None) -> str | None:
    """``"k epochs done, saved DD Mon HH:MM UTC"`` for the interrupted run whose checkpoints are in ``folder``
    (:func:`~recbole_m6rec.benchmarks.job.partial_folder`); with ``spec``, only if it is a run of that job. A rerun
    also checks the code and libraries before it continues, which this does not."""
    try:
        stamp = json.loads((folder / "partial.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if spec is not None and (stamp.get("config_hash"), stamp.get("seed")) != (spec["config_hash"], spec["seed"]):
        return None
    points = sorted(folder.glob("*-last.pth"), key=lambda path: path.stat().st_mtime)
    if not points:
        return "started, no epoch finished yet"
    from recbole_m6rec.checkpoint import load_plain_checkpoint

    try:
        epochs = load_plain_checkpoint(points[-1], map_location="cpu")["epoch"] + 1
    except (ValueError, KeyError):
        return None
    saved = time.strftime("%d %b %H:%M UTC", time.gmtime(points[-1].stat().st_mtime))
    return f"{epochs} epochs done, saved {saved}"


def tuning_status(plan: dict, name: str, report_dir: Path, keep_finished: bool = False) -> dict | None:
    """Row ``name``'s tuning: ``{budget, done, best_params, best_valid, metric, running}`` counting only trials whose
    result a ``--resume`` would reuse; ``None`` when the row is not tuned."""
    from recbole_m6rec.benchmarks.tuning import _smaller_is_better, validate_search, validate_tuning

    row = plan["rows"][name]
    if not row.get("search") or "tuning" not in plan:
        return None
    tuning = validate_tuning(plan)
    space = validate_search(name, row["search"], tuning["algo"])
    metric = str(plan["common"].get("valid_metric", "")).lower()
    header = {"space": space, "algo": tuning["algo"], "seed": tuning["seed"], "metric": metric}
    try:
        record = json.loads((report_dir / "tuning" / f"{name}-tuning.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    trials = record.get("trials") or [] if all(record.get(k) == v for k, v in header.items()) else []
    done, best_params, best_valid = 0, None, None
    sign = -1.0 if _smaller_is_better(metric) else 1.0
    for trial in trials:  # the tuner reuses a prefix of its record: the first trial that does not count ends it
        spec = job_spec(plan, name, tuning["seed"], trial.get("params"))
        # trials count only while current, --keep_finished or not: the tuner checks them that way
        if trial.get("status") == "ok" and reusable_result(spec, _trial_path(report_dir, spec))[0]:
            score = trial["valid"].get(metric)
            if score is not None and math.isfinite(score) and (best_valid is None or sign * score > sign * best_valid):
                best_params, best_valid = trial["params"], score
        else:  # a failed or stale trial runs again, and hyperopt's later proposals may follow from it
            break
        done += 1
    # the next trial's settings are hyperopt's to propose: show the latest interrupted trial, whichever it is
    folders = sorted((report_dir / "tuning" / name / ".partial").glob("trial-*"), key=lambda p: p.stat().st_mtime)
    running = _interrupted(folders[-1]) if folders else None
    return {
        "budget": tuning["trials"],
        "done": min(done, tuning["trials"]),
        "best_params": best_params,
        "best_valid": best_valid,
        "metric": metric,
        "running": running,
    }


def job_status(plan: dict, name: str, seed: int, report_dir: Path, keep_finished: bool = False, params=None) -> str:
    """One (row, seed): ``done``, ``done, code changed since (kept)``, ``reruns: why``, ``continues: k epochs
    done ...`` or ``to run``. ``params`` are the row's chosen tuning settings."""
    spec = job_spec(plan, name, seed, params)
    out = report_dir / "results" / f"{name}-seed{seed}.json"
    found = [reusable_result(spec, path, keep_finished) for path in (out, _trial_path(report_dir, spec))]
    for previous, _ in found:  # the winning tuning trial is this very job at the tuning seed
        if previous is not None:
            changed = provenance.stale_reasons(previous) if keep_finished else []
            return "done, code changed since (kept)" if changed else "done"
    interrupted = _interrupted(partial_folder(out), spec)
    if interrupted:
        return f"continues: {interrupted}"
    why = found[0][1]
    return f"reruns: {why}" if why else "to run"


def status_report(plan: dict, report_dir: Path, keep_finished: bool = False) -> str:
    """A markdown table of the plan's rows against its seeds, and a line that counts what is left."""
    report_dir = Path(report_dir)
    planned = jobs(plan)
    seeds = list(dict.fromkeys(seed for _, seed in planned))
    lines = [
        f"# Status of {report_dir}",
        "",
        "| row | tuning | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
    ]
    trials_left = jobs_left = 0
    for name in plan["rows"]:
        tuned = tuning_status(plan, name, report_dir, keep_finished)
        cells = {}
        if tuned is None:
            tuning_cell, params = "–", None
        else:
            best = (
                f", best valid {tuned['metric']} {tuned['best_valid']:.4f}" if tuned["best_valid"] is not None else ""
            )
            tuning_cell = f"{tuned['done']} of {tuned['budget']} trials{best}"
            if tuned["running"] and tuned["done"] < tuned["budget"]:
                tuning_cell += f"; an interrupted trial: {tuned['running']}"
            trials_left += tuned["budget"] - tuned["done"]
            params = tuned["best_params"] if tuned["done"] == tuned["budget"] else None
        for row, seed in planned:
            if row != name:
                continue
            if tuned is not None and params is None:
                cells[seed] = "after tuning"
            else:
                cells[seed] = job_status(plan, name, seed, report_dir, keep_finished, params)
            jobs_left += not cells[seed].startswith("done")
        lines.append(f"| {name} | {tuning_cell} | " + " | ".join(cells.get(seed, "–") for seed in seeds) + " |")
    lines += ["", f"Left: {trials_left} tuning trials and {jobs_left} seed runs."]
    return "\n".join(lines)
