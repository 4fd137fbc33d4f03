"""Settings chosen by another report's tuning, for a plan whose ``tuning`` block names that report with ``from``.

    tuning: {from: reports/ml-100k, trials: 8, seed: 2020, algo: random}
    rows:
      SASRec: {model: SASRec, search: {...}}                      # the same space as that report's SASRec row
      M6Rec-text: {model: M6Rec, tuned_as: M6Rec, search: {...}}  # part of that report's M6Rec space

Such a plan runs no tuning trial of its own. Each row with a ``search`` space takes the settings chosen for the row
of the same name (or the one its ``tuned_as`` names) in ``<from>/tuning/<row>-tuning.json``, once that tuning has run
the budget this plan states, at its seed and algo, selected on this plan's ``valid_metric``, over a space that holds
this row's keys with the same ranges (the row takes the chosen values of its own keys only). What differs between
the two plans (a split with cold items, a fixed setting) is this plan's to state; every row of it is tuned the same
way, so the budget stays equal. A plan that names a report whose tuning does not match is refused before anything
runs; a row whose source tuning has not finished waits, as a row whose own tuning has not finished does. The
source record is taken as that report's last run wrote it: when its tuning reruns trials (its code changed) and
chooses other settings, this plan's rows run again with them (their settings hash changes).
"""

from __future__ import annotations

import json
from pathlib import Path

from recbole_m6rec.benchmarks.tuning import is_finite_number, row_tuning, trial_budget

__all__ = ["NotTunedYet", "borrowed_record", "borrows", "source_row"]


class NotTunedYet(Exception):
    """The source report's tuning of the row has not finished (or not started): the row's seeds wait."""


def borrows(plan: dict) -> bool:
    """Whether the plan's rows take their settings from another report's tuning."""
    return isinstance(plan.get("tuning"), dict) and "from" in plan["tuning"]


def source_row(plan: dict, row: str) -> str:
    """The row of the source report whose tuning ``row`` takes: its ``tuned_as``, else its own name."""
    return str(plan["rows"][row].get("tuned_as") or row)


def borrowed_record(plan: dict, row: str) -> dict:
    """Row ``row``'s tuning record, taken from the source report: ``row, space, metric, algo, seed, trials`` (none
    run here), ``best_params`` (the row's keys), ``best_valid`` (the source's, on its split), ``borrowed_from``,
    ``source_row``, ``source_trials`` and ``budget``. ``ValueError`` when the plan and the source disagree (a
    different seed, algo, metric, range or budget); :class:`NotTunedYet` while the source's tuning has not finished;
    ``RuntimeError`` when it finished without a successful trial (the row then runs untuned, as after a failed tuning
    of its own)."""
    tuning, space, metric = row_tuning(plan, row)
    folder = tuning["from"]
    if not isinstance(folder, str) or not folder:
        raise ValueError(f"tuning.from must be a report folder, e.g. reports/ml-100k (got {folder!r})")
    if not Path(folder).is_dir():
        raise ValueError(
            f"tuning.from: no report folder '{folder}' (looked in {Path(folder).resolve()}); run that plan first, "
            "or name the folder its --report wrote"
        )
    source = source_row(plan, row)
    path = Path(folder) / "tuning" / f"{source}-tuning.json"
    wait = f"waits for {path}"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:  # not started there yet, or a misspelt row: name what is there
        held = sorted(p.name[: -len("-tuning.json")] for p in path.parent.glob("*-tuning.json"))
        there = f" (it holds the tuning of {', '.join(held)})" if held else ""
        raise NotTunedYet(f"{wait}: {source} has not been tuned there yet{there}") from None
    except (OSError, ValueError) as error:
        raise NotTunedYet(f"{wait}: it cannot be read ({error})") from None
    if not (isinstance(recorded, dict) and isinstance(recorded.get("space"), dict)):
        raise NotTunedYet(f"{wait}: it is no tuning record (no `space` mapping)")
    for key, mine in (("seed", tuning["seed"]), ("algo", tuning["algo"]), ("metric", metric)):
        if recorded.get(key) != mine:
            raise ValueError(
                f"row '{row}': {path} was tuned with {key} {recorded.get(key)!r}, this plan states {mine!r}; "
                f"state what that tuning ran, or tune here (drop tuning.from)"
            )
    theirs = recorded["space"]
    differ = {key: (spec, theirs.get(key)) for key, spec in space.items() if theirs.get(key) != spec}
    if differ:
        shown = "; ".join(f"'{key}': here {mine}, there {other}" for key, (mine, other) in differ.items())
        raise ValueError(
            f"row '{row}': its search space is not the one {path} searched ({shown}); give it the same ranges, "
            f"or only keys that tuning searched (valid keys: {', '.join(theirs)})"
        )
    budget = trial_budget(tuning, theirs)  # the trials that tuning ran over its whole space
    trials = [t for t in recorded.get("trials") or [] if isinstance(t, dict) and t.get("status") in ("ok", "failed")]
    if len(trials) > budget:
        raise ValueError(
            f"row '{row}': {path} ran {len(trials)} trials, this plan states {budget}; state what that tuning ran"
        )
    if len(trials) < budget:
        raise NotTunedYet(f"{wait}: {len(trials)} of {budget} trials of {source} there so far")
    best = recorded.get("best_params")
    if not (isinstance(best, dict) and set(space) <= set(best) and is_finite_number(recorded.get("best_valid"))):
        raise RuntimeError(f"{path}: {source}'s tuning finished without a successful trial to take settings from")
    return {
        "row": row,
        "space": space,
        "metric": metric,
        "algo": tuning["algo"],
        "seed": tuning["seed"],
        "trials": [],
        "best_params": {key: best[key] for key in space},
        "best_valid": recorded.get("best_valid"),
        "borrowed_from": str(path),
        "source_row": source,
        "source_trials": len(trials),
        "budget": budget,
    }
