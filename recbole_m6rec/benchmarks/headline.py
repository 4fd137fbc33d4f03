"""Write the README's headline tables from the committed report files.

    python -m recbole_m6rec.benchmarks.headline            # rewrite the tables in README.md
    python -m recbole_m6rec.benchmarks.headline --check    # exit 1 if README.md differs from the reports

A headline table lives between two markers in the README, named after a report folder (a plan's ``--report``):

    <!-- headline:ml-100k metrics=ndcg@10,recall@10 rows=M6Rec,SASRec,BPR,Pop -->
    ... generated table, replaced on every run ...
    <!-- /headline:ml-100k -->

Its numbers come from ``<reports>/<plan>/results/*.json``, one file per (row, seed) as the leaderboard writes them,
those its report used (the (row, seed) pairs of its ``results.csv``; a seed whose result ran older code or settings
stays in ``results/`` until it runs again, and a mean over both would mix two models; such results are named in the
table's footnote):
for each row, the number of seeds that finished, the mean over those seeds of the best validation result and of the
test result for each metric named in ``metrics=``, the epochs each seed ran, and the code that produced them (the
``provenance`` commit, or "no provenance (older code)" for results written before runs recorded it). ``rows=``
picks and orders rows (default: every row, best mean validation value of the first metric first); without
``metrics=`` the plan's kind decides (AUC and LogLoss for labelled plans, NDCG@10, cold Recall@10 and warm NDCG@10 for
a cold-item plan, its validation values from ``valid_cold``, else NDCG@10 and Recall@10). Nothing between the markers is kept: edit the reports, not the README.

Single numbers in the prose are figures (:mod:`recbole_m6rec.benchmarks.figures`), rewritten and checked alike.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from recbole_m6rec.benchmarks.figures import FIGURE_OPENING, render_figures
from recbole_m6rec.benchmarks.report_tables import record_trains

__all__ = ["load_results", "headline_table", "render", "main"]

MARKER = re.compile(
    r"<!-- headline:(?P<plan>[\w.\-]+)(?P<options>[^>]*?)\s*-->(?P<body>.*?)<!-- /headline:(?P=plan) -->", re.S
)
OPENING = re.compile(r"<!-- headline:([\w.\-]+)")
# RecBole ranks these ascending (smaller is better); every other metric descending.
SMALLER_IS_BETTER = {"logloss", "mae", "rmse", "averagepopularity", "giniindex"}
NO_PROVENANCE = "no provenance (older code)"


def _metric_dict(record: dict, *keys: str) -> dict:
    for key in keys:
        if isinstance(record.get(key), dict):
            return {str(k).lower(): v for k, v in record[key].items()}
    return {}


def _normalise(record: dict, path: Path) -> dict:
    """One result file in either layout the leaderboard has written (``valid``/``test`` with ``extra.epochs_run``, or
    ``best_valid_result``/``test_result`` with ``epochs_run``)."""
    row = record.get("row") or record.get("model")
    if not row:
        raise ValueError(f"{path}: a result needs 'row' or 'model' (got keys {sorted(record)})")
    epochs = record.get("epochs_run", (record.get("extra") or {}).get("epochs_run"))
    trained = record_trains(record)
    # a cold-item plan keeps validation's cold / warm means apart from ``valid`` (with their user counts)
    valid_groups = {k: v for k, v in (record.get("valid_cold") or {}).items() if "@" in k}
    return {
        "row": str(row),
        "seed": record.get("seed"),
        "status": record.get("status", "ok"),
        "valid": {**valid_groups, **_metric_dict(record, "best_valid_result", "valid")},
        "test": _metric_dict(record, "test_result", "test"),
        "epochs": epochs if trained else None,
        "hit_cap": record.get("hit_cap") if trained else False,
        "trains": trained,
        "split": record.get("split_fingerprint"),
        "provenance": record.get("provenance"),
        "file": path.name,
    }


def load_results(results_dir: Path | str) -> list[dict]:
    """Every ``*.json`` in a report's ``results/`` folder, normalised, in file-name order."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(
            f"no results folder {results_dir} (a headline marker names a report folder under "
            f"the reports directory, e.g. <!-- headline:ml-100k --> reads reports/ml-100k/results)"
        )
    records = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        records.append(_normalise(record, path))
    if not records:
        raise ValueError(f"{results_dir} holds no result files (*.json)")
    used = report_runs(results_dir.parent)
    if used is not None:
        for record in records:
            record["in_report"] = (record["row"], str(record["seed"])) in used
    return records


def report_runs(report_dir: Path) -> set[tuple[str, str]] | None:
    """The (row, seed) pairs the report in ``report_dir`` used (its ``results.csv``), or None without one."""
    table = report_dir / "results.csv"
    if not table.is_file():
        return None
    with table.open(encoding="utf-8", newline="") as handle:
        return {(line["model"], line["seed"]) for line in csv.DictReader(handle)}


def used_results(report_dir: Path, rows) -> list[dict] | None:
    """The finished result files of ``rows`` that the report in ``report_dir`` used (the (row, seed) pairs of its
    ``results.csv``), as the leaderboard wrote them; None without a ``results.csv``."""
    from recbole_m6rec.benchmarks.runner import load_results

    used = report_runs(report_dir)
    if used is None:
        return None
    return [
        r
        for r in load_results(report_dir)
        if r.get("row") in rows and r.get("status") == "ok" and (r["row"], str(r["seed"])) in used
    ]


def provenance_label(provenance: dict | None) -> str:
    """``commit`` (or ``git_commit``), marked when the row's code differed from it: ``dirty_code`` (the row's own
    files) when recorded, else ``dirty`` / ``git_dirty`` (the whole tree); without a commit, the code hash."""
    if not provenance:
        return NO_PROVENANCE
    commit = provenance.get("commit") or provenance.get("git_commit")
    code_hash = str(provenance.get("code_hash") or "")[:10]
    if not commit:
        return f"code {code_hash} (no git commit)" if code_hash else NO_PROVENANCE
    label = f"`{str(commit)[:10]}`"
    if "dirty_code" in provenance and provenance["dirty_code"] is not None:
        dirty = bool(provenance["dirty_code"])
    else:
        dirty = bool(provenance.get("dirty", provenance.get("git_dirty")))
    if dirty:
        label += f" + uncommitted changes (code {code_hash})" if code_hash else " + uncommitted changes"
    if provenance.get("changed_during_run"):
        label += ", code changed during the run"
    return label


def default_metrics(records: list[dict]) -> list[str]:
    keys = set().union(*(set(r["valid"]) | set(r["test"]) for r in records))
    if "auc" in keys:
        return [m for m in ("auc", "logloss") if m in keys]
    if "cold_recall@10" in keys:
        return ["ndcg@10", "cold_recall@10", "warm_ndcg@10"]
    return ["ndcg@10", "recall@10"]


def _is_smaller_better(metric: str) -> bool:
    name = metric.split("@")[0]
    return name.removeprefix("cold_").removeprefix("warm_") in SMALLER_IS_BETTER


def _stats(values: list) -> tuple[float | None, float | None, int]:
    """Mean, standard deviation (over two or more values) and count of the values that are there."""
    values = [float(v) for v in values if v is not None]
    mean = statistics.fmean(values) if values else None
    return mean, (statistics.stdev(values) if len(values) > 1 else None), len(values)


def _number(stats: tuple[float | None, float | None, int], seeds: int) -> str:
    mean, sd, count = stats
    if mean is None:
        return "–"
    text = f"{mean:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")
    return text + (f" ({count} of {seeds} seeds)" if count < seeds else "")


def _epochs(entry_epochs: list, hit_caps: list, trains: list | None = None) -> str:
    """``12, 30†``: epochs per seed, † where it stopped at its epoch cap, * where the result does not say; ``–`` for
    a row that trains nothing."""
    if trains is not None and trains and not any(trains):
        return "–"
    marks = {True: "†", False: "", None: "*"}
    return ", ".join(("?" if e is None else str(e)) + marks[cap] for e, cap in zip(entry_epochs, hit_caps))


def summarise(records: list[dict], metrics: Sequence[str], rows: Sequence[str] | None = None) -> list[dict]:
    """One entry per row: seeds, (mean, standard deviation, count) of valid and test per metric, epochs and cap marks
    per seed, provenance labels."""
    done = [r for r in records if r["status"] == "ok"]
    names = list(rows) if rows else list(dict.fromkeys(r["row"] for r in done))
    summary = []
    for name in names:
        mine = sorted((r for r in done if r["row"] == name), key=lambda r: (r["seed"] is None, r["seed"]))
        summary.append(
            {
                "row": name,
                "seeds": [r["seed"] for r in mine],
                "stats": {
                    (part, m): _stats([r[part].get(m) for r in mine]) for m in metrics for part in ("valid", "test")
                },
                "epochs": [r["epochs"] for r in mine],
                "hit_caps": [None if r.get("hit_cap") is None else bool(r["hit_cap"]) for r in mine],
                "trains": [r.get("trains", True) for r in mine],
                "code": list(dict.fromkeys(provenance_label(r["provenance"]) for r in mine)),
            }
        )
    if not rows and metrics:
        first = metrics[0]
        sign = 1 if _is_smaller_better(first) else -1

        def by_valid(entry: dict) -> tuple[bool, float]:
            mean = entry["stats"]["valid", first][0]
            return mean is None, sign * (mean or 0.0)

        summary.sort(key=by_valid)
    return summary


def headline_table(plan: str, records: list[dict], metrics: Sequence[str], rows: Sequence[str] | None = None) -> str:
    """The markdown that goes between a plan's markers."""
    source = (
        f"the results `reports/{plan}/report.md` used (listed in its `results.csv`, files in `results/`)"
        if any("in_report" in r for r in records)
        else f"`reports/{plan}/results/*.json`"
    )
    older = [r for r in records if not r.get("in_report", True)]
    records = [r for r in records if r.get("in_report", True)]
    summary = summarise(records, metrics, rows)
    header = ["row", "seeds"] + [f"{part} {m}" for m in metrics for part in ("valid", "test")] + ["epochs run", "code"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in summary:
        if not entry["seeds"]:
            cells = [entry["row"], "0"] + ["–"] * (2 * len(metrics)) + ["–", "no finished result"]
        else:
            numbers = [
                _number(entry["stats"][part, m], len(entry["seeds"])) for m in metrics for part in ("valid", "test")
            ]
            epochs = _epochs(entry["epochs"], entry["hit_caps"], entry.get("trains"))
            cells = [entry["row"], str(len(entry["seeds"]))] + numbers + [epochs, "; ".join(entry["code"])]
        lines.append("| " + " | ".join(cells) + " |")
    splits = sorted({str(r["split"]) for r in records if r["status"] == "ok" and r["split"]})
    if len(splits) > 1:  # one table, one split, as the leaderboard's own report insists
        rows_of = {s: sorted({r["row"] for r in records if str(r["split"]) == s}) for s in splits}
        raise ValueError(
            f"reports/{plan}: its results were scored on different splits ("
            + "; ".join(f"`{s}`: {', '.join(rows)}" for s, rows in rows_of.items())
            + "); rerun the odd rows on the plan's split"
        )
    seeds = sorted({r["seed"] for r in records if r["status"] == "ok" and r["seed"] is not None})
    failed = [r for r in records if r["status"] != "ok"]
    footer = (
        f"Mean ± standard deviation over seeds ({', '.join(map(str, seeds))}) of {source}: "
        f"valid = the best validation epoch, test = that epoch's model on test; † = stopped at its epoch cap"
        + (
            ", * = the result does not record whether it did (older code)"
            if any(cap is None for entry in summary for cap in entry["hit_caps"])
            else ""
        )
        + f". Split fingerprint {', '.join(f'`{s}`' for s in splits) or 'not recorded'}."
        # a commit names the tree when the result was written; two commits can hold the same code for the row
        + " `code`: the commit each result recorded (the report's `code` column has the hash of the code it ran)."
    )
    if failed:
        footer += " Failed, left out: " + ", ".join(f"{r['row']} seed {r['seed']}" for r in failed) + "."
    if older:
        footer += (
            " Not in the report, left out (older code or settings, to run again, or a row the plan no longer has): "
            + ", ".join(f"{r['row']} seed {r['seed']}" for r in older)
            + "."
        )
    footer += " Written by `python -m recbole_m6rec.benchmarks.headline`; do not edit by hand."
    return "\n".join(lines) + "\n\n" + footer


def _options(text: str) -> dict[str, list[str]]:
    options = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or key not in ("metrics", "rows") or not value:
            raise ValueError(f"headline marker option {item!r}: expected metrics=a,b or rows=A,B")
        options[key] = [v for v in value.split(",") if v]
    return options


def render(readme: str, reports_dir: Path | str) -> str:
    """``readme`` with every headline block and every figure (:mod:`.figures`) rewritten from ``reports_dir``."""
    reports_dir = Path(reports_dir)
    opened = OPENING.findall(readme)
    closed = {m.group("plan") for m in MARKER.finditer(readme)}
    unclosed = [p for p in opened if p not in closed]
    if unclosed:
        raise ValueError(f"headline marker for {unclosed[0]!r} has no closing <!-- /headline:{unclosed[0]} -->")

    def replace(match: re.Match) -> str:
        plan = match.group("plan")
        options = _options(match.group("options"))
        records = load_results(reports_dir / plan / "results")
        metrics = [m.lower() for m in options.get("metrics", [])] or default_metrics(records)
        table = headline_table(plan, records, metrics, options.get("rows"))
        opening = match.group(0)[: match.start("body") - match.start(0)]
        return f"{opening}\n{table}\n<!-- /headline:{plan} -->"

    return render_figures(MARKER.sub(replace, readme), reports_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", default="README.md", help="the file with headline markers (default: README.md)")
    parser.add_argument("--reports", default=None, help="reports folder (default: reports/ next to the README)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and show the difference if the README's tables differ from the " "reports",
    )
    args = parser.parse_args(argv)
    readme_path = Path(args.readme)
    reports_dir = Path(args.reports) if args.reports else readme_path.resolve().parent / "reports"
    current = readme_path.read_text(encoding="utf-8")
    plans = list(dict.fromkeys(OPENING.findall(current)))
    figures = len(FIGURE_OPENING.findall(current))
    if not plans and not figures:
        print(f"{readme_path}: no <!-- headline:<plan> --> or <!-- figure:... --> markers", file=sys.stderr)
        return 2
    try:
        wanted = render(current, reports_dir)
    except (OSError, ValueError) as error:
        print(f"headline: {error}", file=sys.stderr)
        return 2
    if args.check:
        if wanted == current:
            print(f"{readme_path}: headline tables ({', '.join(plans)}) and {figures} figures match the reports")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            f"{readme_path} (as it is)",
            f"{readme_path} (from the reports)",
        )
        sys.stderr.writelines(diff)
        print(
            f"{readme_path}: headline tables differ from the reports; run "
            f"python -m recbole_m6rec.benchmarks.headline",
            file=sys.stderr,
        )
        return 1
    if wanted != current:
        from recbole_m6rec.cache import atomic_write_text

        atomic_write_text(readme_path, wanted)
    print(
        f"{readme_path}: {'rewrote' if wanted != current else 'unchanged,'} headline tables for "
        f"{', '.join(plans) or 'no plan'} and {figures} figures"
    )
    for plan in plans:
        records = load_results(reports_dir / plan / "results")
        if any(not r["provenance"] for r in records):
            print(f"  {plan}: {NO_PROVENANCE} in {sum(not r['provenance'] for r in records)} of {len(records)} results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
