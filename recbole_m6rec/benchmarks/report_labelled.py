"""A labelled (click-through) plan's comparisons: each row's test AUC with its interval, and the chosen row against
every baseline by the difference of AUCs on the same test samples, with a paired bootstrap that resamples users (a
user's several test samples are correlated), Holm-adjusted."""

from __future__ import annotations

from recbole_m6rec.benchmarks.report_stats import (
    _chosen_and_baselines,
    _means_on_shared_seeds,
    _with_holm,
    comparison_lines,
    valid_comparison_lines,
    validation_view,
)

__all__ = [
    "labelled_comparison_facts",
    "labelled_significance_lines",
    "per_sample_by_seed",
    "row_auc_intervals",
    "auc_interval_lines",
]


def per_sample_by_seed(records: list[dict], row: str) -> dict:
    """``{seed: per_sample_test}`` of ``row``'s finished runs (labels, scores, users, samples digest)."""
    return {
        r["seed"]: r["per_sample_test"]
        for r in records
        if r["row"] == row and r.get("status") == "ok" and r.get("per_sample_test")
    }


def labelled_comparison_facts(
    records: list[dict], summary: list[dict], main_metric: str, primary: str = "M6Rec"
) -> dict | None:
    """A labelled (CTR) plan's comparison as data: the primary's family row chosen on validation, the best baseline
    on validation, their mean valid and test ``main_metric`` over the seeds both ran and the differences, each row's
    test AUC with its interval (``test_auc``), and the chosen row against every baseline on the same test samples
    (``paired_test``: the AUC difference, its interval, p and Holm-adjusted p), by a bootstrap that resamples users
    (a user's several test samples are correlated). ``None`` when there is no primary row or no baseline;
    ``paired_test_error`` says why nothing was paired when the metric is not AUC or the statistics could not be
    imported."""
    chosen, best, baselines = _chosen_and_baselines(summary, main_metric, primary)
    if chosen is None or best is None:
        return None
    by_row = {e["row"]: e for e in summary if e["runs"] > 0}
    facts = {
        "metric": main_metric,
        "chosen": chosen,
        "best_baseline": best,
        **(_means_on_shared_seeds(by_row[chosen], by_row[best], compare="difference") or {"seeds": []}),
        "test_auc": {},
        "paired_test": {},
        "paired_test_vs_best_baseline": None,
    }
    if main_metric != "auc":
        return {**facts, "paired_test_error": f"the paired test here is for AUC, not {main_metric}"}
    try:
        from recbole_m6rec.benchmarks.significance import paired_auc_over_users
    except ImportError as error:  # no intervals (the report says why); the rest still stands
        return {**facts, "paired_test_error": str(error)}

    def against_baselines(runs: list[dict]) -> dict:
        """The chosen row against every baseline on the same samples of ``runs``, Holm-adjusted."""
        samples = {row: per_sample_by_seed(runs, row) for row in (chosen, *baselines)}
        return _with_holm(
            {
                row: result
                for row in baselines
                if (result := paired_auc_over_users(samples[chosen], samples[row])) is not None
            }
        )

    intervals = row_auc_intervals(records, list(by_row))
    paired, paired_valid = against_baselines(records), against_baselines(validation_view(records))
    return {
        **facts,
        "test_auc": intervals,
        "paired_test": paired,
        "paired_test_vs_best_baseline": paired.get(best),
        "paired_valid": paired_valid,
        "paired_valid_vs_best_baseline": paired_valid.get(best),
    }


def row_auc_intervals(records: list[dict], rows: list[str]) -> dict[str, dict]:
    """Each of ``rows``' test AUC with its 95% interval, over users and seeds (rows without per-sample scores are
    left out)."""
    from recbole_m6rec.benchmarks.significance import auc_interval_over_users

    by_seed = {row: per_sample_by_seed(records, row) for row in rows}
    return {row: i for row, runs in by_seed.items() if (i := auc_interval_over_users(runs)) is not None}


def auc_interval_lines(records: list[dict], summary: list[dict], main_metric: str) -> list[str]:
    """A labelled plan with nothing to compare yet (no primary row or no baseline finished): each finished row's test
    AUC with its interval and the samples it is over, which :func:`labelled_significance_lines` gives otherwise."""
    if main_metric != "auc":
        return []
    try:
        intervals = row_auc_intervals(records, [e["row"] for e in summary if e["runs"] > 0])
    except ImportError:  # no statistics: the table stands alone
        return []
    return _interval_line(intervals)


def _interval_line(intervals: dict[str, dict]) -> list[str]:
    if not intervals:
        return []
    first = next(iter(intervals.values()))
    return [
        f"- Test AUC with its 95% interval (mean over seeds; {_resampling(first)}; {first['samples']} test "
        f"samples from {first['n_users']} users): "
        + "; ".join(f"{row} {i['auc']:.4f} [{i['ci_low']:.4f}, {i['ci_high']:.4f}]" for row, i in intervals.items())
    ]


def labelled_significance_lines(facts: dict) -> list[str]:
    """Labelled (CTR) plans, from :func:`labelled_comparison_facts`: each row's test AUC with its interval, and the
    validation-chosen primary against every row outside its family on the same test samples, Holm-adjusted."""
    chosen = facts["chosen"]
    if "paired_test_error" in facts:
        return [f"- Paired comparison {chosen} vs baselines: not computed ({facts['paired_test_error']})."]
    lines = _interval_line(facts["test_auc"])

    def effect(r: dict) -> str:
        return f"**{r['diff']:+.4f}** [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] over {r['seeds']} seed(s),"

    results = facts["paired_test"]
    if not results:
        lines.append(
            f"- Paired comparison {chosen} vs baselines: not computed (no per-sample scores on shared samples)."
        )
    else:
        resampling = _resampling(next(iter(results.values())))
        lines.append(
            f"- Test AUC of {chosen} − each baseline (paired bootstrap on the same samples, {resampling}; mean "
            f"difference over the seeds both ran, 95% interval; p for difference = 0 Holm-adjusted over "
            f"{len(results)} comparisons):"
        )
        lines += comparison_lines(results, facts["best_baseline"], effect)
    return lines + valid_comparison_lines(facts, effect, f"Valid AUC of {chosen} − each baseline")


def _resampling(facts: dict) -> str:
    if facts["clustered"]:
        return f"{facts['n_boot']} resamples of users, each with all its test samples on every seed"
    return f"{facts['n_boot']} resamples of test samples (these results record no users)"
