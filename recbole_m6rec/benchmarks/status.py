"""What a plan has run into a report folder and what is left, read from the folder's files; nothing runs.

    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml --report=reports/ml-100k \\
        --status

A campaign of many CPU-hours runs over days and resumes after each interruption; this says where it stands with the
same rules the leaderboard reuses results by (settings hash, then code, data and library provenance), so it never
counts a result that a ``--resume`` would rerun. Per row: its tuning trials that still count, the best validation
score among them, and per seed whether the result is finished, would rerun (and why), is running now (another
process holds its claim, :mod:`~recbole_m6rec.benchmarks.claims`), has an interrupted run to continue
(``.partial/``, with the epochs it has finished), waits for the tuning, or is still to run.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from recbole_m6rec.benchmarks import claims, provenance
from recbole_m6rec.benchmarks.borrowed_tuning import NotTunedYet, borrowed_record, borrows
from recbole_m6rec.benchmarks.hyperopt_space import TPE_STARTUP_TRIALS
from recbole_m6rec.benchmarks.job import partial_folder, partial_parent
from recbole_m6rec.benchmarks.kept_values import valid_values_note
from recbole_m6rec.benchmarks.plan import job_spec, jobs
from recbole_m6rec.benchmarks.runner import failed_result, reusable_result, trial_path

__all__ = [
    "tuning_status",
    "job_status",
    "rows_with_work_left",
    "current_run_hashes",
    "row_run_seconds",
    "expected_run_seconds",
    "status_report",
]


def _interrupted(folder: Path, spec: dict | None = None) -> str | None:
    """``"k epochs done, saved DD Mon HH:MM UTC"`` for the interrupted run whose checkpoints are in ``folder``
    (:func:`~recbole_m6rec.benchmarks.job.partial_folder`); with ``spec``, only if it is a run of that job. A run
    with no finished epoch starts over, so it is none. A rerun also checks the code and libraries before it
    continues, which this does not."""
    try:
        stamp = json.loads((folder / "partial.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict):
        return None
    if spec is not None and (stamp.get("config_hash"), stamp.get("seed")) != (spec["config_hash"], spec["seed"]):
        return None
    points = sorted(folder.glob("*-last.pth"), key=lambda path: path.stat().st_mtime)
    if not points:
        return None
    from recbole_m6rec.checkpoint import load_plain_checkpoint

    try:
        epochs = int(load_plain_checkpoint(points[-1], map_location="cpu")["epoch"]) + 1
    except (ValueError, KeyError, TypeError):
        return None
    saved = time.strftime("%d %b %H:%M UTC", time.gmtime(points[-1].stat().st_mtime))
    return f"{epochs} epochs done, saved {saved}"


def tuning_status(plan: dict, name: str, report_dir: Path) -> dict | None:
    """Row ``name``'s tuning: ``{budget, done, best_params, best_valid, metric, running}``, or ``{error}`` when it
    cannot tune (the leaderboard then runs the row untuned); ``None`` when the row is not tuned. A row that takes
    another report's tuning (:func:`_borrowed_status`) has that report's record, or ``{waits}`` or ``{error,
    refused}``.

    A recorded trial counts when its result file is one a ``--resume`` would reuse and holds the metric: trials
    count only while current, ``--keep_finished`` or not, as the tuner checks them. A trial that does not count
    runs again with the same settings; the later ones are still reused, since their settings do not follow from
    scores, except under ``bayes`` from hyperopt's 20th trial on."""
    from recbole_m6rec.benchmarks.report_tables import smaller_is_better
    from recbole_m6rec.benchmarks.tuning import is_finite_number, recorded_trials, row_tuning, trial_budget

    if not plan["rows"][name].get("search") or "tuning" not in plan:
        return None
    if borrows(plan):
        return _borrowed_status(plan, name)
    try:
        tuning, space, metric = row_tuning(plan, name)
    except ValueError as error:
        return {"error": str(error)}
    budget = trial_budget(tuning, space)  # a smaller exhaustive grid is run whole, in fewer trials
    header = {"space": space, "algo": tuning["algo"], "seed": tuning["seed"], "metric": metric}
    trials = recorded_trials(report_dir / "tuning" / f"{name}-tuning.json", header)
    done, best_params, best_valid, failed = 0, None, None, []
    sign = -1.0 if smaller_is_better(metric) else 1.0
    for index, trial in enumerate(trials[:budget]):
        params = trial.get("params") if isinstance(trial, dict) else None
        if not isinstance(params, dict):
            break
        spec = job_spec(plan, name, tuning["seed"], params)
        out = trial_path(report_dir, spec)
        previous = reusable_result(spec, out)[0]
        score = ((previous or {}).get("valid") or {}).get(metric)
        crashed = failed_result(spec, out) if previous is None else None
        if crashed is not None:  # it runs again on --resume, the same settings and seed: likely the same failure
            failed.append(f"trial {index + 1} failed ({_first_line(crashed.get('error'))})")
        if previous is not None and is_finite_number(score):
            done += 1
            if best_valid is None or sign * score > sign * best_valid:
                best_params, best_valid = params, score
        elif tuning["algo"] == "bayes" and index >= TPE_STARTUP_TRIALS:  # TPE's later proposals follow its score
            break
    # the trials running now (a process holds their claims); else the trial to run next is hyperopt's to propose:
    # show the latest interrupted trial, whichever it is
    trials_dir = report_dir / "tuning" / name
    folders = sorted(
        (p for p in partial_parent(trials_dir).glob("trial-*") if p.is_dir()),  # not the claims
        key=lambda p: p.stat().st_mtime,
    )
    now = [_running_cell(partial_folder(out)) for out in _claimed_trials(trials_dir)]
    running = _interrupted(folders[-1]) if folders and not now else None
    return {
        "budget": budget,
        "done": done,
        "best_params": best_params,
        "best_valid": best_valid,
        "metric": metric,
        "running": running,
        "running_now": now,
        "failed": failed,
    }


def _first_line(error) -> str:
    lines = [line.strip() for line in str(error or "no error recorded").strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else "no error recorded"


def _claimed_trials(trials_dir: Path) -> list[Path]:
    """The result paths of ``trials_dir``'s trials that a process is running now."""
    claimed = sorted(partial_parent(trials_dir).glob("trial-*.running"))
    return [trials_dir / f"{path.stem}.json" for path in claimed if claims.held(trials_dir / f"{path.stem}.json")]


def _running_cell(folder: Path, spec: dict | None = None) -> str:
    """``running now`` with the epochs the run has saved so far (none yet while its first epoch runs)."""
    saved = _interrupted(folder, spec)
    return f"running now ({saved})" if saved else "running now (no epoch saved yet)"


def _borrowed_status(plan: dict, name: str) -> dict:
    """A row that takes another report's tuning (``tuning.from``) runs no trial here (budget and done 0): that
    report's record once its tuning has finished, ``{waits}`` while it has not, ``{error, refused}`` when the plan
    disagrees with it (the leaderboard refuses to start), ``{error}`` when it chose nothing (the row runs untuned)."""
    try:
        record = borrowed_record(plan, name)
    except NotTunedYet as waiting:
        return {"budget": 0, "done": 0, "best_params": None, "best_valid": None, "waits": str(waiting)}
    except ValueError as error:
        return {"error": str(error), "refused": True}
    except RuntimeError as error:
        return {"error": str(error)}
    return {**record, "budget": 0, "done": 0, "running": None}


def job_status(plan: dict, name: str, seed: int, report_dir: Path, keep_finished: bool = False, params=None) -> str:
    """One (row, seed): ``done``, ``done, code changed since (kept)``, ``reruns: why``, ``continues: k epochs
    done ...`` or ``to run``; a finished result without validation values says so (the report's paired tests on
    validation leave it out). ``params`` are the row's chosen tuning settings."""
    spec = job_spec(plan, name, seed, params)
    out = report_dir / "results" / f"{name}-seed{seed}.json"
    result, why = reusable_result(spec, out, keep_finished)
    if result is None:  # the winning tuning trial is this very job at the tuning seed, adopted only while current
        result = reusable_result(spec, trial_path(report_dir, spec))[0]
    if result is not None:
        changed = provenance.stale_reasons(result) if keep_finished else []
        return ("done, code changed since (kept)" if changed else "done") + valid_values_note(result)
    if claims.held(out):
        return _running_cell(partial_folder(out), spec)
    interrupted = _interrupted(partial_folder(out), spec)
    if interrupted:
        return f"continues: {interrupted}"
    return f"reruns: {why}" if why else "to run"


def _row_status(plan: dict, name: str, planned: list, report_dir: Path, keep_finished: bool) -> tuple:
    """Row ``name``'s tuning cell, ``{seed: cell}`` and the tuning trials it has left."""
    tuned = tuning_status(plan, name, report_dir)
    trials_left, params = 0, None
    if tuned is None:
        tuning_cell = "–"
    elif tuned.get("refused"):  # the leaderboard stops before it runs anything
        return f"refused: {tuned['error']}", {seed: "refused" for row, seed in planned if row == name}, 0
    elif "error" in tuned:
        tuning_cell, tuned = f"cannot tune ({tuned['error']}): runs untuned", None
    elif "waits" in tuned:
        tuning_cell = tuned["waits"]
    elif "borrowed_from" in tuned:
        tuning_cell = f"from {tuned['borrowed_from']}: valid {tuned['metric']} {tuned['best_valid']:.4f} there"
        params = tuned["best_params"]
    else:
        best = f", best valid {tuned['metric']} {tuned['best_valid']:.4f}" if tuned["best_valid"] is not None else ""
        tuning_cell = f"{tuned['done']} of {tuned['budget']} trials{best}"
        if tuned.get("running_now"):
            tuning_cell += "; " + "; ".join(f"a trial {cell}" for cell in tuned["running_now"])
        elif tuned["running"] and tuned["done"] < tuned["budget"]:
            tuning_cell += f"; an interrupted trial: {tuned['running']}"
        if tuned.get("failed"):
            tuning_cell += "; " + "; ".join(tuned["failed"]) + ": `--resume` runs it again, with the same settings"
        trials_left = tuned["budget"] - tuned["done"]
        params = tuned["best_params"] if trials_left == 0 else None
    cells = {}
    for row, seed in planned:
        if row == name:
            waiting = tuned is not None and params is None
            cells[seed] = "after tuning" if waiting else job_status(plan, name, seed, report_dir, keep_finished, params)
    return tuning_cell, cells, trials_left


def rows_with_work_left(plan: dict, report_dir: Path, keep_finished: bool = False) -> list[str]:
    """The rows of which a ``--resume`` would still run something: a tuning trial or a seed."""
    planned = jobs(plan)
    left = []
    for name in plan["rows"]:
        _, cells, trials_left = _row_status(plan, name, planned, Path(report_dir), keep_finished)
        if trials_left or not all(cell.startswith("done") for cell in cells.values()):
            left.append(name)
    return left


def _read_json_files(paths) -> list[dict]:
    """The JSON objects among ``paths``; a file that cannot be read or parsed is skipped (a status only reads)."""
    documents = []
    for path in paths:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents


def current_run_hashes(plan: dict, name: str, report_dir: Path) -> set[str]:
    """The settings hashes of row ``name``'s runs as the plan stands: the trials of its current tuning record, and
    its seeds (at the chosen settings once its tuning is complete; a row without tuning at the settings it lists).
    Runs of other settings (an earlier search space, bfloat16 where the row now trains in float32) are not among
    them: their times say little about the runs left."""
    from recbole_m6rec.benchmarks.tuning import recorded_trials, row_tuning

    hashes, params = set(), None
    if plan["rows"][name].get("search") and "tuning" in plan:
        tuned = tuning_status(plan, name, Path(report_dir))
        if tuned is None or "error" in tuned or "waits" in tuned:
            return hashes
        if "borrowed_from" not in tuned:  # a row that takes another report's tuning runs no trial here
            tuning, space, metric = row_tuning(plan, name)
            header = {"space": space, "algo": tuning["algo"], "seed": tuning["seed"], "metric": metric}
            for trial in recorded_trials(Path(report_dir) / "tuning" / f"{name}-tuning.json", header):
                if isinstance(trial, dict) and isinstance(trial.get("params"), dict):
                    hashes.add(job_spec(plan, name, tuning["seed"], trial["params"])["config_hash"])
        if tuned["done"] < tuned["budget"]:
            return hashes  # the seeds' settings are not chosen yet
        params = tuned["best_params"]
    for row, seed in jobs(plan):
        if row == name:
            hashes.add(job_spec(plan, name, seed, params)["config_hash"])
    return hashes


def row_run_seconds(
    report_dir: Path, name: str, results: list[dict] | None = None, hashes: set[str] | None = None
) -> list[float]:
    """The times (training with its validation, test, and the job's re-evaluation on validation) of row ``name``'s
    finished runs in ``report_dir``: its tuning trials and its seeds, whatever CPU they ran on, each run once (the
    winning trial is also its seed's result). Only results that record their code count: older ones ran under older
    protocols (epoch caps of 5 or 10), so they would time a shorter run than the plan's. ``results``: the folder's
    ``results/*.json``, if read; ``hashes``: only runs of these settings (:func:`current_run_hashes`)."""
    from recbole_m6rec.benchmarks.report_tables import run_seconds

    report_dir = Path(report_dir)
    if results is None:
        results = _read_json_files(sorted((report_dir / "results").glob("*.json")))
    trials = _read_json_files(sorted((report_dir / "tuning" / name).glob("trial-*.json")))
    seconds, seen = [], set()
    for r in trials + results:
        if r.get("row") != name or r.get("status") != "ok" or not (r.get("provenance") or {}).get("code"):
            continue
        if hashes is not None and r.get("config_hash") not in hashes:
            continue
        run = (r.get("config_hash"), r.get("seed"))
        if run in seen:
            continue
        try:
            seconds.append(run_seconds(r) + float(r.get("valid_values_seconds", 0)))  # the job's extra step too
        except (KeyError, TypeError, ValueError):
            continue
        seen.add(run)
    return seconds


def expected_run_seconds(plan: dict, report_dir: Path, name: str, results: list[dict] | None = None) -> float | None:
    """What one more run of row ``name`` is expected to take: the median time of its finished runs of its current
    settings in ``report_dir`` (:func:`row_run_seconds`, :func:`current_run_hashes`); None when there is none."""
    seconds = row_run_seconds(report_dir, name, results, current_run_hashes(plan, name, report_dir))
    return statistics.median(seconds) if seconds else None


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _time_left_lines(
    report_dir: Path,
    runs_left: dict[str, int],
    hashes: dict[str, set[str]] | None = None,
    models: dict[str, str] | None = None,
) -> list[str]:
    """Per row with runs left, those runs at the median time of its finished runs (of its current settings: the
    row's ``hashes``), and the sum. A row with none finished takes the median of the finished runs of the plan's
    other rows of the same model (``models``: row -> model; finished rows count too), said so: variants of one model
    (another input, another loss) cost about alike."""
    lines, total, borrowed, untimed = [], 0.0, 0.0, []
    results = _read_json_files(sorted((Path(report_dir) / "results").glob("*.json")))
    own = {name: row_run_seconds(report_dir, name, results, (hashes or {}).get(name)) for name in runs_left}
    for name, count in runs_left.items():
        if not count:
            continue
        model = (models or {}).get(name)
        twins = [o for o in runs_left if o != name and own[o] and model and (models or {}).get(o) == model]
        if own[name]:
            each = statistics.median(own[name])
            lines.append(f"- {name}: {count} × {_duration(each)} ≈ {_duration(count * each)} ({len(own[name])} timed)")
        elif twins:
            each = statistics.median([seconds for o in twins for seconds in own[o]])
            borrowed += count * each
            lines.append(
                f"- {name}: {count} × {_duration(each)} ≈ {_duration(count * each)} (none timed: at the median of "
                f"{', '.join(twins)}'s runs, the same model)"
            )
        else:
            untimed.append(f"{name} ({count})")
            continue
        total += count * each
    if lines:
        lines.insert(
            0,
            "Time left, at the median time of each row's finished runs of its current settings (its tuning trials "
            "and seeds as they ran: one job's time, on the CPUs and beside the jobs they had); an interrupted run "
            "counts whole:",
        )
        share = f" ({_duration(borrowed)} of it at a same-model row's time)" if borrowed else ""
        lines.append(f"About {_duration(total)} of one job's time for the rows timed{share}.")
    if untimed:
        lines.append(
            "Not timed yet (no finished run of its current settings that records its code, nor a timed row of the "
            "same model; runs left): " + ", ".join(untimed) + "."
        )
    return ["", *lines] if lines else []


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
    runs_left = {}
    for name in plan["rows"]:
        tuning_cell, cells, row_trials_left = _row_status(plan, name, planned, report_dir, keep_finished)
        row_jobs_left = sum(not cell.startswith("done") for cell in cells.values())
        trials_left += row_trials_left
        jobs_left += row_jobs_left
        # the winning trial is the tuning seed's run, so that seed needs no run of its own after the tuning (unless
        # the trials ran in another report, on its split)
        adopted = cells.get((plan.get("tuning") or {}).get("seed")) == "after tuning" and not borrows(plan)
        runs_left[name] = row_trials_left + row_jobs_left - adopted
        lines.append(f"| {name} | {tuning_cell} | " + " | ".join(cells.get(seed, "–") for seed in seeds) + " |")
    lines += ["", f"Left: {trials_left} tuning trials and {jobs_left} seed runs."]
    # every row's, finished ones too: a row with no timed run is estimated from its model's other rows
    hashes = {name: current_run_hashes(plan, name, report_dir) for name in runs_left}
    models = {name: spec.get("model") for name, spec in plan["rows"].items()}
    lines += _time_left_lines(report_dir, runs_left, hashes, models)
    return "\n".join(lines)
