"""A leaderboard's report folder: ``report.md``, ``results.csv`` and the two plots, written from the runs' results.

:func:`write_report` puts the parts together: provenance and split (:mod:`.report_sections`), the per-row tables
(:mod:`.report_tables`), the comparisons chosen on validation (:mod:`.report_stats`), the settings and the machine.
Everything below :data:`NOTES_MARKER` in an existing ``report.md`` is hand-written and kept when it is rewritten.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from pathlib import Path

import yaml

from recbole_m6rec import __version__
from recbole_m6rec.atomic import atomic_write_bytes, atomic_write_text
from recbole_m6rec.benchmarks.borrowed_tuning import borrows
from recbole_m6rec.benchmarks.plan import is_labelled, row_seeds
from recbole_m6rec.benchmarks.report_labelled import (
    auc_interval_lines,
    labelled_comparison_facts,
    labelled_significance_lines,
)
from recbole_m6rec.benchmarks.report_pairs import pair_facts, pair_lines
from recbole_m6rec.benchmarks.report_sections import (
    convergence_lines,
    provenance_lines,
    reference_lines,
    split_sentence,
    tuning_lines,
)
from recbole_m6rec.benchmarks.report_stats import (
    comparison_facts,
    ratio_lines,
    significance_lines,
)
from recbole_m6rec.benchmarks.report_tables import (
    VALID_PREFIX,
    bold_among,
    check_one_split,
    is_accuracy_metric,
    json_finite,
    lower_is_better_clause,
    markdown_table,
    metric_names,
    results_csv,
    run_labels,
    summarise,
)

__all__ = ["NOTES_MARKER", "REPORT_FILES", "write_report", "kept_notes", "environment", "plots"]

NOTES_MARKER = "<!-- Notes below this line are written by hand and kept when the report is regenerated. -->"
REPORT_FILES = ("report.md", "results.csv")  # written by this command; kept (with the notes) by --fresh


def environment() -> str:
    """The library versions and the machine (CPU model, cores, torch threads) the report was written on."""
    import numpy
    import pandas
    import recbole
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"recbole_m6rec {__version__}, recbole {recbole.__version__}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, numpy {numpy.__version__}, pandas {pandas.__version__}, Python "
        f"{platform.python_version()}; CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )


def _seeds_sentence(plan: dict) -> str:
    """The plan's seeds, then the rows that run other seeds (a row's own ``seeds``) with theirs."""
    own = {name: seeds for name in plan["rows"] if (seeds := row_seeds(plan, name)) != list(plan["seeds"])}
    text = ", ".join(map(str, plan["seeds"]))
    if own:
        text += "; rows with their own seeds: " + "; ".join(
            f"{name} {', '.join(map(str, seeds))}" for name, seeds in own.items()
        )
    return text


def plots(summary: list[dict], main_metric: str, report_dir: Path) -> list[str]:
    """Test ``main_metric`` per row (bars) and against train+eval time (log scale), written as PNGs into
    ``report_dir``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [e for e in summary if e["runs"] > 0 and e.get(main_metric) is not None]
    if not done:
        return []
    names = [e["row"] for e in done]
    means = [e[main_metric][0] for e in done]
    stds = [e[main_metric][1] for e in done]
    written = []
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names)), 3.2))
    ax.bar(
        names, means, yerr=stds, capsize=4, color=["tab:red" if n.startswith("M6Rec") else "tab:blue" for n in names]
    )
    ax.set_ylabel(f"test {main_metric}")
    ax.set_title(f"test {main_metric} (mean ± std over seeds)")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    written.append(_save_figure(fig, report_dir / f"{main_metric.replace('@', '_at_')}.png"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for e in done:
        ax.errorbar(e["train_seconds"][0], e[main_metric][0], yerr=e[main_metric][1], fmt="o")
        ax.annotate(e["row"], (e["train_seconds"][0], e[main_metric][0]), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_xlabel("train + eval wall time, s (log)")
    ax.set_ylabel(f"test {main_metric}")
    fig.tight_layout()
    written.append(_save_figure(fig, report_dir / "accuracy_vs_time.png"))
    plt.close("all")
    return written


def _save_figure(fig, path: Path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    return path.name


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing report: the marker line and everything below it."""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if NOTES_MARKER in text:
            return text[text.index(NOTES_MARKER) :]
    return NOTES_MARKER + "\n"


def runs_a_report_would_lose(report_dir: Path, records: list[dict]) -> list[str]:
    """The finished runs (``row seed N``) in the folder's current ``results.csv`` that ``records`` leave out: a run
    cut down with ``--rows`` or ``--seeds``, or an interim report, must not replace a wider report with a narrower
    one (results stay in ``results/`` either way). A failed run is no loss: leaving its row out is what ``--rows``
    is for."""
    path = report_dir / "results.csv"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        reported = [(line["model"], str(line["seed"])) for line in csv.DictReader(handle) if line["status"] == "ok"]
    kept = {(r["row"], str(r["seed"])) for r in records}
    return [f"{row} seed {seed}" for row, seed in reported if (row, seed) not in kept]


def unused_result_lines(report_dir: Path, records: list[dict]) -> list[str]:
    """A line naming the result files in ``results/`` that no run of this report is (rows no longer planned, older
    settings, seeds cut): kept for the record, never counted, and a reader should not take them for its runs."""
    used = {f"{r['row']}-seed{r['seed']}.json" for r in records}
    unused = sorted(p.name for p in (report_dir / "results").glob("*.json") if p.name not in used)
    if not unused:
        return []
    return [
        f"`results/` also keeps {len(unused)} result file(s) that no run of this report is (rows no longer in the "
        f"plan, or runs of older settings or code; kept, not counted): {', '.join(f'`{name}`' for name in unused)}.",
        "",
    ]


def _valid_twin(summary: list[dict], metrics: list[str], caption: str) -> list[str]:
    """A test table's metrics on validation (the best epoch's scores), best in bold; nothing when no run kept
    them."""
    if not any(summary_entry.get(f"{VALID_PREFIX}{m}") for summary_entry in summary for m in metrics):
        return []
    return [
        f"{caption} (each run's best epoch, the one its test scores come from; best mean in bold"
        f"{bold_among(summary)}{lower_is_better_clause(metrics)}, none in a column where no compared row scores "
        "above 0):",
        "",
        markdown_table(summary, metrics, with_costs=False, split="valid"),
        "",
    ]


def _cold_groups_lines(plan: dict, report_dir: Path, records: list[dict]) -> list[str]:
    """A cold-item plan's pointer to what its tables cannot show: hits against chance and the paired comparisons
    within each user group (:mod:`.cold_groups`, which rebuilds the split and so runs apart from the report), and
    whether the file there was written from this report's runs."""
    if not plan["common"].get("cold_items"):
        return []
    path = report_dir / "cold_groups.json"
    if not path.is_file():
        state = "`cold_groups.md`, not written yet"
    elif json.loads(path.read_text(encoding="utf-8")).get("runs") == run_labels(records):
        state = "[`cold_groups.md`](cold_groups.md), written from this report's runs"
    else:  # other runs, or a file that does not record which
        state = "[`cold_groups.md`](cold_groups.md), not written from this report's runs (rerun it)"
    return [
        "Cold targets found against random ranking, the warm users split by whether their last history item is "
        f"cold, and paired comparisons within each group: {state}; `python -m recbole_m6rec.benchmarks.cold_groups` "
        "with the same `--config_files` and `--report` writes it.",
        "",
    ]


def write_report(
    plan: dict,
    records: list[dict],
    report_dir: Path,
    command: str,
    tuned: dict | None = None,
    reference: Path | None = None,
    left: list[str] | None = None,
) -> str:
    """Write ``results.csv``, the plots and ``report.md`` (hand-written notes kept) into ``report_dir`` for the
    runs ``records`` of ``plan``; ``left`` names the planned runs not finished yet (an interim report says so at
    its top). Returns the report's text."""
    metrics = metric_names(records)
    fingerprint = check_one_split(records)
    main_metric = str(plan["common"].get("valid_metric", metrics[0] if metrics else "")).lower()
    summary = summarise(records, list(plan["rows"]), metrics, main_metric)
    accuracy = [m for m in metrics if is_accuracy_metric(m)]
    # the plan's `table_metrics` (those measured) lead; the other accuracy metrics get a table below the pictures
    shown = [m for m in plan.get("table_metrics") or [] if m in accuracy] or accuracy
    more = [m for m in accuracy if m not in shown]
    primary = plan.get("primary", "M6Rec")  # its family's best row on valid is compared with the best baseline
    beyond = [m for m in metrics if not is_accuracy_metric(m)]
    atomic_write_text(report_dir / "results.csv", results_csv(records, metrics, main_metric))
    pictures = plots(summary, main_metric, report_dir) if main_metric in metrics else []
    masks = sorted({r.get("history_mask", "") for r in records if r.get("status") == "ok"})
    labelled = is_labelled(plan)
    overrides = {name: dict(row) for name, row in plan["rows"].items()}
    failed = [r for r in records if r.get("status") != "ok"]
    timing_reference = plan.get("timing_reference", "SASRec")
    facts = (  # one bootstrap for the lines and comparison.json
        labelled_comparison_facts(records, summary, main_metric, primary)
        if labelled
        else comparison_facts(records, summary, main_metric, primary, timing_reference)
    )
    borrowed = borrows(plan)  # settings chosen on another report's validation: this one chose none
    if facts is not None:
        facts["tuning_borrowed"] = borrowed
    pairs = pair_facts(records, summary, plan.get("pairs") or {}, main_metric)
    main_twin = _valid_twin(summary, shown, "The same rows on validation")
    unfinished = [name for name, record in (tuned or {}).items() if record.get("unfinished")]
    not_tuned_yet = f", not for {', '.join(unfinished)}, whose tuning has not finished" if unfinished else ""
    text = [
        f"# {plan.get('title') or 'Leaderboard: ' + plan['dataset']}",
        "",
        f"Command: `{command}`",
        "",
        *(
            [
                f"**Interim report** of the runs finished so far; not in it yet: {', '.join(left)}. Rows that ran "
                "different seeds are chosen and compared on the seeds they share.",
                "",
            ]
            if left
            else []
        ),
        *([str(plan["method"]).strip(), ""] if plan.get("method") else []),
        "Provenance (per run in `results/<row>-seed<N>.json`, key `provenance`):",
        "",
        *provenance_lines(records),
        "",
        split_sentence(fingerprint, masks, labelled),
        "",
        markdown_table(summary, shown, main_metric=main_metric),
        "",
        f"± is the standard deviation over seeds ({_seeds_sentence(plan)}). `valid {main_metric}` is the best "
        "epoch's validation score, the only number used to choose ("
        + (
            "epochs and the rows compared below; the settings come from another report's tuning"
            if borrowed
            else "epochs, tuned settings, the rows compared below"
        )
        + f"); its best mean is in bold{bold_among(summary)}, the test columns' are not (test chooses "
        f"nothing{'; the same metrics on validation follow the table' if main_twin else ''}). "
        "`epochs (best)`: epochs run "
        f"and the best epoch (0-based), per seed. `code`: hash of the plugin source files the row ran. `trainable`: the "
        "share of the model's parameters that training updates (a frozen language model counts in the total). "
        "Times are wall-clock seconds of training plus test evaluation of one run, mean over seeds, on the machine "
        "below (the provenance above says which runs had other jobs beside them); M6Rec's one-time item encoding "
        "is a separate column: the seconds of the row's first run that encoded the items (not a mean: runs that "
        "read them from the cache encode nothing; – when every run did).",
        "",
        *main_twin,
        *convergence_lines(records),
        "",
        *unused_result_lines(report_dir, records),
        *ratio_lines(summary, main_metric, primary, timing_reference, labelled),
        *(
            (labelled_significance_lines(facts) if facts else auc_interval_lines(records, summary, main_metric))
            if labelled
            else significance_lines(records, summary, main_metric, primary, facts)
        ),
        "",
        *pair_lines(pairs, main_metric, borrowed),
        *_cold_groups_lines(plan, report_dir, records),
        *[f"![{p}]({p})" for p in pictures],
        "",
        *(
            [
                "The other accuracy metrics on test (the same runs):",
                "",
                markdown_table(summary, more, with_costs=False),
                "",
                *_valid_twin(summary, more, "The same metrics on validation"),
            ]
            if more
            else []
        ),
        *(
            [
                f"Beyond accuracy (coverage and popularity bias of the top-k lists on test"
                f"{lower_is_better_clause(beyond)}):",
                "",
                markdown_table(summary, beyond, with_costs=False),
                "",
                *_valid_twin(summary, beyond, "The same metrics on validation"),
            ]
            if beyond
            else []
        ),
        *(reference_lines(summary, reference, main_metric) + [""] if reference else []),
        *tuning_lines(tuned or {}, main_metric),
        "## Settings",
        "",
        "Shared by every row (`common`):",
        "",
        "```yaml",
        yaml.safe_dump(plan["common"], sort_keys=True).strip(),
        "```",
        "",
        f"Per-row overrides (tuned settings included{not_tuned_yet}; everything else is the model's default: "
        "RecBole's, or the plugin's `properties/model/<model>.yaml` for its own models):",
        "",
        "```yaml",
        yaml.safe_dump(overrides, sort_keys=False).strip(),
        "```",
        "",
        *([f"Tuning: `{json.dumps(plan['tuning'])}`", ""] if plan.get("tuning") else []),
        f"Environment of the process that wrote this report (each run's own: its provenance): {environment()}",
    ]
    if failed:
        text += ["", "## Runs without a result", ""] + [
            f"- {r['row']} seed {r['seed']} ({r.get('status')}): " f"{r.get('error', '')}" for r in failed
        ]
    report = "\n".join(text) + "\n\n" + kept_notes(report_dir / "report.md")
    comparison = {**(facts or {}), **({"pairs": pairs} if pairs else {})}
    if comparison:  # for figures quoted elsewhere (the README), the same numbers as the lines above
        atomic_write_text(report_dir / "comparison.json", json.dumps(json_finite(comparison), indent=1) + "\n")
    else:  # none from an earlier report of other rows may stay
        (report_dir / "comparison.json").unlink(missing_ok=True)
    atomic_write_text(report_dir / "report.md", report)
    return report
