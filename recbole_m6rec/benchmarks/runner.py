"""Running a leaderboard's jobs: each (row, seed) run in its own process or its finished result reused, the tuning
of rows with a ``search`` space, and the report folder's ``results/`` that holds one result file per job.

Each job runs in a process of its own (:mod:`recbole_m6rec.benchmarks.job`), so its peak memory, logs and failures
are its own; its result is written as soon as it finishes. A finished result is reused only when its settings hash
matches and the code, data and library versions it recorded (:mod:`recbole_m6rec.benchmarks.provenance`) are
unchanged; otherwise it reruns and the log says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks import claims, job, provenance
from recbole_m6rec.benchmarks.borrowed_tuning import NotTunedYet, borrowed_record, borrows
from recbole_m6rec.benchmarks.plan import job_spec
from recbole_m6rec.benchmarks.time_limit import NoNewRuns, TimeLimit, TimeLimitReached

__all__ = [
    "reuse_verdict",
    "reusable_result",
    "run_or_reuse",
    "tune",
    "adopt_tuning_trial",
    "trial_path",
    "prepare_report_dir",
    "load_results",
]


def reuse_verdict(previous: dict, spec: dict, keep_finished: bool = False) -> str | None:
    """None when ``previous`` can stand for a run of ``spec`` now; otherwise why it cannot. ``keep_finished``
    accepts a finished run of the same settings whatever code, data or libraries it ran (the report lists what
    changed since)."""
    if previous.get("status") != "ok":
        return f"the earlier run {previous.get('status', 'did not finish')}"
    if previous.get("config_hash") != spec["config_hash"]:
        return "its settings changed"
    reasons = [] if keep_finished else provenance.stale_reasons(previous)
    return "; ".join(reasons) if reasons else None


def _recorded(out: Path) -> dict:
    """The result file ``out`` (which exists) holds; empty when it cannot be read (a run cut off mid-write)."""
    try:
        return json.loads(out.read_text(encoding="utf-8"))
    except ValueError:
        return {}


def reusable_result(spec: dict, out: Path, keep_finished: bool = False) -> tuple[dict | None, str | None]:
    """``(record, None)`` when ``out`` holds a result that can stand for a run of ``spec`` now; ``(None, why)`` when
    it holds one that cannot; ``(None, None)`` when there is no file."""
    if not out.exists():
        return None, None
    previous = _recorded(out)
    why = reuse_verdict(previous, spec, keep_finished)
    return (previous, None) if why is None else (None, why)


def run_or_reuse(
    spec: dict,
    out: Path,
    index: str,
    resume: bool = True,
    timeout: float | None = None,
    keep_finished: bool = False,
    time_limit: TimeLimit | None = None,
) -> dict:
    """The result of ``spec`` in ``out``: reused when current (and ``resume``), otherwise run in a job process.
    With ``timeout`` (seconds), a job still running then is stopped and recorded with status ``cut`` (its time
    budget ran out; not a crash) and its checkpoints are deleted, so a budget is never stretched over two runs.
    A job killed otherwise (the machine went away) leaves them for the next run of ``out`` to continue from
    (:mod:`recbole_m6rec.benchmarks.job`). With ``time_limit``, a run that would end after it is not started:
    :class:`~recbole_m6rec.benchmarks.time_limit.TimeLimitReached` is raised and nothing is written."""
    label = f"[{index}] {spec['row']} seed {spec['seed']}"
    if resume:
        previous, why = reusable_result(spec, out, keep_finished)
        if previous is not None:
            changed = provenance.stale_reasons(previous) if keep_finished else []
            kept = f" (kept although {'; '.join(changed)})" if changed else ""
            print(f"{label}: reusing finished result {out}{kept}", flush=True)
            return previous
        if why is not None:
            print(f"{label}: not reusing {out}: {why}", flush=True)
    if time_limit is not None:
        try:
            time_limit.check(spec["row"])
        except TimeLimitReached as reached:
            print(f"{label}: not started: {reached}", flush=True)
            raise
    held, waited_since = claims.claim(out), None
    while held is None:  # another process runs this very job: wait for it, then take its result
        if waited_since is None:
            print(f"{label}: another process runs it ({claims.claim_path(out)}); waiting for it", flush=True)
            waited_since = time.time()
        time.sleep(claims.POLL_SECONDS)
        held = claims.claim(out)
    try:
        # what the other process wrote (or one that ended just before this claim): taken, not run again
        previous = reusable_result(spec, out, keep_finished)[0] if resume else None
        if previous is None and waited_since is not None and out.exists() and out.stat().st_mtime >= waited_since:
            previous = failed_result(spec, out)  # its run failed: so would this one
        if previous is not None:
            print(f"{label}: taking the result another process wrote, {out}", flush=True)
            return previous
        if waited_since is not None and time_limit is not None:
            time_limit.check(spec["row"])  # the wait took time
        return _run_job(spec, out, label, timeout, held)
    finally:
        claims.release(held)


def _run_job(spec: dict, out: Path, label: str, timeout: float | None, claim: int = -1) -> dict:
    """Run ``spec`` in a job process and return the result it wrote in ``out`` (or a failed / cut record); the job
    process shares the ``claim`` (:mod:`~.claims`), so it holds while either lives."""
    print(f"{label} ({spec['model']}): running ...", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
        spec_path = handle.name
    started = time.perf_counter()
    returncode = None
    try:
        with tempfile.TemporaryDirectory(prefix="m6rec-job-") as scratch:
            returncode = subprocess.run(
                [sys.executable, "-m", "recbole_m6rec.benchmarks.job", spec_path, str(out)],
                env={**os.environ, "TMPDIR": scratch},
                timeout=timeout,
                pass_fds=(claim,) if claim >= 0 else (),
            ).returncode
    except subprocess.TimeoutExpired:  # subprocess.run has killed the job
        shutil.rmtree(job.partial_folder(out), ignore_errors=True)
    finally:
        os.unlink(spec_path)
    record = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    if record.get("config_hash") != spec["config_hash"]:  # the job died before writing (killed, out of memory)
        record = {k: spec[k] for k in ("row", "model", "dataset", "seed", "config_hash")}
        if returncode is None:
            record.update(
                status="cut",
                budget_seconds=round(timeout, 1),
                error=f"stopped by its time budget after {timeout:.0f} s, before it finished",
            )
        else:
            record.update(status="failed", error=f"job process exited with code {returncode} without a result")
        atomic_write_text(out, json.dumps(record, indent=1))
    status = record["status"] if record["status"] != "ok" else f"ok, test {json.dumps(record.get('test'))}"
    print(f"{label}: {status} ({time.perf_counter() - started:.0f} s)", flush=True)
    return record


# --- tuning ---------------------------------------------------------------------------------------------------------
def tune(
    plan: dict, report_dir: Path, resume: bool, time_limit: TimeLimit | None = None, only: list[int] | None = None
) -> dict[str, dict]:
    """Tune every row with a ``search`` space (when the plan has a ``tuning`` block) and merge the chosen settings
    into the plan's rows; with ``tuning.from``, take them from that report's tuning instead
    (:mod:`~recbole_m6rec.benchmarks.borrowed_tuning`). Returns ``{row: tuning record}``; rows that could not be
    tuned get ``{"error": ...}``, rows whose next trial would not fit ``time_limit`` (or whose borrowed tuning has
    not finished) ``{"unfinished": why}`` (their seeds wait). ``only`` (1-based trial numbers) runs just those trials
    of each row and merges nothing: a second process's share of the tuning (:func:`~.tuning.tune_row`)."""
    searched = [name for name, row in plan["rows"].items() if row.get("search")]
    if not searched:
        return {}
    if "tuning" not in plan:
        print(
            f"rows {', '.join(searched)} declare a search space, but the plan has no `tuning` block: they run "
            "untuned, with the settings they list",
            flush=True,
        )
        return {}
    if borrows(plan):
        return _borrow(plan, searched)
    try:
        from recbole_m6rec.benchmarks.tuning import tune_row
    except ImportError as error:
        print(f"tuning skipped ({error}): rows {', '.join(searched)} run untuned", flush=True)
        return {name: {"error": f"tuning unavailable: {error}"} for name in searched}
    trials_dir = report_dir / "tuning"
    tuned = {}
    for name in searched:
        seed = plan["tuning"]["seed"]
        count = {"n": 0}

        def trial(overrides: dict, name=name, seed=seed) -> tuple[dict, Path]:
            spec = job_spec(plan, name, seed, overrides)
            return spec, trial_path(report_dir, spec)

        def run_trial(overrides: dict, name=name, count=count, trial=trial) -> dict:
            count["n"] += 1
            spec, out = trial(overrides)
            number = count["n"] if only is None else sorted(only)[count["n"] - 1]
            label = f"tuning {name} {number}/{plan['tuning'].get('trials')}"
            record = run_or_reuse(spec, out, label, resume, time_limit=time_limit)
            return {**record, "best_valid_result": record.get("valid") or {}, "overrides": overrides}

        def still_current(overrides: dict, trial=trial, count=count) -> dict | None:
            """A trial in the tuning record counts only while its result file's provenance is current; the file's
            record, whose numbers are the trial's."""
            current = reusable_result(*trial(overrides))[0] if resume else None
            count["n"] += current is not None  # a reused trial takes its place in the count: a run's label is its index
            return current

        print(
            f"tuning {name} on valid {plan['common'].get('valid_metric')}, seed {seed}: "
            f"{plan['tuning'].get('trials')} trials",
            flush=True,
        )
        try:
            record = tune_row(
                plan,
                name,
                run_trial,
                trials_dir,
                still_current,
                keep_failed=isinstance(time_limit, NoNewRuns),
                only=None if only is None else set(only),
            )
        except TimeLimitReached as reached:
            print(f"tuning {name} stops here ({reached}): its seeds wait for its chosen settings", flush=True)
            so_far = getattr(reached, "tuning_so_far", {})
            tuned[name] = {**so_far, "unfinished": str(reached), "budget": plan["tuning"].get("trials")}
            continue
        except (RuntimeError, ValueError) as error:
            print(f"tuning {name} failed ({error}): it runs untuned", flush=True)
            tuned[name] = {"error": str(error)}
            continue
        record["other_files"] = other_trial_files(report_dir, name, [trial(t["params"])[1] for t in record["trials"]])
        tuned[name] = record
        if only is not None:
            print(f"tuning {name}: ran trials {', '.join(map(str, only))} (the tuning in order takes them)", flush=True)
            continue
        plan["rows"][name] = {**plan["rows"][name], **record["best_params"]}
        print(f"tuning {name}: chose {record['best_params']} (valid {record.get('best_valid')})", flush=True)
    return tuned


def _borrow(plan: dict, searched: list[str]) -> dict[str, dict]:
    """Tuning records of the rows ``searched``, taken from the report that ``tuning.from`` names, merged into the
    plan's rows; a row whose source tuning has not finished gets ``{"unfinished": why}`` (its seeds wait), one whose
    source tuning chose nothing ``{"error": why}`` (it runs untuned). A plan that disagrees with the source (another
    space, seed, algo, metric or budget) stops here, before anything runs."""
    tuned = {}
    for name in searched:
        try:
            record = borrowed_record(plan, name)
        except NotTunedYet as waiting:
            print(f"tuning {name} {waiting}; its seeds wait for the chosen settings", flush=True)
            tuned[name] = {"unfinished": str(waiting), "borrowed_from": plan["tuning"]["from"]}
            continue
        except ValueError as error:
            raise SystemExit(f"tuning.from: {error}") from error
        except RuntimeError as error:
            print(f"tuning {name} failed ({error}): it runs untuned", flush=True)
            tuned[name] = {"error": str(error), "borrowed_from": plan["tuning"]["from"]}
            continue
        plan["rows"][name] = {**plan["rows"][name], **record["best_params"]}
        tuned[name] = record
        print(f"tuning {name}: takes {record['best_params']} from {record['borrowed_from']}", flush=True)
    return tuned


def failed_result(spec: dict, out: Path) -> dict | None:
    """The failed run of ``spec``'s very settings recorded in ``out``, if that is what ``out`` holds."""
    record = _recorded(out) if out.exists() else {}
    if record.get("status", "ok") == "ok" or record.get("config_hash") != spec["config_hash"]:
        return None
    return record


def other_trial_files(report_dir: Path, row: str, used: list[Path]) -> list[str]:
    """The result files in ``row``'s tuning folder that none of its trials uses (runs of other settings or code,
    an earlier campaign's): kept, never counted, and named by the report so no reader takes them for trials."""
    folder = Path(report_dir) / "tuning" / row
    kept = {path.name for path in used}
    return sorted(path.name for path in folder.glob("trial-*.json") if path.name not in kept)


def trial_path(report_dir: Path, spec: dict) -> Path:
    """Where the tuning trial that runs ``spec`` keeps its result."""
    return Path(report_dir) / "tuning" / spec["row"] / f"trial-{spec['config_hash']}.json"


def adopt_tuning_trial(spec: dict, trial: Path, out: Path, keep_finished: bool = False) -> None:
    """The winning trial ran this very job (same settings at the tuning seed): copy it instead of rerunning it.
    A result already in ``out`` is kept only while it can stand for this job; one from other settings or older code
    (an earlier campaign's) is replaced, not rerun."""
    if not trial.is_file() or reusable_result(spec, out, keep_finished)[0] is not None:
        return
    record = json.loads(trial.read_text(encoding="utf-8"))
    if reuse_verdict(record, spec) is None:
        atomic_write_text(out, json.dumps(record, indent=1, default=str))


# --- the report folder ----------------------------------------------------------------------------------------------
def prepare_report_dir(report_dir: Path, resume: bool, fresh: bool) -> None:
    """Refuse a folder with earlier results unless told to resume from them or to delete them."""
    earlier = [p for p in (report_dir / "results", report_dir / "tuning") if p.is_dir() and any(p.iterdir())]
    if earlier and fresh:
        for path in earlier:
            shutil.rmtree(path)
        print(f"{report_dir}: deleted the earlier results (--fresh)", flush=True)
    elif earlier and not resume:
        raise SystemExit(
            f"'{report_dir}' already holds results ({', '.join(str(p) for p in earlier)}). Pass "
            "--resume to reuse the finished ones that are still current (same settings, code, data "
            "and libraries), --fresh to delete them and run everything, or --report=<another folder>."
        )
    (report_dir / "results").mkdir(parents=True, exist_ok=True)


def load_results(report_dir: Path) -> list[dict]:
    """Every result file in ``<report_dir>/results``, in file-name order."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((Path(report_dir) / "results").glob("*.json"))]
