"""Run a list of models on one dataset configuration, several seeds, and write a report.

    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml --resume
    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/demo_ml-100k.yaml --report=runs/demo_ml-100k \\
        --reference=reports/demo_ml-100k

The yaml names the dataset, the seeds, the RecBole settings every row shares (``common``) and the rows: a row is a
name plus a RecBole/plugin model and the settings that differ from ``common`` (listed in the report). A plan with a
``tuning`` block (``{trials, seed, algo}``) first tunes every row that declares a ``search`` space on validation, at
the tuning seed (:mod:`recbole_m6rec.benchmarks.tuning`), then runs the chosen settings on every seed.

Each (row, seed) runs in its own process (:mod:`recbole_m6rec.benchmarks.job`); its result, with its provenance
(:mod:`recbole_m6rec.benchmarks.provenance`), is written as soon as it finishes; a failing row is recorded with its
error and the others go on. A report folder that already holds results is refused unless ``--resume`` (reuse the
finished results that are still current) or ``--fresh`` (delete them first) is given. A finished result is reused
only when its settings hash matches and the code, data and library versions it recorded are unchanged; otherwise
it reruns and the log says why. Rows whose split fingerprints differ are refused: one table, one split.
A plan's optional ``method`` (text) is printed under the command. ``report.md`` keeps everything below
:data:`NOTES_MARKER` when it is rewritten.
Extra ``--key=value`` arguments override ``common``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from recbole_m6rec import __version__
from recbole_m6rec.atomic import atomic_write_bytes, atomic_write_text, stable_hash
from recbole_m6rec.benchmarks import provenance
from recbole_m6rec.config import PLUGIN_PROPERTIES_DIR, model_yaml_files, parse_cmd_args
from recbole_m6rec.datasets import DATASETS_DIR

REQUIRED_KEYS = ("dataset", "seeds", "common", "rows")
ROW_KEYS_NOT_SETTINGS = ("model", "search")  # a row's keys that are not RecBole settings
BASE_COLUMNS = [
    "model",
    "recbole_model",
    "seed",
    "dataset",
    "split_fingerprint",
    "history_mask",
    "status",
    "train_seconds",
    "test_seconds",
    "item_encoding_seconds",
    "peak_rss_mb",
    "epochs_run",
    "best_epoch",
    "epoch_cap",
    "hit_cap",
    "code_hash",
    "git_commit",
    "git_dirty",
    "error",
]
NOTES_MARKER = "<!-- Notes below this line are written by hand and kept when the report is regenerated. -->"
REPORT_FILES = ("report.md", "results.csv")  # written by this command; kept (with the notes) by --fresh


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


def row_settings(row: dict) -> dict:
    """A row's RecBole settings: everything but its model name and search space."""
    return {k: v for k, v in row.items() if k not in ROW_KEYS_NOT_SETTINGS}


def job_spec(plan: dict, name: str, seed: int, overrides: dict | None = None) -> dict:
    """What one job runs, and ``config_hash``: a hash of its settings (code, data and libraries are the
    provenance's part, checked separately)."""
    row = plan["rows"][name]
    model = row["model"]
    config_dict = {**plan["common"], **row_settings(row), **(overrides or {})}
    spec = {
        "row": name,
        "model": model,
        "dataset": plan["dataset"],
        "seed": seed,
        "config_dict": config_dict,
        "config_files": plan.get("config_files") or [],
    }
    # the defaults a run reads from the plugin's yaml files count too: changing them invalidates finished results
    model_yamls = model_yaml_files(model) or [PLUGIN_PROPERTIES_DIR / "model" / f"{model}.yaml"]
    defaults = [
        path.read_text(encoding="utf-8") if path.is_file() else ""
        for path in (PLUGIN_PROPERTIES_DIR / "overall.yaml", *model_yamls, DATASETS_DIR / f"{plan['dataset']}.yaml")
    ]
    spec["config_hash"] = stable_hash([model, plan["dataset"], seed, config_dict, spec["config_files"], defaults])[:16]
    return spec


def reuse_verdict(previous: dict, spec: dict) -> str | None:
    """None when ``previous`` can stand for a run of ``spec`` now; otherwise why it cannot."""
    if previous.get("status") != "ok":
        return f"the earlier run {previous.get('status', 'did not finish')}"
    if previous.get("config_hash") != spec["config_hash"]:
        return "its settings changed"
    reasons = provenance.stale_reasons(previous)
    return "; ".join(reasons) if reasons else None


def run_or_reuse(spec: dict, out: Path, index: str, resume: bool = True, timeout: float | None = None) -> dict:
    """The result of ``spec`` in ``out``: reused when current (and ``resume``), otherwise run in a job process.
    With ``timeout`` (seconds), a job still running then is stopped and recorded with status ``cut`` (its time
    budget ran out; not a crash). Each job's temporary files (checkpoints) live in a folder removed after it, so
    a stopped job leaves nothing behind."""
    label = f"[{index}] {spec['row']} seed {spec['seed']}"
    if out.exists() and resume:
        try:
            previous = json.loads(out.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
        why = reuse_verdict(previous, spec)
        if why is None:
            print(f"{label}: reusing finished result {out}", flush=True)
            return previous
        print(f"{label}: not reusing {out}: {why}", flush=True)
    print(f"{label} ({spec['model']}): running ...", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
        spec_path = handle.name
    started = time.perf_counter()
    returncode = None
    try:
        with tempfile.TemporaryDirectory(prefix="m6rec-job-") as scratch:
            returncode = subprocess.run(
                [sys.executable, "-m", "recbole_m6rec.benchmarks.job", spec_path, str(out)],
                env={**os.environ, "TMPDIR": scratch},
                timeout=timeout,
            ).returncode
    except subprocess.TimeoutExpired:  # subprocess.run has killed the job
        pass
    finally:
        os.unlink(spec_path)
    record = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    if record.get("config_hash") != spec["config_hash"]:  # the job died before writing (killed, out of memory)
        record = {k: spec[k] for k in ("row", "model", "dataset", "seed", "config_hash")}
        if returncode is None:
            record.update(
                status="cut",
                budget_seconds=round(timeout, 1),
                error=f"stopped by its time budget after {timeout:.0f} s, before it finished",
            )
        else:
            record.update(status="failed", error=f"job process exited with code {returncode} without a result")
        atomic_write_text(out, json.dumps(record, indent=1))
    status = record["status"] if record["status"] != "ok" else f"ok, test {json.dumps(record.get('test'))}"
    print(f"{label}: {status} ({time.perf_counter() - started:.0f} s)", flush=True)
    return record


# --- tuning ---------------------------------------------------------------------------------------------------------
def tune(plan: dict, report_dir: Path, resume: bool) -> dict[str, dict]:
    """Tune every row with a ``search`` space (when the plan has a ``tuning`` block) and merge the chosen settings
    into the plan's rows. Returns ``{row: tuning record}``; rows that could not be tuned get ``{"error": ...}``."""
    searched = [name for name, row in plan["rows"].items() if row.get("search")]
    if not searched:
        return {}
    if "tuning" not in plan:
        print(
            f"rows {', '.join(searched)} declare a search space, but the plan has no `tuning` block: they run "
            "untuned, with the settings they list",
            flush=True,
        )
        return {}
    try:
        from recbole_m6rec.benchmarks.tuning import tune_row
    except ImportError as error:
        print(f"tuning skipped ({error}): rows {', '.join(searched)} run untuned", flush=True)
        return {name: {"error": f"tuning unavailable: {error}"} for name in searched}
    trials_dir = report_dir / "tuning"
    tuned = {}
    for name in searched:
        seed = plan["tuning"]["seed"]
        count = {"n": 0}

        def run_trial(overrides: dict, name=name, seed=seed, count=count) -> dict:
            count["n"] += 1
            spec = job_spec(plan, name, seed, overrides)
            out = trials_dir / name / f"trial-{spec['config_hash']}.json"
            record = run_or_reuse(spec, out, f"tuning {name} {count['n']}/{plan['tuning'].get('trials')}", resume)
            return {**record, "best_valid_result": record.get("valid") or {}, "overrides": overrides}

        print(
            f"tuning {name} on valid {plan['common'].get('valid_metric')}, seed {seed}: "
            f"{plan['tuning'].get('trials')} trials",
            flush=True,
        )
        try:
            record = tune_row(plan, name, run_trial, trials_dir)
        except (RuntimeError, ValueError) as error:
            print(f"tuning {name} failed ({error}): it runs untuned", flush=True)
            tuned[name] = {"error": str(error)}
            continue
        plan["rows"][name] = {**plan["rows"][name], **record["best_params"]}
        tuned[name] = record
        print(f"tuning {name}: chose {record['best_params']} (valid {record.get('best_valid')})", flush=True)
    return tuned


def adopt_tuning_trial(spec: dict, trial: Path, out: Path) -> None:
    """The winning trial ran this very job (same settings at the tuning seed): copy it instead of rerunning it."""
    if out.exists() or not trial.is_file():
        return
    record = json.loads(trial.read_text(encoding="utf-8"))
    if reuse_verdict(record, spec) is None:
        atomic_write_text(out, json.dumps(record, indent=1, default=str))


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
        for name in record.get("test") or {}:
            if name not in names:
                names.append(name)
    return names


def _epochs_run(record: dict):
    return record.get("epochs_run", (record.get("extra") or {}).get("epochs_run", ""))


def results_csv(records: list[dict], metrics: list[str], main_metric: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(BASE_COLUMNS + [f"valid_{main_metric}"] + metrics)
    for r in records:
        extra = r.get("extra") or {}
        origin = r.get("provenance") or {}
        writer.writerow(
            [
                r["row"],
                r["model"],
                r["seed"],
                r["dataset"],
                r.get("split_fingerprint", ""),
                r.get("history_mask", ""),
                r["status"],
                r.get("train_seconds", ""),
                r.get("test_seconds", ""),
                extra.get("item_encoding_seconds", ""),
                r.get("peak_rss_mb", ""),
                _epochs_run(r),
                r.get("best_epoch", ""),
                r.get("epoch_cap", ""),
                r.get("hit_cap", ""),
                origin.get("code_hash", ""),
                origin.get("git_commit", ""),
                origin.get("git_dirty", ""),
                r.get("error", ""),
            ]
            + [(r.get("valid") or {}).get(main_metric, "")]
            + [(r.get("test") or {}).get(m, "") for m in metrics]
        )
    return buffer.getvalue()


def summarise(records: list[dict], rows: Sequence[str], metrics: list[str], main_metric: str = "") -> list[dict]:
    summary = []
    for name in rows:
        done = [r for r in records if r["row"] == name and r.get("status") == "ok"]
        failed = [r for r in records if r["row"] == name and r.get("status") != "ok"]
        entry = {"row": name, "runs": len(done), "failed": failed}
        columns = {m: [float(r["test"][m]) for r in done] for m in metrics}
        columns["valid"] = [float(r["valid"][main_metric]) for r in done if main_metric in (r.get("valid") or {})]
        # training (with its per-epoch validation) plus the final test evaluation
        columns["train_seconds"] = [float(r["train_seconds"]) + float(r.get("test_seconds", 0)) for r in done]
        columns["peak_rss_mb"] = [float(r["peak_rss_mb"]) for r in done]
        for m, values in columns.items():
            entry[m] = (
                (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else None
            )
        encodings = [
            r["extra"].get("item_encoding_seconds")
            for r in done
            if (r.get("extra") or {}).get("item_encoding_seconds") and not r["extra"].get("encoding_from_cache")
        ]
        entry["item_encoding_seconds"] = encodings[0] if encodings else None
        shares = [r["extra"].get("trainable_share") for r in done if (r.get("extra") or {}).get("trainable_share")]
        entry["trainable_share"] = shares[0] if shares else None
        entry["epochs"] = [
            (r.get("trains", True), _epochs_run(r), r.get("best_epoch"), bool(r.get("hit_cap"))) for r in done
        ]
        entry["code"] = sorted({provenance.short((r.get("provenance") or {}).get("code_hash")) for r in done})
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


CAP_MARK = "†"


def epochs_cell(epochs: list[tuple]) -> str:
    """``12 (7)`` = 12 epochs run, best at epoch 7 (0-based, RecBole's numbering); ``†`` when a seed stopped at its
    epoch cap; seeds separated by ``/``; ``–`` for a model that trains nothing."""
    if not epochs or not any(trains for trains, *_ in epochs):
        return "–"
    cells = []
    for _trains, run, best, hit_cap in epochs:
        cells.append(f"{run}{CAP_MARK if hit_cap else ''}" + (f" ({best})" if best is not None else ""))
    return " / ".join(cells)


def _mean_cell(entry: dict, key: str, best: float | None) -> str:
    mean, std = entry[key]
    text = f"{mean:.4f} ± {std:.4f}" if entry["runs"] > 1 else f"{mean:.4f}"
    return f"**{text}**" if best is not None and abs(mean - best) < 1e-12 else text


def _best(summary: list[dict], key: str, metric: str) -> float | None:
    values = [e[key][0] for e in summary if e.get(key) is not None]
    if not values:
        return None
    return min(values) if smaller_is_better(metric) else max(values)


def markdown_table(summary: list[dict], metrics: list[str], with_costs: bool = True, main_metric: str = "") -> str:
    """One line per row: seeds, valid main metric (what selection uses), test metrics, epochs, code, costs."""
    with_valid = bool(main_metric) and any(e.get("valid") for e in summary)
    best = {m: _best(summary, m, m) for m in metrics}
    best_valid = _best(summary, "valid", main_metric) if with_valid else None
    costs = ["train+eval s", "item encoding s", "peak RSS MB"] if with_costs else []
    header = (
        ["model", "seeds"]
        + ([f"valid {main_metric}"] if with_valid else [])
        + [f"test {m}" for m in metrics]
        + (["epochs (best)", "code"] if with_costs else [])
        + costs
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary:
        if e["runs"] == 0:
            status = "/".join(sorted({r.get("status", "failed") for r in e["failed"]})) or "failed"
            lines.append(f"| {e['row']} | 0 | " + " | ".join([status] * (len(header) - 2)) + " |")
            continue
        cells = [e["row"], str(e["runs"])]
        if with_valid:
            cells.append(_mean_cell(e, "valid", best_valid) if e.get("valid") else "–")
        cells += [_mean_cell(e, m, best[m]) for m in metrics]
        if with_costs:
            cells.append(epochs_cell(e["epochs"]))
            cells.append(" / ".join(f"`{c}`" for c in e["code"]))
            cells.append(f"{e['train_seconds'][0]:.0f}")
            cells.append(f"{e['item_encoding_seconds']:.0f}" if e["item_encoding_seconds"] else "–")
            cells.append(f"{e['peak_rss_mb'][0]:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- selection on validation --------------------------------------------------------------------------------------
def family_of(primary: str) -> str:
    """Rows named like the primary up to its first '-' (``M6Rec``, ``M6Rec-prior``, ... for ``M6Rec-hybrid``) are
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


def _is_labelled(plan: dict) -> bool:
    mode = (plan["common"].get("eval_args") or {}).get("mode")
    modes = mode.values() if isinstance(mode, dict) else [mode]
    return "labeled" in modes


def split_sentence(fingerprint: str, masks: list[str], labelled: bool) -> str:
    if labelled:
        return (
            f"Split fingerprint: `{fingerprint}` (identical for every row, labels included; context and "
            "sequential models share the split and are scored on the same labelled samples). "
            "Labelled evaluation: no ranking, so no history masking."
        )
    return (
        f"Split fingerprint: `{fingerprint}` (identical for every row; general and sequential models share the "
        f"leave-one-out split). History masking rule for every row: `{', '.join(masks)}` "
        "(see `recbole_m6rec/evaluation.py`)."
    )


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
        from recbole_m6rec.benchmarks.significance import holm, paired_ratio_ci
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
    adjusted = holm({row: r["p_value"] for row, r in results.items()})
    lines = [
        f"- Test {main_metric} of {chosen} / each baseline (ratio of means over users and seeds, 95% bootstrap "
        f"interval resampling users, p for ratio = 1 Holm-adjusted over {len(results)} comparisons):"
    ]
    for row, r in results.items():
        star = " (the best baseline on valid)" if row == best else ""
        lines.append(
            f"  - vs {row}{star}: **{r['ratio']:.3f}×** [{r['ci_low']:.3f}, {r['ci_high']:.3f}], "
            f"p = {r['p_value']:.3g}, Holm p = {adjusted[row]:.3g}"
        )
    return lines


def _per_sample_by_seed(records: list[dict], row: str) -> dict:
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
    from recbole_m6rec.benchmarks.significance import auc_ci, holm, paired_auc_over_seeds

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
    adjusted = holm({row: r["p_value"] for row, r in results.items()})
    lines.append(
        f"- Test AUC of {chosen} − each baseline (DeLong's paired test on the same samples, per seed; mean difference, "
        "95% interval from the mean per-seed standard error, an upper bound whatever the seeds' correlation; p for "
        f"difference = 0 Holm-adjusted over {len(results)} comparisons):"
    )
    for row, r in results.items():
        star = " (the best baseline on valid)" if row == best else ""
        lines.append(
            f"  - vs {row}{star}: **{r['diff']:+.4f}** [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] over "
            f"{r['seeds']} seed(s), p = {r['p_value']:.3g}, Holm p = {adjusted[row]:.3g}"
        )
    return lines


def ratio_lines(
    summary: list[dict], main_metric: str, primary: str = "M6Rec", timing_reference: str = "SASRec"
) -> list[str]:
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


def convergence_lines(records: list[dict]) -> list[str]:
    capped = sorted({f"{r['row']} (seed {r['seed']})" for r in records if r.get("status") == "ok" and r.get("hit_cap")})
    if not capped:
        return ["Every trained row stopped early on its validation metric, before its epoch cap."]
    return [f"{CAP_MARK} Stopped at its epoch cap, possibly before converging: {', '.join(capped)}."]


# --- provenance -----------------------------------------------------------------------------------------------------
def provenance_lines(records: list[dict]) -> list[str]:
    """Which commit, working tree and libraries the rows ran, and which shared code files differ between rows."""
    done = [r for r in records if r.get("status") == "ok"]
    origins = [r.get("provenance") or {} for r in done]
    missing = [f"{r['row']}/seed{r['seed']}" for r, o in zip(done, origins) if not o.get("code")]
    commits = sorted({(o.get("git_commit") or "unknown")[:10] for o in origins if o.get("code")})
    dirty = [f"{r['row']}/seed{r['seed']}" for r, o in zip(done, origins) if o.get("dirty_code")]
    versions = sorted(
        {
            json.dumps({k: v for k, v in (o.get("versions") or {}).items()}, sort_keys=True)
            for o in origins
            if o.get("code")
        }
    )
    lines = []
    if commits:
        tree = sum(bool(o.get("git_dirty")) for o in origins if o.get("code"))
        lines.append(
            f"- Commit{'s' if len(commits) > 1 else ''}: {', '.join(f'`{c}`' for c in commits)}; working "
            f"tree dirty (any uncommitted change) for {tree} of {len(origins) - len(missing)} runs."
        )
        lines.append(
            "- Runs whose own code files differ from their commit: " + (", ".join(dirty) if dirty else "none") + "."
        )
    for text in versions:
        lines.append("- Libraries: " + ", ".join(f"{k} {v}" for k, v in json.loads(text).items()) + ".")
    if len(versions) > 1:
        lines.append("- **Rows ran different library versions** (see each result's `provenance.versions`).")
    if missing:
        lines.append(f"- **No provenance recorded** (older results): {', '.join(missing)}.")
    # files shared by rows, with different contents
    contents: dict[str, dict[str, set]] = {}
    for r, o in zip(done, origins):
        for path, digest in (o.get("code") or {}).items():
            contents.setdefault(path, {}).setdefault(digest, set()).add(r["row"])
    differing = {path: by_hash for path, by_hash in contents.items() if len(by_hash) > 1}
    if differing:
        lines.append("- **Rows ran different versions of shared code files**:")
        for path, by_hash in sorted(differing.items()):
            parts = "; ".join(f"`{(h or 'none')[:8]}`: {', '.join(sorted(rows))}" for h, rows in by_hash.items())
            lines.append(f"  - `{path}`: {parts}")
    elif contents:
        lines.append(
            "- Every plugin file that two runs share has the same content in both; the `code` column hashes "
            "the plugin files each row imported (baselines import none of the language-model code)."
        )
    return lines


def tuning_lines(tuned: dict[str, dict], main_metric: str) -> list[str]:
    if not tuned:
        return []
    lines = [
        "## Tuning",
        "",
        f"Each tuned row's trials at the tuning seed, selected on valid {main_metric}; the "
        "chosen settings then ran on every seed (already in the per-row settings below).",
        "",
    ]
    for row, record in tuned.items():
        if record.get("error"):
            lines += [f"- {row}: not tuned ({record['error']}).", ""]
            continue
        lines.append(
            f"{row} ({record.get('algo')}, {len(record.get('trials', []))} trials, space "
            f"`{json.dumps(record.get('space'))}`): chose `{json.dumps(record.get('best_params'))}`"
        )
        lines.append("")
        lines.append(f"| trial | settings | status | valid {main_metric} | epochs |")
        lines.append("|---|---|---|---|---|")
        for trial in record.get("trials", []):
            value = (trial.get("valid") or {}).get(main_metric)
            lines.append(
                f"| {trial.get('index')} | `{json.dumps(trial.get('params'))}` | {trial.get('status')} | "
                f"{'–' if value is None else f'{value:.4f}'} | {trial.get('epochs_run', '–')} |"
            )
        lines.append("")
    return lines


# --- a reference run (the committed report) next to this one ---------------------------------------------------------
def load_results(report_dir: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((Path(report_dir) / "results").glob("*.json"))]


def reference_lines(summary: list[dict], reference_dir: Path, main_metric: str) -> list[str]:
    reference = [r for r in load_results(reference_dir) if r.get("status") == "ok"]
    if not reference:
        return [f"No finished results in the reference folder `{reference_dir}`."]
    lines = [
        f"This run next to the reference in `{reference_dir}` (mean over seeds; the reference may come from "
        "other code and settings, see its report):",
        "",
        f"| model | valid {main_metric} | test {main_metric} | reference valid | reference test | "
        "train+eval s | reference s |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        theirs = [r for r in reference if r["row"] == e["row"]]

        def mean(values):
            values = [v for v in values if v is not None]
            return f"{statistics.fmean(values):.4f}" if values else "–"

        ref_valid = mean([(r.get("valid") or {}).get(main_metric) for r in theirs])
        ref_test = mean([(r.get("test") or {}).get(main_metric) for r in theirs])
        ref_time = [float(r["train_seconds"]) + float(r.get("test_seconds", 0)) for r in theirs]
        mine, valid, seconds = e.get(main_metric), e.get("valid"), e.get("train_seconds")
        cells = [
            e["row"],
            f"{valid[0]:.4f}" if valid else "–",
            f"{mine[0]:.4f}" if mine else "–",
            ref_valid,
            ref_test,
            f"{seconds[0]:.0f}" if seconds else "–",
            f"{statistics.fmean(ref_time):.0f}" if ref_time else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
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
    return (
        f"recbole_m6rec {__version__}, recbole {recbole.__version__}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, numpy {numpy.__version__}, pandas {pandas.__version__}, Python "
        f"{platform.python_version()}; CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )


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


def write_report(
    plan: dict,
    records: list[dict],
    report_dir: Path,
    command: str,
    tuned: dict | None = None,
    reference: Path | None = None,
) -> str:
    metrics = metric_names(records)
    fingerprint = check_one_split(records)
    main_metric = str(plan["common"].get("valid_metric", metrics[0] if metrics else "")).lower()
    summary = summarise(records, list(plan["rows"]), metrics, main_metric)
    accuracy = [m for m in metrics if is_accuracy_metric(m)]
    primary = plan.get("primary", "M6Rec")  # its family's best row on valid is compared with the best baseline
    beyond = [m for m in metrics if not is_accuracy_metric(m)]
    atomic_write_text(report_dir / "results.csv", results_csv(records, metrics, main_metric))
    pictures = plots(summary, main_metric, report_dir) if main_metric in metrics else []
    masks = sorted({r.get("history_mask", "") for r in records if r.get("status") == "ok"})
    labelled = _is_labelled(plan)
    overrides = {name: dict(row) for name, row in plan["rows"].items()}
    failed = [r for r in records if r.get("status") != "ok"]
    text = [
        f"# Leaderboard: {plan['dataset']}",
        "",
        f"Command: `{command}`",
        "",
        *([str(plan["method"]).strip(), ""] if plan.get("method") else []),
        "Provenance (per run in `results/<row>-seed<N>.json`, key `provenance`):",
        "",
        *provenance_lines(records),
        "",
        split_sentence(fingerprint, masks, labelled),
        "",
        markdown_table(summary, accuracy, main_metric=main_metric),
        "",
        f"Best mean per column in bold; ± is the standard deviation over seeds "
        f"({', '.join(map(str, plan['seeds']))}). `valid {main_metric}` is the best epoch's validation score, the "
        "only number used to choose (epochs, tuned settings, the rows compared below). `epochs (best)`: epochs run "
        f"and the best epoch (0-based), per seed. `code`: hash of the plugin source files the row ran. Times are "
        "wall-clock seconds of training plus test evaluation for one seed, on the machine below, one job at a "
        "time; M6Rec's one-time item encoding is a separate column.",
        "",
        *convergence_lines(records),
        "",
        *ratio_lines(summary, main_metric, primary, plan.get("timing_reference", "SASRec")),
        *significance_lines(records, summary, main_metric, primary, labelled),
        "",
        *[f"![{p}]({p})" for p in pictures],
        "",
        *(
            [
                f"Beyond accuracy (coverage and popularity bias of the top-k lists on test; best in bold"
                f"{lower_is_better_clause(beyond)}):",
                "",
                markdown_table(summary, beyond, with_costs=False),
                "",
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
        "Per-row overrides (tuned settings included; everything else is RecBole's default for that model):",
        "",
        "```yaml",
        yaml.safe_dump(overrides, sort_keys=False).strip(),
        "```",
        "",
        *([f"Tuning: `{json.dumps(plan['tuning'])}`", ""] if plan.get("tuning") else []),
        f"Environment: {environment()}",
    ]
    if failed:
        text += ["", "## Runs without a result", ""] + [
            f"- {r['row']} seed {r['seed']} ({r.get('status')}): " f"{r.get('error', '')}" for r in failed
        ]
    report = "\n".join(text) + "\n\n" + kept_notes(report_dir / "report.md")
    atomic_write_text(report_dir / "report.md", report)
    return report


def prepare_report_dir(report_dir: Path, resume: bool, fresh: bool) -> None:
    """Refuse a folder with earlier results unless told to resume from them or to delete them."""
    earlier = [p for p in (report_dir / "results", report_dir / "tuning") if p.is_dir() and any(p.iterdir())]
    if earlier and fresh:
        for path in earlier:
            shutil.rmtree(path)
        print(f"{report_dir}: deleted the earlier results (--fresh)", flush=True)
    elif earlier and not resume:
        raise SystemExit(
            f"'{report_dir}' already holds results ({', '.join(str(p) for p in earlier)}). Pass "
            "--resume to reuse the finished ones that are still current (same settings, code, data "
            "and libraries), --fresh to delete them and run everything, or --report=<another folder>."
        )
    (report_dir / "results").mkdir(parents=True, exist_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", required=True, help="benchmark yaml (dataset, seeds, common, rows)")
    parser.add_argument("--rows", default=None, help="comma-separated subset of the yaml's rows")
    parser.add_argument(
        "--seeds",
        default=None,
        help="a count N (the plan's first N seeds, if it has that many) or comma-separated seeds",
    )
    parser.add_argument("--report", default=None, help="report folder (default: reports/<yaml name>)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="reuse the folder's finished results that are still current (an interrupted run)",
    )
    resume.add_argument("--fresh", action="store_true", help="delete the folder's earlier results first")
    parser.add_argument(
        "--no_tuning",
        action="store_true",
        help="ignore the plan's tuning block: every row runs with the settings it lists",
    )
    parser.add_argument(
        "--reference", default=None, help="a report folder (e.g. the committed one) to show next to this run's numbers"
    )
    args, rest = parser.parse_known_args(argv)
    overrides = {key: yaml.safe_load(value) for key, value in parse_cmd_args(rest).items()}
    rows = args.rows.split(",") if args.rows else None
    plan = load_plan(args.config_files, overrides, rows, parse_seeds(args.seeds, args.config_files))
    if args.no_tuning:
        plan.pop("tuning", None)
    report_dir = Path(args.report or Path("reports") / Path(args.config_files).stem)
    prepare_report_dir(report_dir, args.resume, args.fresh)
    tuned = tune(plan, report_dir, resume=True)
    jobs = [(name, seed) for seed in plan["seeds"] for name in plan["rows"]]
    records = []
    for k, (name, seed) in enumerate(jobs, 1):
        spec = job_spec(plan, name, seed)
        out = report_dir / "results" / f"{name}-seed{seed}.json"
        adopt_tuning_trial(spec, report_dir / "tuning" / name / f"trial-{spec['config_hash']}.json", out)
        records.append(run_or_reuse(spec, out, f"{k}/{len(jobs)}"))
    command = "python -m recbole_m6rec.benchmarks.leaderboard " + " ".join(argv)
    report = write_report(plan, records, report_dir, command, tuned, Path(args.reference) if args.reference else None)
    print(report)
    return 0 if all(r.get("status") == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
