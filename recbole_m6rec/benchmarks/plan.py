"""A leaderboard plan: the yaml read and checked, and what each (row, seed) of it runs.

A plan names the dataset, the seeds, the RecBole settings every row shares (``common``) and the rows: a row is a
name plus a RecBole/plugin model, the settings that differ from ``common``, optionally a ``search`` space for tuning
and its own ``seeds`` (other than the plan's, e.g. more seeds for the rows a conclusion rests on). :func:`job_spec`
turns a (row, seed) into the job a process runs, with ``config_hash``: the hash that decides, together with the
result's provenance, whether a finished result can be reused. It covers settings as values
(:func:`effective_settings`), so a comment or an overridden default in the plugin's yaml files changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from recbole.evaluator.register import metric_types
from recbole.utils import EvaluatorType

from recbole_m6rec.atomic import stable_hash
from recbole_m6rec.benchmarks.borrowed_tuning import borrows
from recbole_m6rec.benchmarks.report_tables import is_accuracy_metric
from recbole_m6rec.config import PLUGIN_PROPERTIES_DIR, model_yaml_files
from recbole_m6rec.datasets import DATASETS_DIR, dataset_yaml, yaml_dirs

__all__ = [
    "REQUIRED_KEYS",
    "ROW_KEYS_NOT_SETTINGS",
    "load_plan",
    "parse_seeds",
    "jobs",
    "row_seeds",
    "row_settings",
    "job_spec",
    "settings_hash",
    "effective_settings",
    "is_labelled",
]

REQUIRED_KEYS = ("dataset", "seeds", "common", "rows")
ROW_KEYS_NOT_SETTINGS = ("model", "search", "seeds", "tuned_as")  # a row's keys that are not RecBole settings


def load_plan(path: str, overrides: dict, rows: Sequence[str] | None, seeds: Sequence[int] | None) -> dict:
    """The plan in ``path`` with ``overrides`` merged into ``common``, cut down to ``rows`` and ``seeds`` when given
    (``seeds`` replace the rows' own seeds too); a missing key, an unknown row, a row without a model or a seed list
    that is not a list of integers is refused."""
    with open(path, encoding="utf-8") as handle:
        plan = yaml.safe_load(handle) or {}
    missing = [key for key in REQUIRED_KEYS if key not in plan]
    if missing:
        raise ValueError(f"benchmark file '{path}' lacks {missing}; it needs {list(REQUIRED_KEYS)}")
    plan["common"] = {**plan["common"], **overrides}
    plan["pairs"] = _checked_pairs(plan.get("pairs"), list(plan["rows"]), path)
    plan["table_metrics"] = _checked_table_metrics(plan.get("table_metrics"), plan["common"], path)
    if rows:
        unknown = [row for row in rows if row not in plan["rows"]]
        if unknown:
            raise ValueError(f"rows {unknown} are not in '{path}'; known rows: {', '.join(plan['rows'])}")
        plan["rows"] = {row: plan["rows"][row] for row in rows}
        plan["pairs"] = {name: pair for name, pair in plan["pairs"].items() if set(pair) <= set(rows)}
    if seeds:
        plan["seeds"] = list(seeds)
    _check_seeds(plan["seeds"], f"benchmark file '{path}': seeds")
    for name, row in plan["rows"].items():
        if not isinstance(row, dict) or "model" not in row:
            raise ValueError(f"row '{name}' needs a 'model' (e.g. {{model: SASRec}}); got {row!r}")
        if "valid_metric" in row:
            raise ValueError(
                f"row '{name}' sets valid_metric; every row of a plan stops early and is tuned on the same metric: "
                f"set it once in `common` (now {plan['common'].get('valid_metric')!r})"
            )
        if "tuned_as" in row and not (borrows(plan) and row.get("search")):
            raise ValueError(
                f"row '{name}': tuned_as names the row of another report whose tuning it takes; it needs a `search` "
                "space and the plan's `tuning: {from: <report folder>, ...}`"
            )
        if seeds:
            row.pop("seeds", None)
        elif "seeds" in row:
            _check_seeds(row["seeds"], f"row '{name}': seeds")
    return plan


def _checked_pairs(pairs, rows: list[str], path: str) -> dict[str, list[str]]:
    """The plan's ``pairs``: named comparisons ``{name: [row, reference]}`` its conclusions rest on besides the
    chosen row against the baselines (e.g. option-adapter against ``upper``); the report compares each on validation
    and test. Both rows must be rows of the plan, and differ."""
    if pairs is None:
        return {}
    example = "e.g. {adapter-vs-upper: [M6Rec, M6Rec-upper]}"
    if not isinstance(pairs, dict):
        raise ValueError(
            f"benchmark file '{path}': pairs must map a name to [row, reference], {example}; got {pairs!r}"
        )
    for name, pair in pairs.items():
        if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]+", name)):
            raise ValueError(
                f"benchmark file '{path}': pair name {name!r} must be letters, digits, '-' and '_' only (a README "
                f"figure quotes it as comparison.json:pairs.<name>....), {example}"
            )
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(row, str) for row in pair)):
            raise ValueError(
                f"benchmark file '{path}': pair '{name}' must be [row, reference], {example}; got {pair!r}"
            )
        unknown = [row for row in pair if row not in rows]
        if unknown:
            raise ValueError(
                f"benchmark file '{path}': pair '{name}' names {unknown}, not rows of the plan; known rows: {', '.join(rows)}"
            )
        if pair[0] == pair[1]:
            raise ValueError(f"benchmark file '{path}': pair '{name}' compares row '{pair[0]}' with itself")
    return {str(name): list(pair) for name, pair in pairs.items()}


# RecBole's defaults, for a plan whose `common` does not set them
DEFAULT_METRICS, DEFAULT_TOPK = ["Recall", "MRR", "NDCG", "Hit", "Precision"], [10]


def _checked_table_metrics(value, common: dict, path: str) -> list[str]:
    """The plan's ``table_metrics``: the test metrics of its report's main table, in that order (every accuracy
    metric when absent); the other accuracy metrics get a table of their own below it, so a plan that measures many
    cutoffs keeps a readable main table. Each must be an accuracy metric the plan measures, as a result names it: one
    of ``common.metrics`` at a cutoff of ``topk``, lower case (``ndcg@10``), with ``cold_`` / ``warm_`` before it
    when the plan sets ``cold_items``. Like ``pairs``, it changes no setting."""
    if value is None:
        return []
    metrics = [str(m).lower() for m in common.get("metrics") or DEFAULT_METRICS]
    topk = common.get("topk") or DEFAULT_TOPK
    topk = topk if isinstance(topk, list) else [topk]
    whole = [m for m in metrics if metric_types.get(m) == EvaluatorType.VALUE]  # no cutoff: AUC, LogLoss, ...
    known = whole + [f"{m}@{k}" for m in metrics if m not in whole for k in topk]
    # the main table holds accuracy metrics only (coverage and popularity have their own table), as the report does
    known = [name for name in known if is_accuracy_metric(name)]
    if common.get("cold_items") is not None:
        known += [f"{part}_{name}" for part in ("cold", "warm") for name in known if "@" in name]
    example = f"e.g. [{', '.join(known[:2])}]"
    if not (isinstance(value, list) and value and all(isinstance(name, str) for name in value)):
        raise ValueError(
            f"benchmark file '{path}': table_metrics must be a list of metric names, {example}; got {value!r}"
        )
    unknown = [name for name in value if name not in known]
    if unknown:
        raise ValueError(
            f"benchmark file '{path}': table_metrics names {unknown}, not accuracy metrics the plan measures (lower case, "
            f"as results name them); known: {', '.join(known)}"
        )
    if len(set(value)) != len(value):
        raise ValueError(f"benchmark file '{path}': table_metrics lists a metric twice (got {value!r})")
    return list(value)


def _check_seeds(seeds, where: str) -> None:
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(f"{where} must be a non-empty list of integers, e.g. [2020, 2021, 2022] (got {seeds!r})")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where} lists a seed twice (got {seeds!r})")


def row_seeds(plan: dict, name: str) -> list[int]:
    """The seeds row ``name`` runs: its own ``seeds`` if it lists them, else the plan's."""
    return list(plan["rows"][name].get("seeds") or plan["seeds"])


def jobs(plan: dict) -> list[tuple[str, int]]:
    """Every (row, seed) the plan runs, seed by seed in the plan's order (a row's extra seeds after them), so that a
    plan interrupted early has every row on its first seed."""
    seeds = {name: row_seeds(plan, name) for name in plan["rows"]}
    order = list(plan["seeds"])
    for own in seeds.values():
        order += [seed for seed in own if seed not in order]
    return [(name, seed) for seed in order for name in plan["rows"] if seed in seeds[name]]


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


def _merged(lower: dict, upper: dict) -> dict:
    """``upper`` over ``lower``, mappings merged key by key (a superset of what RecBole keeps of both)."""
    merged = dict(lower)
    for key, value in upper.items():
        below = merged.get(key)
        merged[key] = _merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def default_files(model: str, dataset: str, dataset_yaml_dirs=None) -> list[Path]:
    """The plugin yaml files whose defaults a run of ``model`` on ``dataset`` reads, lowest precedence first: the
    dataset's yaml is the one the run's ``dataset_yaml_dirs`` finds first, as :class:`PluginConfig` reads it."""
    model_yamls = model_yaml_files(model) or [PLUGIN_PROPERTIES_DIR / "model" / f"{model}.yaml"]
    dataset_file = dataset_yaml(dataset, yaml_dirs(dataset_yaml_dirs)) or DATASETS_DIR / f"{dataset}.yaml"
    return [PLUGIN_PROPERTIES_DIR / "overall.yaml", *model_yamls, dataset_file]


def effective_settings(model: str, dataset: str, config_dict: dict) -> dict:
    """The settings a run reads from the plugin's yaml defaults and the plan, as values: comments, layout and a
    default that the plan overrides do not count, so editing them leaves finished results valid."""
    settings: dict = {}
    for path in default_files(model, dataset, config_dict.get("dataset_yaml_dirs")):
        if path.is_file():
            settings = _merged(settings, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return _merged(settings, config_dict)


def job_spec(plan: dict, name: str, seed: int, overrides: dict | None = None) -> dict:
    """What one job runs, and ``config_hash``: a hash of the settings it reads (code, data and libraries are the
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
    # the plugin's yaml defaults count by value: changing one that the run reads invalidates finished results
    settings = effective_settings(model, plan["dataset"], config_dict)
    spec["config_hash"] = settings_hash(model, plan["dataset"], seed, settings, _hashed_files(spec["config_files"]))
    return spec


def _hashed_files(config_files: list) -> list:
    """A plan's extra ``config_files`` as the hash counts them: each path with the settings it holds, so editing
    one reruns its results (an empty list hashes as it always did)."""
    hashed = []
    for name in config_files:
        path = Path(name)
        if not path.is_file():
            raise ValueError(
                f"the plan's config_files names '{name}', which is not a file (working directory: '{Path.cwd()}')"
            )
        hashed.append([str(name), yaml.safe_load(path.read_text(encoding="utf-8")) or {}])
    return hashed


def settings_hash(model: str, dataset: str, seed: int, settings: dict, config_files: list) -> str:
    """``config_hash`` of a run that reads ``settings`` (:func:`effective_settings`)."""
    return stable_hash(["settings", model, dataset, seed, settings, config_files])[:16]


def is_labelled(plan: dict) -> bool:
    """Whether the plan evaluates labelled samples (click-through: AUC, LogLoss) rather than full rankings."""
    mode = (plan["common"].get("eval_args") or {}).get("mode")
    modes = mode.values() if isinstance(mode, dict) else [mode]
    return "labeled" in modes
