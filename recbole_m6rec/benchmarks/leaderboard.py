"""Run a list of models on one dataset configuration, several seeds, and write a report.

    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml --resume
    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/demo_ml-100k.yaml --report=runs/demo_ml-100k \\
        --reference=reports/demo_ml-100k

The yaml names the dataset, the seeds, the RecBole settings every row shares (``common``) and the rows: a row is a
name plus a RecBole/plugin model and the settings that differ from ``common`` (listed in the report). A plan with a
``tuning`` block (``{trials, seed, algo}``) first tunes every row that declares a ``search`` space on validation, at
the tuning seed (:mod:`recbole_m6rec.benchmarks.tuning`), then runs the chosen settings on every seed.

Each (row, seed) runs in its own process (:mod:`recbole_m6rec.benchmarks.job`); its result, with its provenance
(:mod:`recbole_m6rec.benchmarks.provenance`), is written as soon as it finishes; a failing row is recorded with its
error and the others go on. A report folder that already holds results is refused unless ``--resume`` (reuse the
finished results that are still current) or ``--fresh`` (delete them first) is given. A finished result is reused
only when its settings hash matches and the code, data and library versions it recorded are unchanged; otherwise
it reruns and the log says why. Rows whose split fingerprints differ are refused: one table, one split.
``--time_limit=2h30m`` starts only the runs expected to finish within that time and writes the report only when
nothing is left (:mod:`~recbole_m6rec.benchmarks.time_limit`). A plan's optional ``method`` (text) is printed under
the command. ``report.md`` keeps everything below :data:`NOTES_MARKER` when it is rewritten; a run cut down with
``--rows`` or ``--seeds`` leaves a report in place that holds runs it left out (its results still land).
``--report_only`` runs nothing and writes an interim report of the finished results, naming the runs left.
``--trials=5-8`` runs only those tuning trials, for a second process beside the plan's command: a job that one
process runs, the other waits for and reuses (:mod:`~recbole_m6rec.benchmarks.claims`).
Extra ``--key=value`` arguments override ``common``.

The code, one job per module: this one is the command line; :mod:`~recbole_m6rec.benchmarks.plan` reads and checks
the plan and builds each job's settings and hash; :mod:`~recbole_m6rec.benchmarks.runner` runs or reuses each
(row, seed), tunes, and prepares the report folder; :mod:`~recbole_m6rec.benchmarks.report` writes the report
(``NOTES_MARKER`` lives there) from :mod:`~recbole_m6rec.benchmarks.report_tables` (per-row numbers and tables),
:mod:`~recbole_m6rec.benchmarks.report_stats` (selection on validation, comparisons on test) and
:mod:`~recbole_m6rec.benchmarks.report_sections` (provenance, convergence, tuning and reference text);
:mod:`~recbole_m6rec.benchmarks.status` answers ``--status``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from recbole_m6rec.benchmarks.borrowed_tuning import borrows
from recbole_m6rec.benchmarks.cold_check import check_cold_plan
from recbole_m6rec.benchmarks.hyperopt_space import out_of_order_problem
from recbole_m6rec.benchmarks.machine import BFLOAT16_FLAGS, bfloat16_is_emulated, cpu_model
from recbole_m6rec.benchmarks.plan import effective_settings, job_spec, jobs, load_plan, parse_seeds, row_settings
from recbole_m6rec.benchmarks.report import runs_a_report_would_lose, write_report
from recbole_m6rec.benchmarks.report_tables import SplitMismatchError, check_one_split
from recbole_m6rec.benchmarks.runner import (
    adopt_tuning_trial,
    failed_result,
    prepare_report_dir,
    run_or_reuse,
    trial_path,
    tune,
)
from recbole_m6rec.benchmarks.status import expected_run_seconds, rows_with_work_left, status_report
from recbole_m6rec.benchmarks.time_limit import NoNewRuns, TimeLimit, TimeLimitReached, parse_duration
from recbole_m6rec.config import parse_cmd_args

__all__ = ["main"]

# --help shows what the command does; the paragraph on where the code lives is for readers of the source
COMMAND_HELP = __doc__.split("\nThe code, one job per module")[0] if __doc__ else None


def emulated_autocast_rows(plan: dict, emulated: bool, cuda: bool) -> list[str]:
    """Rows that would train under ``enable_amp`` (torch's bfloat16 autocast, set or searched) on a CPU where
    autocast emulates bfloat16 (``emulated``): about 70 times slower than float32 there. A row trains on the CPU
    when its ``gpu_id`` is empty or there is no CUDA, as RecBole decides."""
    if not emulated:
        return []
    slow = []
    for name, row in plan["rows"].items():
        settings = effective_settings(row["model"], plan["dataset"], {**plan["common"], **row_settings(row)})
        searched = (row.get("search") or {}).get("enable_amp") or []
        amp = bool(settings.get("enable_amp")) or True in searched[1:]
        on_gpu = cuda and str(settings.get("gpu_id", "0")) != ""
        if amp and not on_gpu:
            slow.append(name)
    return slow


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=COMMAND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", required=True, help="benchmark yaml (dataset, seeds, common, rows)")
    parser.add_argument("--rows", default=None, help="comma-separated subset of the yaml's rows")
    parser.add_argument(
        "--seeds",
        default=None,
        help="a count N (the plan's first N seeds, if it has that many) or comma-separated seeds",
    )
    parser.add_argument("--report", default=None, help="report folder (default: reports/<yaml name>)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="reuse the folder's finished results that are still current (an interrupted run)",
    )
    resume.add_argument("--fresh", action="store_true", help="delete the folder's earlier results first")
    parser.add_argument(
        "--keep_finished",
        action="store_true",
        help="with --resume: reuse every finished result whose settings are unchanged, even where its code, data or "
        "libraries changed since it ran (the report lists each such row and what changed); for a plan explored on "
        "older code, whose rows would otherwise all run again",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="run nothing: print what the report folder holds of the plan and what is left (tuning trials, and "
        "per seed: done, reruns and why, continues an interrupted run, or to run)",
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="run nothing: write an interim report of the folder's finished results that are still current (as "
        "--resume reuses them; with --keep_finished as that does), listing the planned runs not finished yet; a "
        "report that holds finished runs this one would drop is kept",
    )
    parser.add_argument(
        "--trials",
        help="e.g. 5-8 or 5,7: run only these tuning trials of each tuned row (1-based, in the order the tuner proposes "
        "them) and stop: a second process's share beside the plan's command, which reuses their results when it "
        "gets there and waits for a trial the other is running (random or exhaustive algo)",
    )
    parser.add_argument(
        "--no_tuning",
        action="store_true",
        help="ignore the plan's tuning block: every row runs with the settings it lists",
    )
    parser.add_argument(
        "--time_limit",
        default=None,
        help="e.g. 2h30m: start only the runs expected to finish within this time from now (each row's median "
        "finished run); the report is written once nothing is left, and --resume continues",
    )
    parser.add_argument(
        "--reference", default=None, help="a report folder (e.g. the committed one) to show next to this run's numbers"
    )
    args, rest = parser.parse_known_args(argv)
    if args.keep_finished and not (args.resume or args.status or args.report_only):
        parser.error(
            "--keep_finished keeps the folder's finished results: use it with --resume (or --status, --report_only)"
        )
    if args.report_only and (args.status or args.fresh or args.time_limit is not None):
        parser.error("--report_only runs nothing and writes the report: not with --status, --fresh or --time_limit")
    if args.trials and (args.status or args.report_only or args.fresh or args.time_limit is not None or args.no_tuning):
        parser.error(
            "--trials runs tuning trials beside the plan's command, reusing what is there: not with --status, "
            "--report_only, --fresh, --time_limit or --no_tuning"
        )
    limit_seconds = None
    if args.time_limit is not None:
        if args.status:
            parser.error("--time_limit chooses which runs start; --status runs nothing")
        try:
            limit_seconds = parse_duration(args.time_limit)
        except ValueError as error:
            parser.error(str(error))
    overrides = {key: yaml.safe_load(value) for key, value in parse_cmd_args(rest).items()}
    rows = args.rows.split(",") if args.rows else None
    plan = load_plan(args.config_files, overrides, rows, parse_seeds(args.seeds, args.config_files))
    if args.no_tuning:
        plan.pop("tuning", None)
    only = trial_numbers(args.trials, plan) if args.trials else None
    report_dir = Path(args.report or Path("reports") / Path(args.config_files).stem)
    import torch

    slow = emulated_autocast_rows(plan, bfloat16_is_emulated(), torch.cuda.is_available())
    if slow and (args.resume or args.status):  # rows whose every result is reused run nothing here
        left = rows_with_work_left(plan, report_dir, args.keep_finished)
        slow = [row for row in slow if row in left]
    cpu = cpu_model() or "unnamed CPU"
    if args.status:
        print(status_report(plan, report_dir, args.keep_finished))
        if slow:
            print(f"This CPU ({cpu}) would emulate bfloat16: rows {', '.join(slow)} (enable_amp) run on another.")
        return 0
    if slow and not args.report_only:
        raise SystemExit(
            f"rows {', '.join(slow)} train with enable_amp (bfloat16 autocast), but this CPU ({cpu}) has no "
            f"bfloat16 instructions ({', '.join(BFLOAT16_FLAGS)} in /proc/cpuinfo) and torch reports no oneDNN "
            "bfloat16 path: it would emulate them, about 70 times slower than float32. Run these rows on a CPU that "
            "has them, or leave them out with --rows=<the others>."
        )
    if not args.report_only:
        check_cold_plan(plan)  # a leaky cold split is refused before anything runs on it
    prepare_report_dir(report_dir, args.resume or args.report_only or only is not None, args.fresh)
    time_limit = NoNewRuns() if args.report_only else None
    if limit_seconds is not None:
        as_planned = copy.deepcopy(plan)  # tuning merges its chosen settings into the plan's rows
        time_limit = TimeLimit(limit_seconds, lambda row: expected_run_seconds(as_planned, report_dir, row))
        print(f"time limit {args.time_limit}: a run expected to end after it is not started", flush=True)
    if only is not None:
        tune(plan, report_dir, resume=True, only=only)
        return 0  # the seeds and the report are the plan's command's
    tuned = tune(plan, report_dir, resume=True, time_limit=time_limit)
    planned = jobs(plan)
    records, left, reached_limit = [], [], False
    for k, (name, seed) in enumerate(planned, 1):
        if "unfinished" in tuned.get(name, {}):
            if "borrowed_from" in tuned[name]:
                after = "after its settings"
            elif seed == (plan.get("tuning") or {}).get("seed"):  # that seed's run is the winning trial
                after = "its winning trial, once its tuning has finished"
            else:
                after = "after its tuning"
            left.append(f"{name} seed {seed} ({after})")
            continue
        spec = job_spec(plan, name, seed)
        out = report_dir / "results" / f"{name}-seed{seed}.json"
        adopt_tuning_trial(spec, trial_path(report_dir, spec), out, keep_finished=args.keep_finished)
        try:
            record = run_or_reuse(
                spec, out, f"{k}/{len(planned)}", keep_finished=args.keep_finished, time_limit=time_limit
            )
        except TimeLimitReached:
            reached_limit = True
            failed = failed_result(spec, out) if args.report_only else None
            if failed is not None:  # reported as failed, not as a run still to come
                records.append(failed)
            else:
                left.append(f"{name} seed {seed}")
            continue
        records.append(record)
        try:  # now, not after hours of further jobs whose table would be refused
            check_one_split(records)
        except SplitMismatchError as error:
            raise SystemExit(f"{error}; stopped after job {k} of {len(planned)}") from error
    unfinished = [name for name, record in tuned.items() if "unfinished" in record]
    waiting = [name for name in unfinished if "borrowed_from" in tuned[name]]  # for another report's tuning
    if args.report_only:
        if not records:
            raise SystemExit(f"{report_dir}: no finished result of this plan's runs to report")
        left = [f"tuning of {name}" for name in unfinished if name not in waiting] + left
        left = [f"{name}'s settings (from {tuned[name]['borrowed_from']})" for name in waiting] + left
    elif unfinished or left:
        tuning_left = [f"tuning of {name}" for name in unfinished if name not in waiting]
        stopped = reached_limit or tuning_left  # a row's own tuning is unfinished only at the time limit
        why = f"Stopped at the time limit ({args.time_limit})" if stopped else "Not every row could run"
        waits = "".join(f" {name} {tuned[name]['unfinished']}." for name in waiting)
        print(
            f"{why}; no report written, as it would leave rows out. Left for a later --resume: "
            f"{', '.join(tuning_left + left)}.{waits} --report_only writes an interim report of what has finished.",
            flush=True,
        )
        return 0 if all(r.get("status") == "ok" for r in records) else 1
    ok = all(r.get("status") == "ok" for r in records)
    lost = runs_a_report_would_lose(report_dir, records) if (args.rows or args.seeds or args.report_only) else []
    if lost:
        how = "an interim report (--report_only)" if args.report_only else "this run's report (--rows / --seeds)"
        done = "Nothing ran" if args.report_only else f"This run's results are in {report_dir / 'results'}"
        print(
            f"Kept {report_dir / 'report.md'}: {how} would drop {len(lost)} of its finished runs "
            f"({', '.join(lost[:4])}{', ...' if len(lost) > 4 else ''}). {done}; the plan's command without "
            "--rows, --seeds and --report_only writes the whole report (--resume reuses every finished result that "
            "is still current, --keep_finished also those whose code changed since they ran).",
            flush=True,
        )
        return 0 if ok else 1
    command = "python -m recbole_m6rec.benchmarks.leaderboard " + " ".join(argv)
    reference = Path(args.reference) if args.reference else None
    report = write_report(plan, records, report_dir, command, tuned, reference, left if args.report_only else None)
    print(report)
    return 0 if ok else 1


def trial_numbers(value: str, plan: dict) -> list[int]:
    """``--trials``: ``5-8`` or ``5,7`` as 1-based trial numbers within the plan's budget."""
    budget = (plan.get("tuning") or {}).get("trials")
    if not budget or borrows(plan):
        raise SystemExit(
            "--trials runs tuning trials: the plan has no tuning of its own (no `tuning: {trials: N, ...}`)"
        )
    numbers = set()
    try:
        for part in value.split(","):
            low, _, high = part.partition("-")
            numbers.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise SystemExit(f"--trials={value}: give trial numbers like 5-8 or 5,7 (1 to {budget})") from None
    if not numbers or min(numbers) < 1 or max(numbers) > budget:
        raise SystemExit(f"--trials={value}: trial numbers run from 1 to the plan's budget, {budget}")
    problem = out_of_order_problem(plan["tuning"].get("algo"), numbers)
    if problem:
        raise SystemExit(f"--trials={value}: {problem}")
    return sorted(numbers)


if __name__ == "__main__":
    sys.exit(main())
