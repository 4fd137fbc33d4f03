"""Equal-budget hyper-parameter tuning of one leaderboard row with RecBole's own tuner.

A plan gives every row the same budget, and each tuned row its search space::

    tuning: {trials: 8, seed: 2020, algo: random}        # algo: random, bayes (TPE) or exhaustive
    rows:
      SASRec: {model: SASRec, search: {learning_rate: [loguniform, 0.0001, 0.01], dropout_prob: [choice, 0.1, 0.5]}}

Kinds: ``[choice, v1, v2, ...]``, ``[uniform, low, high]``, ``[loguniform, low, high]`` (bounds are the values
themselves, not their logs) and ``[quniform, low, high, q]`` (low and high multiples of q). :func:`tune_row` runs the
trials through :class:`recbole.trainer.HyperTuning` (hyperopt), selects on the plan's ``common.valid_metric`` on
validation (bigger is better unless RecBole lists the metric as smaller-is-better, like ``logloss`` or ``rmse``) and
never looks at test results. ``exhaustive`` runs the points of an all-``choice`` grid once each in a seeded order,
at most ``trials`` of them (a smaller grid is run whole, in fewer trials).

``search`` is not a RecBole setting: the caller drops it from the row's settings and adds a trial's ``params`` instead
(a key may not be both fixed in the row and searched). The same plan and seed propose the same parameters (hyperopt's ``HYPEROPT_FMIN_SEED``), and the tuning record
``<trials_dir>/<row>-tuning.json`` is rewritten atomically after every trial: a rerun after an interruption takes
the finished trials from it instead of running them again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recbole_m6rec.benchmarks.hyperopt_space import (
    grid_suggest,
    hyperopt_seed,
    hyperopt_space,
    is_finite_number,
    out_of_order_problem,
    plain_value,
)
from recbole_m6rec.benchmarks.time_limit import TimeLimitReached
from recbole_m6rec.cache import atomic_write_text

__all__ = [
    "ALGOS",
    "KINDS",
    "is_finite_number",
    "recorded_trials",
    "row_tuning",
    "trial_budget",
    "tune_row",
    "validate_search",
    "validate_tuning",
]

ALGOS = ("random", "bayes", "exhaustive")
KINDS = {
    "choice": "[choice, v1, v2, ...]",
    "uniform": "[uniform, low, high]",
    "loguniform": "[loguniform, low, high] with 0 < low < high",
    "quniform": "[quniform, low, high, q]",
}
TUNING_KEYS = {
    "trials": "a positive int",
    "seed": "an int",
    "algo": f"one of {', '.join(ALGOS)}",
    "from": "a report folder whose tuning chose the settings (recbole_m6rec.benchmarks.borrowed_tuning)",
}


def validate_tuning(plan: dict) -> dict:
    """The plan's ``tuning`` block, checked, with ``algo`` defaulting to ``random``."""
    tuning = plan.get("tuning")
    if not isinstance(tuning, dict):
        raise ValueError(f"the plan has no `tuning: {{trials: N, seed: S, algo: random}}` block (got {tuning!r})")
    unknown = sorted(set(tuning) - set(TUNING_KEYS))
    if unknown:
        raise ValueError(f"tuning: unknown keys {unknown}; valid keys: {', '.join(TUNING_KEYS)}")
    tuning = {"algo": "random", **tuning}
    trials, seed, algo = tuning.get("trials"), tuning.get("seed"), tuning["algo"]
    if not (isinstance(trials, int) and not isinstance(trials, bool) and trials > 0):
        raise ValueError(f"tuning.trials must be {TUNING_KEYS['trials']} (got {trials!r})")
    if not (isinstance(seed, int) and not isinstance(seed, bool)):
        raise ValueError(f"tuning.seed must be {TUNING_KEYS['seed']} (got {seed!r})")
    if algo not in ALGOS:
        raise ValueError(f"tuning.algo must be {TUNING_KEYS['algo']} (got {algo!r})")
    return tuning


def validate_search(row: str, search: Any, algo: str = "random") -> dict[str, list]:
    """A row's ``search`` block, checked: ``{key: [kind, ...]}`` with plain lists, as written to the tuning record."""
    if not isinstance(search, dict) or not search:
        raise ValueError(f"row '{row}': `search` must be a non-empty mapping of key: [kind, ...] (got {search!r})")
    space = {}
    for key, spec in search.items():
        where = f"row '{row}', search key '{key}'"
        if not isinstance(spec, (list, tuple)) or not spec or not isinstance(spec[0], str) or spec[0] not in KINDS:
            raise ValueError(f"{where}: got {spec!r}; valid: {'; '.join(KINDS.values())}")
        kind, args = spec[0], list(spec[1:])
        if kind == "choice":
            if not args:
                raise ValueError(f"{where}: `choice` needs at least one value (got {spec!r})")
            try:  # plain data only, so the tuning record can store it
                json.dumps(args, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"{where}: `choice` values must be numbers, strings, booleans or lists of them "
                    f"(got {spec!r}: {error})"
                ) from None
            if len({json.dumps(a, sort_keys=True) for a in args}) < len(args):
                raise ValueError(f"{where}: `choice` values must differ (got {spec!r})")
        else:
            n = 3 if kind == "quniform" else 2
            if len(args) != n or not all(is_finite_number(a) for a in args):
                bad = [a for a in args if not is_finite_number(a)]
                hint = (
                    f" ({bad[0]!r} is a {type(bad[0]).__name__}; write 1e-4 as 0.0001 or 1.0e-4 in yaml)" if bad else ""
                )
                raise ValueError(f"{where}: got {spec!r}; valid: {KINDS[kind]}, numbers{hint}")
            low, high = args[0], args[1]
            if not low < high:
                raise ValueError(f"{where}: low must be below high (got {spec!r}); valid: {KINDS[kind]}")
            if kind == "loguniform" and low <= 0:
                raise ValueError(f"{where}: loguniform bounds must be positive (got {spec!r}); valid: {KINDS[kind]}")
            if kind == "quniform":
                q = args[2]
                if q <= 0 or any(abs(b / q - round(b / q)) > 1e-9 for b in (low, high)):
                    raise ValueError(
                        f"{where}: q must be positive and low, high multiples of it (got {spec!r}); "
                        f"valid: {KINDS[kind]}"
                    )
        space[str(key)] = [kind, *args]
    if algo == "exhaustive":
        not_grid = [k for k, spec in space.items() if spec[0] != "choice"]
        if not_grid:
            raise ValueError(
                f"row '{row}': algo 'exhaustive' needs `choice` for every key (not for {not_grid}); "
                f"use algo random or bayes for ranges"
            )
    return space


def _as_float(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def recorded_trials(path: Path, header: dict) -> list[dict]:
    """The trials in the tuning record ``path`` if it was written for the same space, algo, seed and metric as
    ``header``; [] when there is none."""
    if not path.exists():
        return []
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(previous, dict) or any(previous.get(k) != header[k] for k in ("space", "algo", "seed", "metric")):
        return []
    return list(previous.get("trials") or [])


def _same_params(recorded: dict | None, proposed: dict) -> bool:
    """The recorded trial's settings are the proposed ones. Floats count as equal to 1e-9 relative: hyperopt draws a
    log-uniform value through ``exp``, whose last bit differs between CPUs and numpy builds, and a campaign resumed on
    another machine must still find its finished trials."""
    if not isinstance(recorded, dict) or recorded.keys() != proposed.keys():
        return False
    for key, value in proposed.items():
        old = recorded[key]
        if isinstance(value, float) and isinstance(old, (int, float)) and not isinstance(old, bool):
            if not math.isclose(old, value, rel_tol=1e-9, abs_tol=0.0):
                return False
        elif old != value:
            return False
    return True


def trial_budget(tuning: dict, space: dict[str, list]) -> int:
    """The trials a finished tuning of ``space`` runs: the budget, or a smaller ``exhaustive`` grid whole."""
    if tuning["algo"] == "exhaustive":
        return min(tuning["trials"], math.prod(len(spec) - 1 for spec in space.values()))
    return tuning["trials"]


def row_tuning(plan: dict, row: str) -> tuple[dict, dict[str, list], str]:
    """``(tuning block, search space, selection metric)`` of ``row``, checked; ``ValueError`` says what is wrong."""
    if row not in (plan.get("rows") or {}):
        raise ValueError(f"row '{row}' is not in the plan; rows: {', '.join(plan.get('rows') or {})}")
    tuning = validate_tuning(plan)
    if "search" not in (plan["rows"][row] or {}):
        raise ValueError(
            f"row '{row}' has no `search` space to tune; add e.g. "
            f"`search: {{learning_rate: [loguniform, 0.0001, 0.01]}}` to it, or do not tune it"
        )
    space = validate_search(row, plan["rows"][row]["search"], tuning["algo"])
    fixed = sorted(set(space) & set(plan["rows"][row]))
    if fixed:
        raise ValueError(f"row '{row}' sets {fixed} both as fixed values and in `search`; keep one of them")
    metric = str((plan.get("common") or {}).get("valid_metric", "")).lower()
    if not metric:
        raise ValueError("the plan's `common.valid_metric` (the tuning's selection metric) is not set")
    return tuning, space, metric


def tune_row(
    plan: dict,
    row: str,
    run_trial: Callable[[dict], dict],
    trials_dir: Path,
    still_current: Callable[[dict], dict | bool | None] | None = None,
    keep_failed: bool = False,
    only: set[int] | None = None,
) -> dict:
    """Tune ``row``'s ``search`` space with ``plan['tuning']['trials']`` trials; each calls ``run_trial(params)``.

    A trial recorded by an interrupted earlier tuning is taken from the record instead of run again when its
    settings match and ``still_current(params)`` says the run it came from is still what a rerun would do (the
    leaderboard checks the trial's code, data and library provenance); without ``still_current`` it always is. When
    ``still_current`` returns that run's result record (not just True), its validation scores and epochs are the
    trial's, not the tuning record's: the record may hold another run of the same settings (one of older code,
    rerun since by a second process, which does not write the record). A recorded failed trial runs again, unless
    ``keep_failed`` (an interim report, which runs nothing, counts it).

    ``run_trial`` gets the proposed settings (``{key: value}``) and returns the run's result record: ``status``
    (``"ok"`` or ``"failed"``), ``best_valid_result`` (lower-case metric names) and ``epochs_run``. A failed trial,
    or one with a non-finite validation score, counts towards the budget and never wins. Returns (and keeps in
    ``<trials_dir>/<row>-tuning.json``) ``row, space, metric, algo, seed, trials, best_params, best_valid`` with
    ``trials = [{index, params, status, valid, epochs_run}]``; raises ``RuntimeError`` when no trial succeeded.

    ``only`` (1-based trial numbers) runs just those trials, for a second process beside the tuning that runs in
    order: the others are proposed but neither run nor recorded, and the record file is left alone (the tuning in
    order writes it, reusing those trials' result files). Proposals must not depend on scores for that: ``random``
    and ``exhaustive``, or ``bayes`` within hyperopt's first ``TPE_STARTUP_TRIALS`` (random) trials.
    """
    from recbole.trainer import HyperTuning

    from recbole_m6rec.benchmarks.report_tables import smaller_is_better

    tuning, space, metric = row_tuning(plan, row)
    bigger = not smaller_is_better(metric)
    problem = out_of_order_problem(tuning["algo"], only) if only is not None else None
    if problem:
        raise ValueError(f"row '{row}': trials {sorted(only)}: {problem}")

    path = Path(trials_dir) / f"{row}-tuning.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "row": row,
        "space": space,
        "metric": metric,
        "algo": tuning["algo"],
        "seed": tuning["seed"],
        "trials": [],
        "best_params": None,
        "best_valid": None,
    }
    previous = recorded_trials(path, record)

    proposed = {"n": 0}

    def objective(params: dict, _fixed_config_files=None) -> dict:
        index = len(record["trials"]) if only is None else proposed["n"]
        proposed["n"] += 1
        params = {key: plain_value(space[key], params[key]) for key in space}
        if only is not None and index + 1 not in only:  # another process's trial: proposed, not run
            worst = -math.inf if bigger else math.inf
            return {
                "model": row,
                "best_valid_score": worst,
                "valid_score_bigger": bigger,
                "best_valid_result": {},
                "test_result": None,
            }
        old = previous[index] if index < len(previous) else None
        if old and _same_params(old.get("params"), params):
            params = old["params"]  # the settings that trial really ran with, bit for bit
        succeeded = old and old.get("status") == "ok" and metric in (old.get("valid") or {})
        failed = old and old.get("status") == "failed"
        current = (
            (still_current is None or still_current(dict(params)))
            if old and old.get("params") == params and succeeded
            else None
        )
        if isinstance(current, dict):  # the current run's own numbers
            result = current
        elif current or (old and old.get("params") == params and failed and keep_failed):
            result = None
            trial = old
        else:
            result = run_trial(dict(params))
        if result is not None:
            valid = result.get("best_valid_result", result.get("valid")) or {}  # job records call it `valid`
            valid = {str(k).lower(): v for k, v in valid.items()}
            ok = result.get("status") == "ok"
            if ok and metric not in valid:
                raise ValueError(
                    f"row '{row}': trial {index + 1} returned no '{metric}' in best_valid_result "
                    f"(has: {', '.join(valid) or 'nothing'})"
                )
            valid = {k: _as_float(v) for k, v in valid.items()}
            if ok and valid[metric] is None:
                ok = False  # a NaN/inf score is a failed run, not a candidate
            trial = {
                "index": index,
                "params": params,
                "status": "ok" if ok else "failed",
                "valid": {k: v for k, v in valid.items() if v is not None},
                "epochs_run": result.get("epochs_run"),
            }
            # for the report's trial table: the best epoch, and where an interrupted run continued (its recorded
            # time covers the continued epochs only)
            trial.update(
                {key: result[key] for key in ("best_epoch", "resumed_from_epoch") if result.get(key) is not None}
            )
        record["trials"].append(trial)
        score = trial["valid"][metric] if trial["status"] == "ok" else None
        best = record["best_valid"]
        if score is not None and (best is None or (score > best if bigger else score < best)):
            record["best_params"], record["best_valid"] = params, score
        if only is None:
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        if score is None:  # never selected: the worst possible score for HyperTuning and hyperopt
            score = -math.inf if bigger else math.inf
        return {
            "model": row,
            "best_valid_score": score,
            "valid_score_bigger": bigger,
            "best_valid_result": trial["valid"],
            "test_result": None,
        }

    n_trials = tuning["trials"]
    algo = grid_suggest(space, tuning["seed"]) if tuning["algo"] == "exhaustive" else tuning["algo"]
    # early_stop above the budget: every row gets all its trials, however flat its scores
    tuner = HyperTuning(objective, space=hyperopt_space(space), algo=algo, max_evals=n_trials, early_stop=n_trials + 1)
    with hyperopt_seed(tuning["seed"]):
        try:
            tuner.run()
        except TimeLimitReached as reached:
            reached.tuning_so_far = record  # the current trials before the one not started, for an interim report
            raise
    if record["best_params"] is None and only is None:
        raise RuntimeError(f"row '{row}': none of its {len(record['trials'])} tuning trials succeeded " f"(see {path})")
    return record
