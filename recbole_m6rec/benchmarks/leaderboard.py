"""Run a list of models on one dataset configuration, several seeds, and write a report.

    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml
    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/demo_ml-100k.yaml --rows=M6Rec,Pop --seeds=1

The yaml names the dataset, the seeds, the RecBole settings every row shares (``common``) and the rows: a row is a
name plus a RecBole/plugin model and the settings that differ from ``common`` (listed in the report). Each
(row, seed) runs in its own process (:mod:`recbole_m6rec.benchmarks.job`); its result is written as soon as it
finishes, a failing row is recorded with its error and the others go on, and a rerun reuses every finished result
whose settings are unchanged. Rows whose split fingerprints differ are refused: one table, one split.
Extra ``--key=value`` arguments override ``common``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import yaml

from recbole_m6rec import __version__
from recbole_m6rec.cache import atomic_write_bytes, atomic_write_text, stable_hash
from recbole_m6rec.benchmarks.significance import paired_test
from recbole_m6rec.config import PLUGIN_PROPERTIES_DIR, model_yaml_files, parse_cmd_args
from recbole_m6rec.datasets import DATASETS_DIR

REQUIRED_KEYS = ("dataset", "seeds", "common", "rows")
BASE_COLUMNS = ["model", "recbole_model", "seed", "dataset", "split_fingerprint", "history_mask", "status",
                "train_seconds", "test_seconds", "item_encoding_seconds", "peak_rss_mb", "epochs_run", "error"]


class SplitMismatchError(RuntimeError):
    """Rows of one report were evaluated on different splits."""


def load_plan(path: str, overrides: dict, rows: Sequence[str] | None, seeds: Sequence[int] | None) -> dict:
    with open(path, encoding="utf-8") as handle:
        plan = yaml.safe_load(handle) or {}
    missing = [key for key in REQUIRED_KEYS if key not in plan]
    if missing:
        raise ValueError(f"benchmark file '{path}' lacks {missing}; it needs {list(REQUIRED_KEYS)}")
    plan["common"] = {**plan["common"], **overrides}
    if rows:
        unknown = [row for row in rows if row not in plan["rows"]]
        if unknown:
            raise ValueError(f"rows {unknown} are not in '{path}'; known rows: {', '.join(plan['rows'])}")
        plan["rows"] = {row: plan["rows"][row] for row in rows}
    if seeds:
        plan["seeds"] = list(seeds)
    for name, row in plan["rows"].items():
        if not isinstance(row, dict) or "model" not in row:
            raise ValueError(f"row '{name}' needs a 'model' (e.g. {{model: SASRec}}); got {row!r}")
    return plan


def parse_seeds(value: str | None, plan_path: str) -> list[int] | None:
    """``--seeds``: a count N (the plan's first N seeds, when N <= their number) or a comma-separated list."""
    if not value:
        return None
    seeds = [int(part) for part in value.split(",")]
    if len(seeds) == 1:
        with open(plan_path, encoding="utf-8") as handle:
            planned = (yaml.safe_load(handle) or {}).get("seeds") or []
        if 1 <= seeds[0] <= len(planned):
            return planned[: seeds[0]]
    return seeds


def job_spec(plan: dict, name: str, seed: int) -> dict:
    row = dict(plan["rows"][name])
    model = row.pop("model")
    config_dict = {**plan["common"], **row}
    spec = {"row": name, "model": model, "dataset": plan["dataset"], "seed": seed, "config_dict": config_dict,
            "config_files": plan.get("config_files") or []}
    # the defaults a run reads from the plugin's yaml files count too: changing them invalidates finished results
    # a RecBole model has no plugin yaml: its slot hashes as "" (as before base models existed, so results are reused)
    model_yamls = model_yaml_files(model) or [PLUGIN_PROPERTIES_DIR / "model" / f"{model}.yaml"]
    defaults = [path.read_text(encoding="utf-8") if path.is_file() else "" for path in (
        PLUGIN_PROPERTIES_DIR / "overall.yaml", *model_yamls, DATASETS_DIR / f"{plan['dataset']}.yaml")]
    spec["config_hash"] = stable_hash([__version__, model, plan["dataset"], seed, config_dict, spec["config_files"],
                                       defaults])[:16]
    return spec


def run_or_reuse(spec: dict, results_dir: Path, index: str) -> dict:
    out = results_dir / f"{spec['row']}-seed{spec['seed']}.json"
    if out.exists():
        try:
            previous = json.loads(out.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
        if previous.get("config_hash") == spec["config_hash"] and previous.get("status") == "ok":
            print(f"[{index}] {spec['row']} seed {spec['seed']}: reusing finished result {out}", flush=True)
            return previous
    print(f"[{index}] {spec['row']} ({spec['model']}) seed {spec['seed']}: running ...", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
        spec_path = handle.name
    started = time.perf_counter()
    try:
        completed = subprocess.run([sys.executable, "-m", "recbole_m6rec.benchmarks.job", spec_path, str(out)])
    finally:
        os.unlink(spec_path)
    if out.exists():
        record = json.loads(out.read_text(encoding="utf-8"))
    else:  # the job died before writing (killed, out of memory)
        record = {**{k: spec[k] for k in ("row", "model", "dataset", "seed", "config_hash")}, "status": "failed",
                  "error": f"job process exited with code {completed.returncode} without a result"}
        atomic_write_text(out, json.dumps(record, indent=1))
    status = record["status"] if record["status"] != "ok" else (
        f"ok, test {json.dumps(record.get('test'))}")
    print(f"[{index}] {spec['row']} seed {spec['seed']}: {status} ({time.perf_counter() - started:.0f} s)", flush=True)
    return record


def check_one_split(records: list[dict]) -> str:
    fingerprints = {}
    for record in records:
        if record.get("status") == "ok":
            fingerprints.setdefault(record["split_fingerprint"], []).append(f"{record['row']}/seed{record['seed']}")
    if len(fingerprints) > 1:
        detail = "; ".join(f"{fp}: {', '.join(runs)}" for fp, runs in fingerprints.items())
        raise SplitMismatchError(f"refusing to put rows evaluated on different splits in one table: {detail}")
    return next(iter(fingerprints), "")


def metric_names(records: list[dict]) -> list[str]:
    names: list[str] = []
    for record in records:
        for name in (record.get("test") or {}):
            if name not in names:
                names.append(name)
    return names


def results_csv(records: list[dict], metrics: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(BASE_COLUMNS + metrics)
    for r in records:
        extra = r.get("extra") or {}
        writer.writerow([r["row"], r["model"], r["seed"], r["dataset"], r.get("split_fingerprint", ""),
                         r.get("history_mask", ""), r["status"], r.get("train_seconds", ""), r.get("test_seconds", ""),
                         extra.get("item_encoding_seconds", ""), r.get("peak_rss_mb", ""), extra.get("epochs_run", ""),
                         r.get("error", "")] + [(r.get("test") or {}).get(m, "") for m in metrics])
    return buffer.getvalue()


def summarise(records: list[dict], rows: Sequence[str], metrics: list[str]) -> list[dict]:
    summary = []
    for name in rows:
        done = [r for r in records if r["row"] == name and r.get("status") == "ok"]
        failed = [r for r in records if r["row"] == name and r.get("status") != "ok"]
        entry = {"row": name, "runs": len(done), "failed": failed}
        columns = {m: [float(r["test"][m]) for r in done] for m in metrics}
        # training (with its per-epoch validation) plus the final test evaluation
        columns["train_seconds"] = [float(r["train_seconds"]) + float(r.get("test_seconds", 0)) for r in done]
        columns["peak_rss_mb"] = [float(r["peak_rss_mb"]) for r in done]
        for m, values in columns.items():
            entry[m] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else None
        encodings = [r["extra"].get("item_encoding_seconds") for r in done
                     if (r.get("extra") or {}).get("item_encoding_seconds") and not r["extra"].get("encoding_from_cache")]
        entry["item_encoding_seconds"] = encodings[0] if encodings else None
        shares = [r["extra"].get("trainable_share") for r in done if (r.get("extra") or {}).get("trainable_share")]
        entry["trainable_share"] = shares[0] if shares else None
        summary.append(entry)
    return summary


def smaller_is_better(metric: str) -> bool:
    """RecBole's own direction for a metric name such as ``giniindex@10``."""
    from recbole.evaluator.register import metrics_dict

    metric_class = metrics_dict.get(metric.split("@")[0])
    return bool(getattr(metric_class, "smaller", False))


def lower_is_better_clause(metrics: list[str]) -> str:
    """``, lower is better for a, b`` for the metrics RecBole ranks ascending, or nothing when there are none."""
    lower = [m for m in metrics if smaller_is_better(m)]
    return f", lower is better for {', '.join(lower)}" if lower else ""


def is_accuracy_metric(metric: str) -> bool:
    """Top-k accuracy (NDCG, Recall, ...) and labelled metrics (AUC, LogLoss); not coverage or popularity."""
    from recbole.evaluator.base_metric import TopkMetric
    from recbole.evaluator.register import metrics_dict
    from recbole.utils import EvaluatorType

    metric_class = metrics_dict.get(metric.split("@")[0])
    if metric_class is None or issubclass(metric_class, TopkMetric):
        return True
    return metric_class.metric_type == EvaluatorType.VALUE


def markdown_table(summary: list[dict], metrics: list[str], with_costs: bool = True) -> str:
    best = {}
    for m in metrics:
        values = [e[m][0] for e in summary if e.get(m) is not None]
        if values:
            best[m] = min(values) if smaller_is_better(m) else max(values)
    costs = ["train+eval s", "item encoding s", "peak RSS MB"] if with_costs else []
    header = ["model", "seeds"] + metrics + costs
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary:
        if e["runs"] == 0:
            lines.append(f"| {e['row']} | 0 | " + " | ".join(["failed"] * (len(header) - 2)) + " |")
            continue
        cells = [e["row"], str(e["runs"])]
        for m in metrics:
            mean, std = e[m]
            text = f"{mean:.4f} ± {std:.4f}" if e["runs"] > 1 else f"{mean:.4f}"
            cells.append(f"**{text}**" if abs(mean - best.get(m, float("nan"))) < 1e-12 else text)
        if with_costs:
            cells.append(f"{e['train_seconds'][0]:.0f}")
            cells.append(f"{e['item_encoding_seconds']:.0f}" if e["item_encoding_seconds"] else "–")
            cells.append(f"{e['peak_rss_mb'][0]:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_baseline(summary: list[dict], main_metric: str, primary: str = "M6Rec") -> str | None:
    """The best row by mean main metric that is not the primary's model: rows named like the primary up to its first
    '-' (``M6Rec``, ``M6Rec-prior``, ... for ``M6Rec-all-negatives``) are its variants, not baselines."""
    family = primary.split("-")[0]
    baselines = [e for e in summary if e["runs"] > 0 and not e["row"].startswith(family) and e.get(main_metric)]
    if not baselines:
        return None
    pick = min if smaller_is_better(main_metric) else max
    return pick(baselines, key=lambda e: e[main_metric][0])["row"]


def _is_labelled(plan: dict) -> bool:
    mode = (plan["common"].get("eval_args") or {}).get("mode")
    modes = mode.values() if isinstance(mode, dict) else [mode]
    return "labeled" in modes


def split_sentence(fingerprint: str, masks: list[str], labelled: bool) -> str:
    if labelled:
        return (f"Split fingerprint: `{fingerprint}` (identical for every row, labels included; context and "
                "sequential models share the leave-one-out split and are scored on the same labelled samples). "
                "Labelled evaluation: no ranking, so no history masking.")
    return (f"Split fingerprint: `{fingerprint}` (identical for every row; general and sequential models share the "
            f"leave-one-out split). History masking rule for every row: `{', '.join(masks)}` "
            "(see `recbole_m6rec/evaluation.py`).")


def significance_lines(records: list[dict], summary: list[dict], main_metric: str, primary: str = "M6Rec",
                       labelled: bool = False) -> list[str]:
    baseline = best_baseline(summary, main_metric, primary)
    if baseline is None or not any(r["row"] == primary for r in records):
        return []
    test = paired_test(records, primary, baseline, main_metric)
    if test is None and labelled:
        return [f"- Paired test {primary} vs {baseline}: not computed (labelled evaluation scores one sample per user; "
                f"{main_metric} is not a per-user metric)."]
    if test is None:
        return [f"- Paired test {primary} vs {baseline}: no per-user values to pair (sampled evaluation?)."]
    return [f"- {test.sentence()}."]


def ratio_lines(summary: list[dict], main_metric: str, primary: str = "M6Rec", timing_reference: str = "SASRec") -> list[str]:
    by_row = {e["row"]: e for e in summary if e["runs"] > 0}
    if primary not in by_row or by_row[primary][main_metric] is None:
        return []
    lines = []
    baseline = best_baseline(summary, main_metric, primary)
    if baseline is not None:
        best = by_row[baseline]
        ratio = by_row[primary][main_metric][0] / best[main_metric][0] if best[main_metric][0] else float("inf")
        lines.append(f"- {primary} {main_metric} / best baseline ({best['row']}) {main_metric}: **{ratio:.2f}×**")
    cold_metric = "cold_recall@10"
    if by_row[primary].get(cold_metric) is not None:
        for other in (timing_reference, "Pop"):
            if other in by_row and by_row[other].get(cold_metric) is not None:
                mine, theirs = by_row[primary][cold_metric][0], by_row[other][cold_metric][0]
                ratio = f"{mine / theirs:.1f}×" if theirs else "∞ (the other scores 0)"
                lines.append(f"- {primary} {cold_metric} / {other} {cold_metric}: **{ratio}** ({mine:.4f} vs {theirs:.4f})")
    if timing_reference in by_row:
        ratio = by_row[primary]["train_seconds"][0] / by_row[timing_reference]["train_seconds"][0]
        lines.append(f"- {primary} train+eval time / {timing_reference} train+eval time: **{ratio:.2f}×** "
                     "(item encoding reported separately)")
    return lines


def environment() -> str:
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
    return (f"recbole_m6rec {__version__}, recbole {recbole.__version__}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, numpy {numpy.__version__}, pandas {pandas.__version__}, Python "
            f"{platform.python_version()}; CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")


def plots(summary: list[dict], main_metric: str, report_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [e for e in summary if e["runs"] > 0]
    if not done:
        return []
    names = [e["row"] for e in done]
    means = [e[main_metric][0] for e in done]
    stds = [e[main_metric][1] for e in done]
    written = []
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names)), 3.2))
    ax.bar(names, means, yerr=stds, capsize=4, color=["tab:red" if n.startswith("M6Rec") else "tab:blue" for n in names])
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


def write_report(plan: dict, records: list[dict], report_dir: Path, command: str) -> str:
    metrics = metric_names(records)
    fingerprint = check_one_split(records)
    main_metric = str(plan["common"].get("valid_metric", metrics[0] if metrics else "")).lower()
    summary = summarise(records, list(plan["rows"]), metrics)
    accuracy = [m for m in metrics if is_accuracy_metric(m)]
    primary = plan.get("primary", "M6Rec")  # the row compared with the best baseline
    beyond = [m for m in metrics if not is_accuracy_metric(m)]
    atomic_write_text(report_dir / "results.csv", results_csv(records, metrics))
    pictures = plots(summary, main_metric, report_dir) if main_metric in metrics else []
    masks = sorted({r.get("history_mask", "") for r in records if r.get("status") == "ok"})
    labelled = _is_labelled(plan)
    overrides = {name: {k: v for k, v in row.items()} for name, row in plan["rows"].items()}
    failed = [r for r in records if r.get("status") != "ok"]
    text = [
        f"# Leaderboard: {plan['dataset']}",
        "",
        f"Command: `{command}`",
        "",
        split_sentence(fingerprint, masks, labelled),
        "",
        markdown_table(summary, accuracy),
        "",
        "Best mean per column in bold; ± is the standard deviation over seeds "
        f"({', '.join(map(str, plan['seeds']))}). Times are wall-clock seconds of training plus test evaluation "
        "for one seed, on the machine below, one job at a time; M6Rec's one-time item encoding is a separate column.",
        "",
        *ratio_lines(summary, main_metric, primary, plan.get("timing_reference", "SASRec")),
        *significance_lines(records, summary, main_metric, primary, labelled),
        "",
        *[f"![{p}]({p})" for p in pictures],
        "",
        *([f"Beyond accuracy (coverage and popularity bias of the top-k lists; best in bold"
           f"{lower_is_better_clause(beyond)}):", "",
           markdown_table(summary, beyond, with_costs=False), ""] if beyond else []),
        "## Settings",
        "",
        "Shared by every row (`common`):",
        "",
        "```yaml",
        yaml.safe_dump(plan["common"], sort_keys=True).strip(),
        "```",
        "",
        "Per-row overrides (everything else is RecBole's default for that model):",
        "",
        "```yaml",
        yaml.safe_dump(overrides, sort_keys=False).strip(),
        "```",
        "",
        f"Environment: {environment()}",
    ]
    if failed:
        text += ["", "## Failed runs", ""] + [f"- {r['row']} seed {r['seed']}: {r.get('error', '')}" for r in failed]
    report = "\n".join(text) + "\n"
    atomic_write_text(report_dir / "report.md", report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", required=True, help="benchmark yaml (dataset, seeds, common, rows)")
    parser.add_argument("--rows", default=None, help="comma-separated subset of the yaml's rows")
    parser.add_argument("--seeds", default=None,
                        help="a count N (the plan's first N seeds, if it has that many) or comma-separated seeds")
    parser.add_argument("--report", default=None, help="report folder (default: reports/<yaml name>)")
    args, rest = parser.parse_known_args(argv)
    overrides = {key: yaml.safe_load(value) for key, value in parse_cmd_args(rest).items()}
    rows = args.rows.split(",") if args.rows else None
    plan = load_plan(args.config_files, overrides, rows, parse_seeds(args.seeds, args.config_files))
    report_dir = Path(args.report or Path("reports") / Path(args.config_files).stem)
    results_dir = report_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed) for seed in plan["seeds"] for name in plan["rows"]]
    records = []
    for k, (name, seed) in enumerate(jobs, 1):
        records.append(run_or_reuse(job_spec(plan, name, seed), results_dir, f"{k}/{len(jobs)}"))
    command = "python -m recbole_m6rec.benchmarks.leaderboard " + " ".join(argv)
    report = write_report(plan, records, report_dir, command)
    print(report)
    return 0 if all(r.get("status") == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
