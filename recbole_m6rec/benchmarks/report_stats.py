"""The report's comparisons: how the rows chosen on validation (:mod:`.report_choice`, re-exported here) compare on
test: ratios of means with paired bootstrap intervals that resample users (AUC differences: :mod:`.report_labelled`).
"""

from __future__ import annotations

from recbole_m6rec.benchmarks.report_choice import (
    _in_family,
    _trains,
    best_baseline,
    choice_groups,
    choose_on_valid,
    common_seeds,
    family_of,
    near_tie_lines,
)
from recbole_m6rec.benchmarks.report_tables import COLD, seed_list
from recbole_m6rec.benchmarks.report_timing import time_ratio, time_ratio_line

__all__ = [
    "family_of",
    "common_seeds",
    "choose_on_valid",
    "best_baseline",
    "significance_lines",
    "ratio_lines",
    "near_tie_lines",
    "validation_lean",
    "comparison_facts",
]


# --- comparisons on test ------------------------------------------------------------------------------------------
def _chosen_and_baselines(summary: list[dict], main_metric: str, primary: str) -> tuple:
    """(the primary family's row chosen on validation, the best baseline, every baseline with a finished run)."""
    chosen, best = choose_on_valid(summary, main_metric, primary)
    family = family_of(primary)
    return chosen, best, [e["row"] for e in summary if e["runs"] > 0 and not _in_family(e["row"], family)]


def significance_lines(
    records: list[dict],
    summary: list[dict],
    main_metric: str,
    primary: str = "M6Rec",
    facts: dict | None = None,
) -> list[str]:
    """The validation-chosen primary against every baseline on test ``main_metric``: ratio of means with a paired
    bootstrap interval over users (each user's values on every seed together), p-values Holm-adjusted over the
    comparisons (labelled plans: :mod:`.report_labelled`). ``facts``: :func:`comparison_facts` when the caller has
    it already, so that its bootstrap runs once."""
    facts = facts or comparison_facts(records, summary, main_metric, primary)
    if facts is None:
        return []
    chosen, results = facts["chosen"], facts["paired_test"]
    valid_lines = valid_comparison_lines(facts, _ratio_effect, f"Valid {main_metric} of {chosen} / each baseline")
    if "paired_test_error" in facts:
        return [
            f"- Paired comparison {chosen} vs baselines: not computed ({facts['paired_test_error']}).",
            *valid_lines,
        ]
    if not results:
        return [
            f"- Paired comparison {chosen} vs baselines: not computed (no per-user values to pair, or each "
            "baseline's mean is 0).",
            *valid_lines,
        ]
    header = (
        f"- Test {main_metric} of {chosen} / each baseline (ratio of means over users and seeds, 95% bootstrap "
        "interval resampling users, each with its values on every seed; the seeds themselves are not resampled; "
        f"p for ratio = 1 Holm-adjusted over {len(results)} comparisons):"
    )
    return [header, *comparison_lines(results, facts["best_baseline"], _ratio_effect), *valid_lines]


def valid_comparison_lines(facts: dict, effect, what: str) -> list[str]:
    """The paired comparison on validation (``facts['paired_valid']``), on the seeds whose results of both rows keep
    validation values; [] when none do."""
    results = facts.get("paired_valid") or {}
    if not results:
        return []
    header = (
        f"- {what}, paired as on test, on the results that keep validation values (Holm over these "
        f"{len(results)} comparisons). {validation_lean(bool(facts.get('tuning_borrowed')))}: "
        "read these intervals and p-values as how clear the choice was, test's as the evidence:"
    )
    return [header, *comparison_lines(results, facts["best_baseline"], effect)]


def validation_lean(borrowed: bool, pairs: bool = False) -> str:
    """What validation chose in the plan, hence why its paired numbers lean upward (a sentence, no full stop);
    ``pairs``: for the plan's named pairs, which choose nothing themselves."""
    if borrowed:
        chose = "each run's best epoch" + ("" if pairs else " and the row compared")
        return (
            f"Validation here chose {chose}; each row's settings were chosen on another report's validation (its "
            "`## Tuning` names which), whose luck carries over where that split shares these targets, so its numbers "
            + ("lean upward for both rows" if pairs else "lean upward, most for the chosen row")
        )
    if pairs:
        return "Validation chose each tuned row's settings, so its numbers lean upward for both rows"
    return (
        "Validation chose every tuned row's settings (its run at the tuning seed is its best trial) and then the row "
        "among them, so its numbers lean upward on both sides, most for the chosen row"
    )


def validation_view(records: list[dict]) -> list[dict]:
    """``records`` with each result's validation values where its test values are (``per_user_valid`` as
    ``per_user_test``, ``per_sample_valid`` as ``per_sample_test``; nothing where a result kept none, as results
    finished before they were kept), so that the paired tests written for test run on validation unchanged."""
    return [
        {**r, "per_user_test": r.get("per_user_valid") or {}, "per_sample_test": r.get("per_sample_valid") or {}}
        for r in records
    ]


def _paired_ratios(records: list[dict], main_metric: str, chosen: str, baselines: list[str]) -> dict[str, dict]:
    """``chosen``'s test ``main_metric`` over each baseline's, paired by user and seed
    (:func:`~recbole_m6rec.benchmarks.significance.paired_ratio_ci`); baselines with nothing to pair, or whose
    mean is 0 on the pairs (no ratio), are left out."""
    from recbole_m6rec.benchmarks.significance import defined_paired_ratio, per_user_by_seed

    mine = per_user_by_seed(records, chosen, main_metric)
    results = {row: defined_paired_ratio(mine, per_user_by_seed(records, row, main_metric)) for row in baselines}
    return {row: result for row, result in results.items() if result is not None}


def _ratio_effect(r: dict) -> str:
    seeds = f"{r['n_seeds']} seed{'' if r['n_seeds'] == 1 else 's'}"
    return f"**{r['ratio']:.3f}×** [{r['ci_low']:.3f}, {r['ci_high']:.3f}] ({r['n_users']} users × {seeds}),"


def comparison_lines(results: dict[str, dict], best: str, effect) -> list[str]:
    """One line per baseline: ``effect(result)`` (the estimate and its interval), p and the Holm-adjusted p over all
    of ``results`` (``holm_p``, ``p_is_bound``), the validation-chosen best baseline marked."""
    return [
        f"  - vs {row}{' (the best baseline on valid)' if row == best else ''}: {effect(r)} "
        f"{p_text('p', r['p_value'], r['p_is_bound'])}, {p_text('Holm p', r['holm_p'], r['p_is_bound'])}"
        for row, r in results.items()
    ]


def _with_holm(paired: dict[str, dict]) -> dict[str, dict]:
    """Each comparison with its Holm-adjusted p over all of ``paired`` and ``p_is_bound``: the bootstrap p sits at its
    floor, so it and its adjusted p are upper bounds ("≤")."""
    from recbole_m6rec.benchmarks.significance import holm

    adjusted = holm({row: r["p_value"] for row, r in paired.items()})
    return {row: {**r, "holm_p": adjusted[row], "p_is_bound": _floored(r)} for row, r in paired.items()}


def _floored(result: dict) -> bool:
    """A bootstrap p at its floor ``2 / (B + 1)``: no resample fell on the far side, so the bootstrap only bounds it."""
    return bool(result.get("p_floor")) and result["p_value"] <= result["p_floor"] * (1 + 1e-9)


def p_text(name: str, p: float, floored: bool = False) -> str:
    """``p = 0.031``, or ``p ≤ 0.0002`` for a bound (a floored bootstrap p, and the Holm-adjusted p made from it)."""
    return f"{name} {'≤' if floored else '='} {p:.3g}"


def _on_seeds(entries: list[dict], seeds: list | None, group: str) -> str:
    """How a group's choice was made when its rows ran different seeds; on one seed (shared, or the only one every
    trained row ran), that its seed noise is not measured: no near-tie check can be made."""
    unknown = " (one seed: whether it is a near tie is not known)"
    if not seeds:
        trained = [e for e in entries if _trains(e)]
        one = len(entries) > 1 and trained and all(e["runs"] == 1 for e in trained)
        return " on one seed (whether it is a near tie is not known)" if one else ""
    if len(seeds) == 1:
        return f" on seed {seeds[0]}, the only one every {group} ran{unknown}"
    return f" on seeds {seed_list(seeds)}, the ones every {group} ran"


def ratio_lines(
    summary: list[dict],
    main_metric: str,
    primary: str = "M6Rec",
    timing_reference: str = "SASRec",
    labelled: bool = False,
) -> list[str]:
    """What was chosen on validation, the chosen row's test ``main_metric`` over the best baseline's (minus it, for a
    labelled plan's AUC), its ``cold_recall@10`` over the timing reference's and MostPop's (cold-item plans), and its
    time over the timing reference's and, when another, the best baseline's."""
    by_row = {e["row"]: e for e in summary if e["runs"] > 0}
    chosen, baseline = choose_on_valid(summary, main_metric, primary)
    if chosen is None or by_row[chosen].get(main_metric) is None:
        return []
    mine = by_row[chosen]
    (mine_group, my_seeds), (their_group, their_seeds) = choice_groups(summary, main_metric, primary)
    family = family_of(primary)
    alone = sum(_in_family(row, family) for row, e in by_row.items() if e.get("valid") is not None) == 1
    lines = [
        f"- Selection on validation {main_metric}: "
        + (f"{chosen} is the only {family} row" if alone else f"{chosen} is the best of the {family} rows")
        + (f" (the plan's primary row is {primary})" if chosen != primary and primary in by_row else "")
        + _on_seeds(mine_group, my_seeds, f"trained {family} row")
        + (
            f", {baseline} the best baseline" + _on_seeds(their_group, their_seeds, "trained baseline")
            if baseline
            else ""
        )
        + "; test is reported, never used to choose."
    ]
    lines += near_tie_lines(summary, main_metric, primary)
    compare = "difference" if labelled else "ratio"
    means = _means_on_shared_seeds(mine, by_row[baseline], compare) if baseline is not None else None
    if means is not None:
        lines += _headline_lines(chosen, baseline, main_metric, means, labelled)
    for other in (timing_reference, "MostPop"):
        if other in by_row:
            lines += _cold_line(chosen, mine, other, by_row[other])
    for reference in _time_references(by_row, timing_reference, baseline):
        lines += time_ratio_line(chosen, mine, reference, by_row[reference])
    return lines


def _headline_lines(chosen: str, baseline: str, main_metric: str, means: dict, labelled: bool) -> list[str]:
    """The chosen row against the best baseline, validation first (it decides), test beside it with each seed's
    value (the spread a retrained model would show: the bootstrap below resamples users, not training runs), and a
    line when the two splits disagree on which row is ahead."""
    seeds, valid, test = means["seeds"], means["valid"], means["test"]
    if labelled:  # AUCs compare by their difference
        operator, key, level, shown = "−", "difference", 0.0, lambda value: f"{value:+.4f}"
    else:
        operator, key, level, shown = "/", "ratio", 1.0, lambda value: f"{value:.2f}×"
    lead = {"valid": valid[key] - level, "test": test[key] - level}  # > 0: the chosen row is ahead
    per_seed = [f"{seed} {shown(value)}" for seed, value in test[f"{key}_by_seed"].items()]
    lines = [
        f"- {chosen} {main_metric} {operator} best baseline ({baseline}) {main_metric}, mean over seed(s) "
        f"{seed_list(seeds)}: valid **{shown(valid[key])}** ({valid['chosen']:.4f} vs {valid['baseline']:.4f}), "
        f"test {shown(test[key])} ({test['chosen']:.4f} vs {test['baseline']:.4f}"
        + (f"; per seed: {', '.join(per_seed)}" if len(seeds) > 1 else "")
        + ")"
    ]
    if lead["valid"] * lead["test"] < 0:
        leader = {split: chosen if value > 0 else baseline for split, value in lead.items()}
        lines.append(
            f"- Validation and test disagree on which is ahead ({leader['valid']} on valid, {leader['test']} on "
            "test): validation decides; test's lead is reported, not concluded from."
        )
    return lines


def _cold_line(chosen: str, mine: dict, other: str, theirs: dict) -> list[str]:
    """A cold-item plan's line: the chosen row's cold recall@10 over ``other``'s on the seeds both ran, as cold
    targets found. A row that trains nothing gives the same numbers on every seed, so it stands beside every seed of
    the other."""
    if not (mine.get("cold_by_seed") and theirs.get("cold_by_seed")):
        return []
    mine, theirs = _on_every_seed_of(mine, theirs), _on_every_seed_of(theirs, mine)
    seeds = sorted(set(mine["cold_by_seed"]) & set(theirs["cold_by_seed"]), key=str)
    if not seeds:
        return [f"- {chosen} {COLD} / {other} {COLD}: no seed that both ran"]
    a, b = (sum(e["cold_by_seed"][s] for s in seeds) / len(seeds) for e in (mine, theirs))
    ratio = (
        f"{a / b:.1f}×"
        if b
        else f"undefined: {other} finds none in these runs (a cold item has no training interaction: no count, and "
        "no ID embedding trained as a positive)"
    )
    users = mine.get("cold_test_users")
    # leave-one-out: one target per test user, so recall@10 x cold users = cold targets found
    found = f"; {a * users:.1f} vs {b * users:.1f} of {users} cold test users found" if users else ""
    return [
        f"- {chosen} {COLD} / {other} {COLD}, mean over seed(s) {seed_list(seeds)}: {ratio} ({a:.4f} vs {b:.4f}{found})"
    ]


def _on_every_seed_of(entry: dict, other: dict) -> dict:
    """``entry`` with its one value on every seed ``other`` ran, when it trains nothing (the same on every seed)."""
    if _trains(entry):
        return entry
    value = next(iter(entry["cold_by_seed"].values()))
    return {**entry, "cold_by_seed": {**dict.fromkeys(other["cold_by_seed"], value), **entry["cold_by_seed"]}}


def _means_on_shared_seeds(mine: dict, theirs: dict, compare: str = "ratio") -> dict | None:
    """Two summary entries' mean valid and test main metric over the seeds both have a test value for, and how they
    compare: ``ratio`` (``inf`` over a 0) with the test ratio per seed, or ``difference`` (mine - theirs, for
    AUC) with the test difference per seed; ``None`` when they share no seed."""
    if not (mine.get("test_by_seed") and theirs.get("test_by_seed")):
        return None
    seeds = sorted(set(mine["test_by_seed"]) & set(theirs["test_by_seed"]), key=str)
    if not seeds:
        return None
    means = {"seeds": seeds}
    for split, key in (("test", "test_by_seed"), ("valid", "valid_by_seed")):
        a, b = (sum(e[key].get(s, 0.0) for s in seeds) / len(seeds) for e in (mine, theirs))
        means[split] = {"chosen": a, "baseline": b}
        means[split][compare] = a - b if compare == "difference" else (a / b if b else float("inf"))
    if compare == "difference":
        means["test"]["difference_by_seed"] = {
            seed: mine["test_by_seed"][seed] - theirs["test_by_seed"][seed] for seed in seeds
        }
        return means
    means["test"]["ratio_by_seed"] = {
        seed: mine["test_by_seed"][seed] / theirs["test_by_seed"][seed]
        for seed in seeds
        if theirs["test_by_seed"][seed]
    }
    return means


def _time_references(by_row: dict, timing_reference: str, baseline: str | None) -> list[str]:
    """The rows the chosen row's time is given against: the timing reference, and the best baseline when it is
    another row that trains (a row that trains nothing costs next to nothing: a ratio against it says little)."""
    others = [baseline] if baseline in by_row and _trains(by_row[baseline]) else []
    return [r for r in dict.fromkeys([timing_reference, *others]) if r in by_row]


def _time_facts(by_row: dict, chosen: str, reference: str | None) -> dict | None:
    timing = time_ratio(by_row[chosen], by_row[reference]) if reference in by_row else None
    return {"reference": reference, **timing} if timing else None


def comparison_facts(
    records: list[dict],
    summary: list[dict],
    main_metric: str,
    primary: str = "M6Rec",
    timing_reference: str = "SASRec",
) -> dict | None:
    """The report's comparison as data, for figures quoted elsewhere (the README): the primary's family row chosen on
    validation, the best baseline on validation, their mean valid and test ``main_metric`` over the seeds both ran
    and the ratios, and the paired test ratio against every baseline with its interval and Holm-adjusted p (as the
    report's lines give them), and its train+eval time over ``timing_reference``'s (``time_vs_reference``, as
    :func:`.report_timing.time_ratio`; ``None`` without a qualifying seed) and over the best baseline's
    (``time_vs_best_baseline``, when that row trains). ``None`` when there is no primary row or
    no baseline; ``valid`` and ``test`` are missing when the two share no seed, ``paired_test`` is empty when nothing
    pairs (``paired_test_error`` says why when the statistics could not be imported)."""
    chosen, best, baselines = _chosen_and_baselines(summary, main_metric, primary)
    if chosen is None or best is None:
        return None
    by_row = {e["row"]: e for e in summary if e["runs"] > 0}
    means = _means_on_shared_seeds(by_row[chosen], by_row[best])
    missing = {}
    try:
        paired = _paired_ratios(records, main_metric, chosen, baselines)
        paired_valid = _paired_ratios(validation_view(records), main_metric, chosen, baselines)
    except ImportError as error:  # no paired comparison (the report says why); the rest still stands
        paired, paired_valid, missing = {}, {}, {"paired_test_error": str(error)}
    paired, paired_valid = _with_holm(paired), _with_holm(paired_valid)
    return {
        "metric": main_metric,
        "chosen": chosen,
        "best_baseline": best,
        **(means or {"seeds": []}),
        "paired_test": paired,
        "paired_test_vs_best_baseline": paired.get(best),
        # the same on validation, from the results that keep validation values (empty while none do)
        "paired_valid": paired_valid,
        "paired_valid_vs_best_baseline": paired_valid.get(best),
        "time_vs_reference": _time_facts(by_row, chosen, timing_reference),
        # the best baseline on validation may be a cheaper model than the timing reference: its ratio too
        "time_vs_best_baseline": _time_facts(by_row, chosen, best if _trains(by_row[best]) else None),
        **missing,
    }
