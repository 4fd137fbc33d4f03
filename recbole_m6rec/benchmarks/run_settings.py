"""What two runs of a row read: each run's settings rebuilt as the leaderboard builds them (the plan, the chosen
tuning trial's values over it, the plugin's yaml defaults under it), and every setting in which two runs differ."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["EVALUATION_ONLY", "difference_text", "settings_differences", "tuned_spec"]

EVALUATION_ONLY = frozenset({"metrics", "topk", "tail_ratio", "metric_decimal_place"})  # change no training


def _flat(settings: dict, prefix: str = "") -> dict:
    """``{"eval_args.split.LS": ...}``: nested settings as dotted keys, so a difference names its exact key."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def tuned_spec(plan: dict, report_dir: Path, row: str, seed: int) -> tuple[dict, dict]:
    """What a run of ``row`` and ``seed`` read, rebuilt as the leaderboard builds it: the plan's settings with the
    chosen tuning trial's values of the row's own ``search`` keys over them (from the report's tuning, or the one
    ``tuning.from`` names; none when there is no finished tuning), and the plugin's yaml defaults under them.
    Returns the job spec (with its ``config_hash``) and the effective settings."""
    from recbole_m6rec.benchmarks.borrowed_tuning import borrows, source_row
    from recbole_m6rec.benchmarks.plan import effective_settings, job_spec

    spec = plan["rows"][row]
    params = {}
    if spec.get("search"):
        folder, name = (Path(plan["tuning"]["from"]), source_row(plan, row)) if borrows(plan) else (report_dir, row)
        path = folder / "tuning" / f"{name}-tuning.json"
        best = json.loads(path.read_text(encoding="utf-8")).get("best_params") if path.is_file() else None
        params = {key: best[key] for key in spec["search"] if key in best} if isinstance(best, dict) else {}
    job = job_spec({**plan, "rows": {**plan["rows"], row: {**spec, **params}}}, row, seed)
    return job, effective_settings(job["model"], job["dataset"], job["config_dict"])


def settings_differences(cold: dict, full: dict) -> list[dict]:
    """Every dotted key whose value differs between two runs' settings: ``key, cold, full, evaluation_only``."""
    a, b = _flat(cold), _flat(full)
    return [
        {"key": k, "cold": a.get(k), "full": b.get(k), "evaluation_only": k.split(".")[0] in EVALUATION_ONLY}
        for k in sorted(set(a) | set(b))
        if k not in a or k not in b or a[k] != b[k]  # an explicit None is not a missing key to RecBole
    ]


def difference_text(differences: list[dict]) -> str:
    shown = [d for d in differences if not d["evaluation_only"]]
    text = "; ".join(f"`{d['key']}`: {d['cold']!r} vs {d['full']!r}" for d in shown) or "none"
    hidden = sorted({d["key"].split(".")[0] for d in differences if d["evaluation_only"]})
    return text + (f" (and the evaluation-only {', '.join(hidden)})" if hidden else "")
