"""The leaderboard's numbers per row: the split check, ``results.csv`` (one line per run), the per-row summary (mean
and standard deviation over seeds) and the markdown tables built from it.

Metric directions are RecBole's own (:func:`smaller_is_better`); the best mean of each validation column, among the
rows that ran the most seeds, is set in bold (test columns are not marked: test chooses nothing).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence

from recbole_m6rec.benchmarks import provenance

__all__ = [
    "BASE_COLUMNS",
    "CAP_MARK",
    "VALID_PREFIX",
    "SplitMismatchError",
    "check_one_split",
    "metric_names",
    "results_csv",
    "run_seconds",
    "summarise",
    "seed_list",
    "smaller_is_better",
    "lower_is_better_clause",
    "bold_among",
    "json_finite",
    "run_labels",
    "is_accuracy_metric",
    "epochs_cell",
    "record_trains",
    "trains_nothing",
    "trainable_cell",
    "markdown_table",
]

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
COLD = "cold_recall@10"  # a cold-item plan's own question: the cold targets found in the top 10
VALID_PREFIX = "valid:"  # a summary entry's key for a metric's validation mean (the bare name is test's)
CAP_MARK = "†"  # a seed that stopped at its epoch cap (table and convergence line)
NO_TRAINING_TRAINER = "recbole_m6rec.plugin_trainer:NoTrainingTrainer"


class SplitMismatchError(RuntimeError):
    """Rows of one report were evaluated on different splits."""


def check_one_split(records: list[dict]) -> str:
    """The split fingerprint every finished run shares ("" when none finished); runs on different splits are
    refused (:class:`SplitMismatchError`): one table, one split."""
    fingerprints = {}
    for record in records:
        if record.get("status") == "ok":
            fingerprints.setdefault(record["split_fingerprint"], []).append(f"{record['row']}/seed{record['seed']}")
    if len(fingerprints) > 1:
        detail = "; ".join(f"{fp}: {', '.join(runs)}" for fp, runs in fingerprints.items())
        raise SplitMismatchError(f"refusing to put rows evaluated on different splits in one table: {detail}")
    return next(iter(fingerprints), "")


def metric_names(records: list[dict]) -> list[str]:
    """The test metrics of the runs, in the order they first appear."""
    names: list[str] = []
    for record in records:
        for name in record.get("test") or {}:
            if name not in names:
                names.append(name)
    return names


def trains_nothing(model: str) -> bool:
    """A model the plugin runs as it is, its trainer evaluating without an epoch (MostPop, LikeRate,
    M6RecZeroShot)."""
    from recbole_m6rec import registry

    return registry.PLUGIN_TRAINERS.get(model) == NO_TRAINING_TRAINER


def record_trains(record: dict) -> bool:
    """Whether a result's model trained. By its trainer too: a result can say it trained when its model did not
    report otherwise (M6RecZeroShot's), though no epoch ran."""
    return bool(record.get("trains", True)) and not trains_nothing(str(record.get("model", "")))


def _epochs_run(record: dict):  # results of either layout: top level or under extra
    return record.get("epochs_run", (record.get("extra") or {}).get("epochs_run", ""))


def results_csv(records: list[dict], metrics: list[str], main_metric: str) -> str:
    """``results.csv``: one line per run (failed ones included) with its costs, provenance and metrics."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(BASE_COLUMNS + [f"valid_{main_metric}"] + metrics)
    for r in records:
        extra = r.get("extra") or {}
        origin = r.get("provenance") or {}
        trained = record_trains(r)  # no epoch facts for a model run as it is, whatever an older result says
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
                _epochs_run(r) if trained else 0,
                r.get("best_epoch", "") if trained else "",
                r.get("epoch_cap", "") if trained else "",
                r.get("hit_cap", "") if trained else False,
                origin.get("code_hash", ""),
                origin.get("git_commit", ""),
                origin.get("git_dirty", ""),
                r.get("error", ""),
            ]
            + [(r.get("valid") or {}).get(main_metric, "")]
            + [(r.get("test") or {}).get(m, "") for m in metrics]
        )
    return buffer.getvalue()


def run_seconds(record: dict) -> float:
    """A finished run's training (with its per-epoch validation) plus test time. A run continued after an
    interruption measured only its continued epochs: their time is scaled to all the epochs it ran."""
    train = float(record["train_seconds"])
    resumed, epochs = record.get("resumed_from_epoch") or 0, _epochs_run(record)
    if resumed and isinstance(epochs, int) and epochs > resumed:
        train *= epochs / (epochs - resumed)
    return train + float(record.get("test_seconds", 0))


def cpu_of(record: dict, with_features: bool = False) -> str | None:
    """The CPU a result ran on, optionally with whether it has bfloat16 instructions and which of torch's CPU kernel
    sets ran (where recorded); ``None`` for a result older than that record."""
    runtime = (record.get("provenance") or {}).get("runtime") or {}
    if "cpu" not in runtime:
        return None
    if not with_features:
        return runtime["cpu"] or "unnamed CPU"
    bf16 = {True: ", bfloat16 instructions", False: ", no bfloat16 instructions"}.get(runtime.get("cpu_bfloat16"), "")
    kernels = f", torch's {runtime['cpu_capability']} kernels" if runtime.get("cpu_capability") else ""
    return (runtime["cpu"] or "unnamed CPU") + bf16 + kernels


def runs_of(records: list[dict]) -> dict[int, tuple[str | None, str | None]]:
    """What each seed's finished run ran: its settings hash (which covers the seed) and the hash of the plugin code
    it imported; ``None`` where the result does not record one."""
    return {r["seed"]: (r.get("config_hash"), (r.get("provenance") or {}).get("code_hash")) for r in records}


def summarise(records: list[dict], rows: Sequence[str], metrics: list[str], main_metric: str = "") -> list[dict]:
    """One entry per row in ``rows``: its finished runs' (mean, std) of each test metric, of the valid
    ``main_metric`` (``valid``), time and memory; its failed runs, epochs, item encoding time and code hashes."""
    summary = []
    for name in rows:
        done = [r for r in records if r["row"] == name and r.get("status") == "ok"]
        failed = [r for r in records if r["row"] == name and r.get("status") != "ok"]
        models = {str(r.get("model", "")) for r in done}
        entry = {"row": name, "runs": len(done), "failed": failed, "model": models.pop() if len(models) == 1 else None}
        # a metric a run did not record (an older result beside newer ones) is averaged over the runs that did
        columns = {m: [float(r["test"][m]) for r in done if m in (r.get("test") or {})] for m in metrics}
        columns["valid"] = [float(r["valid"][main_metric]) for r in done if main_metric in (r.get("valid") or {})]
        for m in metrics:  # every metric at the best epoch's validation, for the tables' validation twins
            columns[f"{VALID_PREFIX}{m}"] = [v for r in done if (v := valid_value(r, m)) is not None]
        columns["train_seconds"] = [run_seconds(r) for r in done]
        columns["peak_rss_mb"] = [float(r["peak_rss_mb"]) for r in done]
        entry["counts"] = {m: len(values) for m, values in columns.items()}
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
        cold_users = [r["extra"]["cold_test_users"] for r in done if (r.get("extra") or {}).get("cold_test_users")]
        entry["cold_test_users"] = cold_users[0] if cold_users else None
        # per seed, for comparisons between rows that ran different seeds
        entry["valid_by_seed"] = {r["seed"]: float(r["valid"][main_metric]) for r in done if main_metric in r["valid"]}
        entry["test_by_seed"] = {r["seed"]: float(r["test"][main_metric]) for r in done if main_metric in r["test"]}
        entry["cold_by_seed"] = {r["seed"]: float(r["test"][COLD]) for r in done if COLD in r["test"]}
        entry["time_by_seed"] = {r["seed"]: run_seconds(r) for r in done}
        entry["cpu_by_seed"] = {r["seed"]: cpu_of(r) for r in done}
        entry["time_scaled_seeds"] = {r["seed"] for r in done if r.get("resumed_from_epoch")}
        entry["epochs_by_seed"] = {
            r["seed"]: _epochs_run(r) for r in done if record_trains(r) and isinstance(_epochs_run(r), int)
        }
        entry["epochs"] = [
            (record_trains(r), _epochs_run(r), r.get("best_epoch"), bool(r.get("hit_cap"))) for r in done
        ]
        entry["code"] = sorted({provenance.short((r.get("provenance") or {}).get("code_hash")) for r in done})
        entry["runs_of"] = runs_of(done)
        summary.append(entry)
    return summary


def valid_value(record: dict, metric: str) -> float | None:
    """A result's best-epoch validation ``metric``: RecBole's own, or a cold-item plan's ``cold_*`` / ``warm_*``
    group mean, which the job computes on validation apart (``valid_cold``); ``None`` where it kept none."""
    for source in (record.get("valid") or {}, record.get("valid_cold") or {}):
        if metric in source:
            return float(source[metric])
    return None


def seed_list(seeds: list) -> str:
    """``2020, 2021``: seeds as a report's text names them."""
    return ", ".join(str(s) for s in seeds)


def smaller_is_better(metric: str) -> bool:
    """RecBole's own direction for a metric name such as ``giniindex@10``."""
    from recbole.evaluator.register import metrics_dict

    metric_class = metrics_dict.get(metric.split("@")[0])
    return bool(getattr(metric_class, "smaller", False))


def lower_is_better_clause(metrics: list[str]) -> str:
    """``, lower is better for a, b`` for the metrics RecBole ranks ascending, or nothing when there are none."""
    lower = [m for m in metrics if smaller_is_better(m)]
    return f", lower is better for {', '.join(lower)}" if lower else ""


def _bold_compared(entry: dict, most: int) -> bool:
    """Whether a row's means take part in the bold mark: one over the most seeds any row ran, or a row that trains
    nothing (every seed gives it the same numbers, so fewer seeds do not make its mean noisier)."""
    return entry["runs"] == most or (entry["runs"] > 0 and trains_nothing(str(entry.get("model") or "")))


def run_labels(records: list[dict]) -> list[str]:
    """The runs ``records`` hold, as sorted ``<row>-seed<N>`` labels: what a file written from them records, so
    that a report can tell whether the file still matches its own runs."""
    return sorted(f"{r['row']}-seed{r['seed']}" for r in records)


def json_finite(value):
    """``value`` with every non-finite float (a ratio over a 0) as ``None``: JSON has no infinity."""
    if isinstance(value, dict):
        return {str(k): json_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def bold_among(summary: list[dict]) -> str:
    """Which rows the bold mark compares: nothing to say when every row ran the same number of seeds."""
    counts = {e["runs"] for e in summary if e["runs"]}
    most = max(counts, default=0)
    fewer_untrained = any(0 < e["runs"] < most and _bold_compared(e, most) for e in summary)
    if len(counts) <= 1:
        return ""
    if fewer_untrained:
        return (
            f" among the rows with {most} seed{'s' if most > 1 else ''} and those that train nothing (a trained row's "
            "mean over fewer seeds is not compared; a row that trains nothing gives the same numbers on every seed)"
        )
    return f" among the rows with {most} seed{'s' if most > 1 else ''} (a mean over fewer is not compared)"


def is_accuracy_metric(metric: str) -> bool:
    """Top-k accuracy (NDCG, Recall, ...) and labelled metrics (AUC, LogLoss); not coverage or popularity."""
    from recbole.evaluator.base_metric import TopkMetric
    from recbole.evaluator.register import metrics_dict
    from recbole.utils import EvaluatorType

    metric_class = metrics_dict.get(metric.split("@")[0])
    if metric_class is None or issubclass(metric_class, TopkMetric):
        return True
    return metric_class.metric_type == EvaluatorType.VALUE


def epochs_cell(epochs: list[tuple]) -> str:
    """``12 (7)`` = 12 epochs run, best at epoch 7 (0-based, RecBole's numbering); ``†`` when a seed stopped at its
    epoch cap; seeds separated by ``/``; ``–`` for a model that trains nothing."""
    if not epochs or not any(trains for trains, *_ in epochs):
        return "–"
    cells = []
    for _trains, run, best, hit_cap in epochs:
        cells.append(f"{run}{CAP_MARK if hit_cap else ''}" + (f" ({best})" if best is not None else ""))
    return " / ".join(cells)


def trainable_cell(entry: dict) -> str:
    """The share of a model's parameters that train, where the model reports it (M6Rec's frozen language model
    counts in the total); ``all`` for a model that reports none and trains (ID models train every parameter); ``–``
    for one that trains nothing."""
    if entry.get("trainable_share"):
        return f"{100 * entry['trainable_share']:.2f}%"
    return "all" if any(trains for trains, *_ in entry.get("epochs", [])) else "–"


def _mean_cell(entry: dict, key: str, best: float | None) -> str:
    if entry.get(key) is None:
        return "–"
    mean, std = entry[key]
    count = entry.get("counts", {}).get(key, entry["runs"])
    text = f"{mean:.4f} ± {std:.4f}" if count > 1 else f"{mean:.4f}"
    if count < entry["runs"]:
        text += f" ({count} of {entry['runs']} seeds)"
    # equal as shown is a tie: every row that shows the best value is bold
    return f"**{text}**" if best is not None and f"{mean:.4f}" == f"{best:.4f}" else text


def _best(summary: list[dict], key: str, metric: str) -> float | None:
    """The best mean of ``key`` among the rows compared (:func:`_bold_compared`: those that ran the most seeds, and
    those that train nothing): a trained row's mean over fewer seeds is not compared with one over more (an interim
    report's rows differ; a one-seed mean is as noisy as one seed). ``None`` when no row is compared, or when a
    larger-is-better best shows as 0 (no compared row found anything)."""
    most = max((e["runs"] for e in summary), default=0)
    values = [e[key][0] for e in summary if e.get(key) is not None and _bold_compared(e, most)]
    if not values:
        return None
    if smaller_is_better(metric):
        return min(values)
    # a best of 0 as shown means no row found anything: marking every 0 would call that a lead
    return max(values) if f"{max(values):.4f}" != "0.0000" else None


def markdown_table(
    summary: list[dict], metrics: list[str], with_costs: bool = True, main_metric: str = "", split: str = "test"
) -> str:
    """One line per row: seeds, then the ``split``'s metrics ("test", or "valid": the best epoch's validation
    scores), the test table led by the valid main metric (what selection uses) and followed by epochs, code and
    costs. Only validation columns mark their best mean in bold: validation chooses, test only reports."""
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', not {split!r}")
    key = {"test": lambda m: m, "valid": lambda m: f"{VALID_PREFIX}{m}"}[split]
    with_valid = split == "test" and bool(main_metric) and any(e.get("valid") for e in summary)
    best = {m: _best(summary, key(m), m) if split == "valid" else None for m in metrics}
    best_valid = _best(summary, "valid", main_metric) if with_valid else None
    most = max((e["runs"] for e in summary), default=0)
    with_costs = with_costs and split == "test"
    costs = ["trainable", "train+eval s", "item encoding s", "peak RSS MB"] if with_costs else []
    header = (
        ["model", "seeds"]
        + ([f"valid {main_metric}"] if with_valid else [])
        + [f"{split} {m}" for m in metrics]
        + (["epochs (best)", "code"] if with_costs else [])
        + costs
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary:
        if e["runs"] == 0:
            status = "/".join(sorted({r.get("status", "failed") for r in e["failed"]})) or "not run yet"
            lines.append(f"| {e['row']} | 0 | " + " | ".join([status] * (len(header) - 2)) + " |")
            continue
        cells = [e["row"], str(e["runs"])]
        compared = _bold_compared(e, most)  # a trained row with fewer seeds is never bold, not even on a tie
        if with_valid:
            cells.append(_mean_cell(e, "valid", best_valid if compared else None) if e.get("valid") else "–")
        cells += [_mean_cell(e, key(m), best[m] if compared else None) for m in metrics]
        if with_costs:
            cells.append(epochs_cell(e["epochs"]))
            cells.append(" / ".join(f"`{c}`" for c in e["code"]))
            cells.append(trainable_cell(e))
            cells.append(f"{'~' if e.get('time_scaled_seeds') else ''}{e['train_seconds'][0]:.0f}")
            cells.append(f"{e['item_encoding_seconds']:.0f}" if e["item_encoding_seconds"] else "–")
            cells.append(f"{e['peak_rss_mb'][0]:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
