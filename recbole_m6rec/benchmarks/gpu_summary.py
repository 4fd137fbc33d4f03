"""The GPU campaign's own summary, ``campaign.md``: the device, the budget, one table per part, and for the
click-through part each online-layer setting's test AUC next to the joined model's (the late-interaction table's
line). Each part's full report is the leaderboard's ``report.md`` in its own folder."""

from __future__ import annotations

from recbole_m6rec.benchmarks.gpu_checks import describe
from recbole_m6rec.benchmarks.report_tables import record_trains

__all__ = ["layer_comparison", "summary_text"]


def layer_comparison(plan: dict, records: list[dict], metric: str = "auc") -> list[str]:
    """Each row's test ``metric`` relative to the joined row (every layer online over every token), by online
    layers: the late-interaction table's line."""

    def layers(row: str):
        return plan["rows"][row].get("late_interaction_layers", plan["common"].get("late_interaction_layers", 2))

    done = {r["row"]: r for r in records if r.get("status") == "ok" and metric in (r.get("test") or {})}
    joined = [row for row, settings in plan["rows"].items() if str(settings.get("segment_tokens")) == "all"]
    if not joined or joined[0] not in done:
        return [f"- Joined model: no finished result, so no comparison ({joined[0] if joined else 'no joined row'})."]
    reference = done[joined[0]]["test"][metric]
    lines = [
        f"- {joined[0]} ({layers(joined[0])} online layers, every token): test {metric.upper()} " f"{reference:.4f}."
    ]
    for row in sorted((r for r in plan["rows"] if r != joined[0]), key=layers):
        if row not in done:
            lines.append(f"- {row} ({layers(row)} online layers): no finished result.")
            continue
        value = done[row]["test"][metric]
        gap = 100 * (value - reference) / reference
        lines.append(
            f"- {row} ({layers(row)} online layer{'s' if layers(row) != 1 else ''}): test "
            f"{metric.upper()} {value:.4f}, {abs(gap):.1f}% {'above' if gap > 0 else 'below'} the joined "
            "model's."
        )
    return lines


def summary_text(
    command: str, device: dict, budget_s: float, wall: float, parts: dict[str, tuple[dict, list]], tiny: bool
) -> str:
    """``campaign.md``: ``parts`` maps each part's name to its plan and its records in row order."""
    lines = [
        "# GPU campaign",
        "",
        f"Command: `{command}`",
        "",
        f"Device: {describe(device)}.",
        "",
        f"Budget: {budget_s:.0f} s for the whole campaign (parts at the same time); wall time {wall:.0f} s."
        + (" Tiny mode: the CPU check of the command, not results." if tiny else ""),
        "",
    ]
    for name, (plan, records) in parts.items():
        campaign = plan["campaign"]
        lines += [
            f"## {name}",
            "",
            f"Report: [{name}/report.md]({name}/report.md); part budget "
            f"{float(campaign['budget']) * budget_s:.0f} s, {campaign['workers']} rows at a time.",
            "",
            "| row | status | row budget s | wall s | epochs (cap) | valid | test |",
            "|---|---|---|---|---|---|---|",
        ]
        main_metric = str(plan["common"].get("valid_metric", "")).lower()
        for r in records:
            valid, test = (r.get("valid") or {}).get(main_metric), (r.get("test") or {}).get(main_metric)
            epochs = f"{r.get('epochs_run')} ({r.get('epoch_cap')})" if record_trains(r) else "–"
            lines.append(
                f"| {r['row']} | {r['status']} | {float(campaign['row_budget'][r['row']]) * budget_s:.0f} | "
                f"{r.get('wall_seconds', '–')} | {epochs if r['status'] == 'ok' else '–'} | "
                f"{'–' if valid is None else f'{valid:.4f}'} | {'–' if test is None else f'{test:.4f}'} |"
            )
        if name.startswith("ctr"):
            lines += ["", *layer_comparison(plan, records)]
        lines.append("")
    return "\n".join(lines)
