"""A plan's named ``pairs`` (``{name: [row, reference]}``): comparisons a conclusion rests on besides the chosen
row against the baselines, each on the seeds both rows ran, as data for ``comparison.json`` and as report lines.
Ranking plans compare by the ratio of the metric (paired over users and seeds); labelled (click-through) plans by the
difference of AUCs on the same test samples (a paired bootstrap that resamples users), e.g. rows that read the same
information."""

from __future__ import annotations

from recbole_m6rec.benchmarks.report_stats import (
    _means_on_shared_seeds,
    _paired_ratios,
    _with_holm,
    p_text,
    validation_lean,
    validation_view,
)
from recbole_m6rec.benchmarks.report_tables import seed_list

__all__ = ["pair_facts", "pair_lines"]


def pair_facts(records: list[dict], summary: list[dict], pairs: dict[str, list[str]], main_metric: str) -> dict:
    """The plan's named ``pairs`` (``{name: [row, reference]}``) as data: for each, the two rows' mean valid and test
    ``main_metric`` over the seeds both ran and their ratios (``valid``, ``test``; with ``main_metric`` AUC their
    differences), the paired test with its interval and p (``paired_test``: the ratio over users and seeds, or the
    AUC difference on the same samples; Holm-adjusted over the pairs, each a question of its own: conservative) and
    each row's trainable share. A pair whose rows share no seed has no
    ``valid`` / ``test``; one with nothing to pair has ``paired_test`` ``None``; one whose rows have not both run
    says which have not (``not_run``)."""
    by_row = {e["row"]: e for e in summary if e["runs"] > 0}
    present = {name: pair for name, pair in pairs.items() if all(row in by_row for row in pair)}
    missing = {
        name: {"row": pair[0], "reference": pair[1], "not_run": [row for row in pair if row not in by_row]}
        for name, pair in pairs.items()
        if name not in present
    }
    labelled = main_metric == "auc"
    try:
        if labelled:
            from recbole_m6rec.benchmarks.report_labelled import per_sample_by_seed
            from recbole_m6rec.benchmarks.significance import paired_auc_over_users

            def compare(row: str, reference: str, runs: list[dict]) -> dict | None:
                return paired_auc_over_users(per_sample_by_seed(runs, row), per_sample_by_seed(runs, reference))

        else:

            def compare(row: str, reference: str, runs: list[dict]) -> dict | None:
                return _paired_ratios(runs, main_metric, row, [reference]).get(reference)

        paired, paired_valid = (
            _with_holm(
                {
                    name: result
                    for name, (row, reference) in present.items()
                    if (result := compare(row, reference, runs)) is not None
                }
            )
            for runs in (records, validation_view(records))
        )
    except ImportError as error:
        return missing | {
            name: {"row": pair[0], "reference": pair[1], "error": str(error)} for name, pair in present.items()
        }
    return missing | {
        name: {
            "row": row,
            "reference": reference,
            **_as_pair(_means_on_shared_seeds(by_row[row], by_row[reference], "difference" if labelled else "ratio")),
            "paired_test": paired.get(name),
            "paired_valid": paired_valid.get(name),  # from the results that keep validation values
            "trainable_share": {
                "row": by_row[row]["trainable_share"],
                "reference": by_row[reference]["trainable_share"],
            },
        }
        for name, (row, reference) in present.items()
    }


def _as_pair(means: dict | None) -> dict:
    """:func:`_means_on_shared_seeds` with its ``chosen`` / ``baseline`` named ``row`` / ``reference``."""
    if means is None:
        return {"seeds": []}
    renamed = {"chosen": "row", "baseline": "reference"}
    return {
        key: ({renamed.get(k, k): v for k, v in value.items()} if isinstance(value, dict) else value)
        for key, value in means.items()
    }


def pair_lines(facts: dict, main_metric: str, tuning_borrowed: bool = False) -> list[str]:
    """The report's lines for :func:`pair_facts`; ``tuning_borrowed``: the plan took its settings from another
    report's tuning (:mod:`.borrowed_tuning`), so validation here chose no settings."""
    if not facts:
        return []
    labelled = main_metric == "auc"
    lines = [
        f"Comparisons the plan names (`pairs`): row − reference, mean {main_metric} over the seeds both ran; test "
        "paired on the same samples (95% bootstrap interval resampling users, p for difference = 0 Holm-adjusted over "
        "the pairs):"
        if labelled
        else f"Comparisons the plan names (`pairs`): row / reference, mean {main_metric} over the seeds both ran; test "
        "paired over users and seeds (95% bootstrap interval, p for ratio = 1 Holm-adjusted over the pairs):",
        "",
    ]
    if any(pair.get("paired_valid") for pair in facts.values()):
        lines[0] = lines[0][:-1] + (
            '; "paired valid": the same test on validation where both rows\' results keep its values (Holm over '
            f"those pairs). {validation_lean(tuning_borrowed, pairs=True)}: how clear a difference was when choosing, test's "
            "the evidence:"
        )
    for name, pair in facts.items():
        head = f"- {name}: {pair['row']} {'−' if labelled else '/'} {pair['reference']}"  # AUCs compare by difference
        if "error" in pair:
            lines.append(f"{head}: not computed ({pair['error']})")
            continue
        if "not_run" in pair:
            verb = "has" if len(pair["not_run"]) == 1 else "have"
            lines.append(f"{head}: not run yet ({' and '.join(pair['not_run'])} {verb} no finished result)")
            continue
        if "valid" not in pair:
            lines.append(f"{head}: no seed that both ran")
            continue
        shares = pair["trainable_share"]
        share_text = (
            f"; trainable {shares['row']:.2%} vs {shares['reference']:.2%}"
            if shares["row"] is not None and shares["reference"] is not None
            else ""
        )
        paired = pair["paired_test"]
        valid_text = _paired_valid_text(pair.get("paired_valid"), labelled)
        if labelled:
            lines.append(
                f"{head}, seed(s) {seed_list(pair['seeds'])}: {_difference_text(pair, paired)}{valid_text}{share_text}"
            )
            continue
        paired_text = (
            f"; paired test **{paired['ratio']:.3f}×** [{paired['ci_low']:.3f}, {paired['ci_high']:.3f}] "
            f"({paired['n_users']} users × {paired['n_seeds']} seed{'' if paired['n_seeds'] == 1 else 's'}), "
            f"{p_text('p', paired['p_value'], paired['p_is_bound'])}, "
            f"{p_text('Holm p', paired['holm_p'], paired['p_is_bound'])}"
            if paired
            else "; nothing to pair on test"
        )
        lines.append(
            f"{head}, seed(s) {seed_list(pair['seeds'])}: valid **{pair['valid']['ratio']:.3f}×** "
            f"({pair['valid']['row']:.4f} vs {pair['valid']['reference']:.4f}), test {pair['test']['ratio']:.3f}× "
            f"({pair['test']['row']:.4f} vs {pair['test']['reference']:.4f}){paired_text}{valid_text}{share_text}"
        )
    return lines + [""]


def _paired_valid_text(paired: dict | None, labelled: bool) -> str:
    """The pair's paired test on validation, where both rows' results keep validation values ("" where not)."""
    if not paired:
        return ""
    if labelled:
        effect = f"{paired['diff']:+.4f} [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}]"
    else:
        effect = f"{paired['ratio']:.3f}× [{paired['ci_low']:.3f}, {paired['ci_high']:.3f}]"
    return (
        f"; paired valid {effect}, {p_text('p', paired['p_value'], paired['p_is_bound'])}, "
        f"{p_text('Holm p', paired['holm_p'], paired['p_is_bound'])}"
    )


def _difference_text(pair: dict, paired: dict | None) -> str:
    """A labelled pair's line: valid and test AUC differences, and the paired test on the same samples."""
    valid, test = pair["valid"], pair["test"]
    text = (
        f"valid **{valid['difference']:+.4f}** ({valid['row']:.4f} vs {valid['reference']:.4f}), test "
        f"{test['difference']:+.4f} ({test['row']:.4f} vs {test['reference']:.4f})"
    )
    if not paired:
        return text + "; nothing to pair on test (no per-sample scores on the same samples)"
    return (
        f"{text}; paired test **{paired['diff']:+.4f}** [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}] "
        f"({paired['samples']} samples, {paired['n_users']} users), "
        f"{p_text('p', paired['p_value'], paired['p_is_bound'])}, "
        f"{p_text('Holm p', paired['holm_p'], paired['p_is_bound'])}"
    )
