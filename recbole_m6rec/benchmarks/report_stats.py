"""The report's comparisons: which rows are compared (chosen on validation, never on test) and how they compare on
test: ratios of means, paired bootstrap intervals over users, DeLong's paired AUC test for labelled plans.

The plan's ``primary`` row names a family (its name up to the first ``-``); the family's best row on validation is
compared with every row outside it (the baselines), the best baseline on validation singled out.
"""

from __future__ import annotations

from recbole_m6rec.benchmarks.report_tables import smaller_is_better

__all__ = [
    "family_of",
    "choose_on_valid",
    "best_baseline",
    "significance_lines",
    "labelled_significance_lines",
    "ratio_lines",
]


# --- selection on validation --------------------------------------------------------------------------------------
def family_of(primary: str) -> str:
    """Rows named like the primary up to its first '-' (``M6Rec``, ``M6Rec-prior``, ... for ``M6Rec-text``) are
    its variants, not baselines."""
    return primary.split("-")[0]


def _by_valid(entries: list[dict]) -> dict | None:
    entries = [e for e in entries if e["runs"] > 0 and e.get("valid") is not None]
    if not entries:
        return None
    metric_smaller = entries[0].get("_smaller", False)
    pick = min if metric_smaller else max
    return pick(entries, key=lambda e: e["valid"][0])


def choose_on_valid(summary: list[dict], main_metric: str, primary: str = "M6Rec") -> tuple[str | None, str | None]:
    """(the primary's variant, the baseline) with the best mean validation ``main_metric``; test plays no part."""
    family = family_of(primary)
    smaller = smaller_is_better(main_metric) if main_metric else False
    marked = [{**e, "_smaller": smaller} for e in summary]
    mine = _by_valid([e for e in marked if e["row"].startswith(family)])
    theirs = _by_valid([e for e in marked if not e["row"].startswith(family)])
    return (mine["row"] if mine else None), (theirs["row"] if theirs else None)


def best_baseline(summary: list[dict], main_metric: str, primary: str = "M6Rec") -> str | None:
    """The baseline (a row outside the primary's family) with the best mean validation ``main_metric``."""
    return choose_on_valid(summary, main_metric, primary)[1]


# --- comparisons on test ------------------------------------------------------------------------------------------
def significance_lines(
    records: list[dict], summary: list[dict], main_metric: str, primary: str = "M6Rec", labelled: bool = False
) -> list[str]:
    """The validation-chosen primary against every baseline on test ``main_metric``: ratio of means with a paired
    bootstrap interval over users (each user's values on every seed together), p-values Holm-adjusted over the
    comparisons."""
    chosen, best = choose_on_valid(summary, main_metric, primary)
    if chosen is None or best is None:
        return []
    family = family_of(primary)
    baselines = [e["row"] for e in summary if e["runs"] > 0 and not e["row"].startswith(family)]
    try:
        from recbole_m6rec.benchmarks.significance import paired_ratio_ci
    except ImportError as error:
        return [f"- Paired comparison {chosen} vs baselines: not computed ({error})."]

    def per_user(row: str) -> dict[str, float]:
        return {
            f"{r['seed']}:{user}": float(value)
            for r in records
            if r["row"] == row and r.get("status") == "ok" and main_metric in (r.get("per_user_test") or {})
            for user, value in r["per_user_test"][main_metric].items()
        }

    if labelled:
        return labelled_significance_lines(records, summary, main_metric, chosen, best, baselines)
    mine = per_user(chosen)
    results = {}
    for row in baselines:
        theirs = per_user(row)
        if mine and theirs and set(mine) & set(theirs):
            results[row] = paired_ratio_ci(mine, theirs)
    if not results:
        reason = (
            f"labelled evaluation scores one sample per user; {main_metric} is not a per-user metric"
            if labelled
            else "no per-user values to pair (sampled evaluation?)"
        )
        return [f"- Paired comparison {chosen} vs baselines: not computed ({reason})."]
    header = (
        f"- Test {main_metric} of {chosen} / each baseline (ratio of means over users and seeds, 95% bootstrap "
        f"interval resampling users, p for ratio = 1 Holm-adjusted over {len(results)} comparisons):"
    )
    return [
        header,
        *comparison_lines(results, best, lambda r: f"**{r['ratio']:.3f}×** [{r['ci_low']:.3f}, {r['ci_high']:.3f}],"),
    ]


def _per_sample_by_seed(records: list[dict], row: str) -> dict:  # {seed: {"label": [...], "score": [...]}}
    return {
        r["seed"]: r["per_sample_test"]
        for r in records
        if r["row"] == row and r.get("status") == "ok" and r.get("per_sample_test")
    }


def labelled_significance_lines(
    records: list[dict], summary: list[dict], main_metric: str, chosen: str, best: str, baselines: list[str]
) -> list[str]:
    """Labelled (CTR) plans: each row's test AUC with its DeLong interval, and the validation-chosen primary against
    every row outside its family by DeLong's paired test on the same test samples, Holm-adjusted."""
    from recbole_m6rec.benchmarks.significance import auc_ci, paired_auc_over_seeds

    if main_metric != "auc":
        return [f"- Paired comparison {chosen} vs baselines: DeLong's test is for AUC, not {main_metric}."]
    samples = {e["row"]: _per_sample_by_seed(records, e["row"]) for e in summary if e["runs"] > 0}
    lines, intervals, n_samples = [], [], 0
    for row, by_seed in samples.items():
        cis = [auc_ci(s["label"], s["score"]) for s in by_seed.values()]
        if cis:
            half = sum(ci["ci_high"] - ci["ci_low"] for ci in cis) / (2 * len(cis))
            intervals.append(f"{row} {sum(ci['auc'] for ci in cis) / len(cis):.4f} ± {half:.4f}")
            n_samples = len(next(iter(by_seed.values()))["label"])
    if intervals:
        lines.append(
            f"- Test AUC with DeLong's 95% half-width (mean over seeds; {n_samples} test samples): "
            + "; ".join(intervals)
        )
    results = {
        row: result
        for row in baselines
        if (result := paired_auc_over_seeds(samples.get(chosen, {}), samples.get(row, {}))) is not None
    }
    if not results:
        lines.append(
            f"- Paired comparison {chosen} vs baselines: not computed (no per-sample scores on shared samples)."
        )
        return lines
    lines.append(
        f"- Test AUC of {chosen} − each baseline (DeLong's paired test on the same samples, per seed; mean difference, "
        "95% interval from the mean per-seed standard error, an upper bound whatever the seeds' correlation; p for "
        f"difference = 0 Holm-adjusted over {len(results)} comparisons):"
    )
    effect = lambda r: f"**{r['diff']:+.4f}** [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] over {r['seeds']} seed(s),"  # noqa: E731
    return lines + comparison_lines(results, best, effect)


def comparison_lines(results: dict[str, dict], best: str, effect) -> list[str]:
    """One line per baseline: ``effect(result)`` (the estimate and its interval), p and the Holm-adjusted p over all
    of ``results``, the validation-chosen best baseline marked."""
    from recbole_m6rec.benchmarks.significance import holm

    adjusted = holm({row: r["p_value"] for row, r in results.items()})
    return [
        f"  - vs {row}{' (the best baseline on valid)' if row == best else ''}: {effect(r)} "
        f"p = {r['p_value']:.3g}, Holm p = {adjusted[row]:.3g}"
        for row, r in results.items()
    ]


def ratio_lines(
    summary: list[dict], main_metric: str, primary: str = "M6Rec", timing_reference: str = "SASRec"
) -> list[str]:
    """What was chosen on validation, the chosen row's test ``main_metric`` over the best baseline's, its
    ``cold_recall@10`` over the timing reference's and MostPop's (cold-item plans), and its time over the timing
    reference's."""
    by_row = {e["row"]: e for e in summary if e["runs"] > 0}
    chosen, baseline = choose_on_valid(summary, main_metric, primary)
    if chosen is None or by_row[chosen].get(main_metric) is None:
        return []
    mine = by_row[chosen]
    lines = [
        f"- Selection on validation {main_metric}: {chosen} is the best of the {family_of(primary)} rows"
        + (f" (the plan's primary row is {primary})" if chosen != primary and primary in by_row else "")
        + (f", {baseline} the best baseline" if baseline else "")
        + "; test is reported, never used to choose."
    ]
    if baseline is not None:
        best = by_row[baseline]
        ratio = mine[main_metric][0] / best[main_metric][0] if best[main_metric][0] else float("inf")
        lines.append(
            f"- {chosen} test {main_metric} / best baseline ({baseline}) test {main_metric}: "
            f"**{ratio:.2f}×** (valid: {mine['valid'][0]:.4f} vs {best['valid'][0]:.4f})"
        )
    cold_metric = "cold_recall@10"
    if mine.get(cold_metric) is not None:
        for other in (timing_reference, "MostPop"):
            if other in by_row and by_row[other].get(cold_metric) is not None:
                a, b = mine[cold_metric][0], by_row[other][cold_metric][0]
                ratio = f"{a / b:.1f}×" if b else "∞ (the other scores 0)"
                lines.append(f"- {chosen} {cold_metric} / {other} {cold_metric}: **{ratio}** ({a:.4f} vs {b:.4f})")
    if timing_reference in by_row:
        ratio = mine["train_seconds"][0] / by_row[timing_reference]["train_seconds"][0]
        lines.append(
            f"- {chosen} train+eval time / {timing_reference} train+eval time: **{ratio:.2f}×** "
            "(item encoding reported separately)"
        )
    return lines
