"""Which rows a report compares, chosen on validation and never on test: the primary family's best row (on the seeds
every trained row of the family ran) and the best baseline (on the seeds every trained baseline ran), and where that
choice is within seed noise.

The plan's ``primary`` row names a family (its name up to the first ``-``); the family's best row on validation is
compared with every row outside it (the baselines).
"""

from __future__ import annotations

import statistics

from recbole_m6rec.benchmarks.report_tables import smaller_is_better, trains_nothing

__all__ = ["family_of", "common_seeds", "choice_groups", "choose_on_valid", "best_baseline", "near_tie_lines"]


# --- selection on validation --------------------------------------------------------------------------------------
def family_of(primary: str) -> str:
    """Rows named like the primary up to its first '-' (``M6Rec``, ``M6Rec-prior``, ... for ``M6Rec-text``) are
    its variants, not baselines."""
    return primary.split("-")[0]


def _trains(entry: dict) -> bool:
    """A row whose model is run as it is gives the same numbers on every seed (a row trained for 0 epochs does not:
    its random start moves with the seed)."""
    return not trains_nothing(str(entry.get("model") or ""))


def common_seeds(entries: list[dict]) -> list | None:
    """The seeds every one of ``entries`` has a validation score for, when they did not all run the same seeds
    (``None`` when they did, or share none): rows are then compared on those seeds only, so a row's mean over more
    seeds never meets a single seed's luckier or unluckier draw. A row that trains nothing gives the same numbers on
    every seed, so running it on fewer does not narrow them."""
    trained = [e for e in entries if _trains(e)] or entries
    seed_sets = [set(e.get("valid_by_seed") or {}) for e in trained]
    if not seed_sets or all(seeds == seed_sets[0] for seeds in seed_sets):
        return None
    shared = set.intersection(*seed_sets)
    return sorted(shared, key=str) if shared else None


def _valid_score(entry: dict, seeds: list | None) -> float:
    own = [s for s in seeds or [] if s in entry["valid_by_seed"]]
    if not own:  # all rows ran the same seeds, or this row trains nothing and ran others
        return entry["valid"][0]
    return sum(entry["valid_by_seed"][s] for s in own) / len(own)


def _valid_spread(entry: dict, seeds: list | None) -> tuple[float, int]:
    """(the seed-to-seed standard deviation of the validation score, the number of seeds) over the seeds the rows
    are compared on, so that a gap measured on those seeds meets a spread measured on the same ones."""
    own = [s for s in seeds or [] if s in entry["valid_by_seed"]]
    if not own:
        return entry["valid"][1], entry["runs"]
    values = [entry["valid_by_seed"][s] for s in own]
    return (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def _by_valid(entries: list[dict], seeds: list | None) -> dict | None:
    if not entries:
        return None
    metric_smaller = entries[0].get("_smaller", False)
    pick = min if metric_smaller else max
    return pick(entries, key=lambda e: _valid_score(e, seeds))


def _in_family(row: str, family: str) -> bool:
    return row == family or row.startswith(family + "-")


def _candidates(summary: list[dict]) -> list[dict]:
    return [e for e in summary if e["runs"] > 0 and e.get("valid") is not None]


def choice_groups(
    summary: list[dict], main_metric: str, primary: str = "M6Rec"
) -> list[tuple[list[dict], list | None]]:
    """The two groups a choice is made in, the primary's family and the baselines: each group's rows with a
    validation score (marked with the metric's direction) and the seeds its rows are compared on
    (:func:`common_seeds` within the group: a family row's missing seed does not narrow the baselines' choice)."""
    smaller = smaller_is_better(main_metric) if main_metric else False
    marked = [{**e, "_smaller": smaller} for e in _candidates(summary)]
    family = family_of(primary)
    mine = [e for e in marked if _in_family(e["row"], family)]
    theirs = [e for e in marked if not _in_family(e["row"], family)]
    return [(mine, common_seeds(mine)), (theirs, common_seeds(theirs))]


def choose_on_valid(summary: list[dict], main_metric: str, primary: str = "M6Rec") -> tuple[str | None, str | None]:
    """(the primary's variant, the baseline) with the best mean validation ``main_metric``, each within its group
    over the seeds every trained row of the group ran when they ran different seeds (:func:`choice_groups`); test
    plays no part."""
    (mine, my_seeds), (theirs, their_seeds) = choice_groups(summary, main_metric, primary)
    best_mine, best_theirs = _by_valid(mine, my_seeds), _by_valid(theirs, their_seeds)
    return (best_mine["row"] if best_mine else None), (best_theirs["row"] if best_theirs else None)


def best_baseline(summary: list[dict], main_metric: str, primary: str = "M6Rec") -> str | None:
    """The baseline (a row outside the primary's family) with the best mean validation ``main_metric``."""
    return choose_on_valid(summary, main_metric, primary)[1]


def near_tie_lines(summary: list[dict], main_metric: str, primary: str = "M6Rec") -> list[str]:
    """Where validation separates the chosen row of the primary's family, or the best baseline, from its runner-up
    by less than either row's seed-to-seed standard deviation: the choice between them is then within seed noise
    (another kernel set or seed could turn it), and the comparison with the runner-up counts as much."""
    family = family_of(primary)
    lines = []
    # every baseline, the runner-up too, is compared with the chosen row below; the family's runner-up is not
    kinds = ((f"{family} row", f"trained {family} row", False), ("best baseline", "trained baseline", True))
    for (entries, seeds), (what, group, runner_up_compared) in zip(choice_groups(summary, main_metric, primary), kinds):
        best = _by_valid(entries, seeds)
        runner_up = _by_valid([e for e in entries if best and e["row"] != best["row"]], seeds)
        if best is not None and runner_up is not None:
            lines += _tie_line(best, runner_up, seeds, main_metric, what, group, runner_up_compared)
    return lines


def _tie_line(
    best: dict, runner_up: dict, seeds: list | None, main_metric: str, what: str, group: str, runner_up_compared: bool
) -> list[str]:
    gap = abs(_valid_score(best, seeds) - _valid_score(runner_up, seeds))
    trained = [e for e in (best, runner_up) if _trains(e)]  # a row that trains nothing has no seed spread
    spreads = {e["row"]: _valid_spread(e, seeds) for e in trained}
    if not trained or any(n < 2 for _, n in spreads.values()) or gap >= min(sd for sd, _ in spreads.values()):
        return []
    if len(trained) == 2:
        spread = f"either ({spreads[best['row']][0]:.4f}, {spreads[runner_up['row']][0]:.4f})"
    else:
        other = runner_up if trained[0] is best else best
        spread = f"{trained[0]['row']} ({spreads[trained[0]['row']][0]:.4f}; {other['row']} trains nothing)"
    if seeds:
        spread += f", on the {len(seeds)} seeds every {group} ran"
    counts = (
        f"so the comparison with {runner_up['row']} counts as much"
        if runner_up_compared
        else f"so {runner_up['row']}'s comparisons with the baselines (not given here) would count as much"
    )
    if gap < 1e-9:  # equal means (RecBole reports 4 decimals): the plan's row order made the choice
        lead = (
            f"ties with {runner_up['row']} on validation {main_metric} (equal means, so the plan's row order chose; "
            f"the seed-to-seed standard deviation of {spread})"
        )
    else:  # means of 4-decimal values can differ below the 4th decimal
        by = f"{gap:.4f}" if gap >= 5e-5 else f"{gap:.1e}"
        lead = (
            f"leads {runner_up['row']} on validation {main_metric} by {by}, less than the seed-to-seed "
            f"standard deviation of {spread}"
        )
    return [f"- {best['row']} {lead}: the choice of {what} is within seed noise, {counts}."]
