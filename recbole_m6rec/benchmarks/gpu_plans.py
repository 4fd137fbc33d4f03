"""The GPU campaign's plans: which leaderboard plan each part runs, read with its ``campaign`` block checked.

Each part is an ordinary leaderboard plan in ``configs/gpu_*.yaml`` (:data:`PARTS`) plus a ``campaign`` block (the
part's and each row's share of the time budget, rows at once) and a ``tiny`` block (the settings of the CPU check).
``late_interaction_layers: all`` is resolved here to the number of layers of the row's backbone.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from recbole_m6rec.benchmarks.plan import load_plan
from recbole_m6rec.benchmarks.provenance import REPO_ROOT

__all__ = ["CONFIGS_DIR", "PARTS", "ALL_LAYERS", "load_part", "backbone_layers"]

CONFIGS_DIR = REPO_ROOT / "configs"
PARTS = {  # report folder under --out: plan
    "ml-1m": "gpu_ml-1m.yaml",
    "ctr_ml-100k": "gpu_ctr_ml-100k.yaml",
    "zero-shot_ml-100k": "gpu_zero-shot_ml-100k.yaml",
}
ALL_LAYERS = "all"  # late_interaction_layers: all = every layer of the row's backbone online


def load_part(path: Path | str, tiny: bool, overrides: dict | None = None) -> dict:
    """A GPU plan as the leaderboard reads it, with its ``campaign`` block checked; with ``tiny`` its ``tiny``
    settings replace the dataset, extend ``common`` and each row; ``late_interaction_layers: all`` resolved."""
    plan = load_plan(str(path), overrides or {}, None, None)
    campaign = plan.get("campaign") or {}
    missing = [key for key in ("budget", "workers", "row_budget") if key not in campaign]
    if missing:
        raise ValueError(
            f"plan '{path}' needs a campaign block with {missing} (budget: share of --budget_s for the "
            "part, workers: rows at once, row_budget: {row: share of --budget_s})"
        )
    unbudgeted = [row for row in plan["rows"] if row not in campaign["row_budget"]]
    if unbudgeted:
        raise ValueError(f"plan '{path}': rows {unbudgeted} have no row_budget (a share of --budget_s)")
    small = plan.pop("tiny", None) or {}
    if tiny:
        plan["dataset"] = small.get("dataset", plan["dataset"])
        plan["campaign"] = {**campaign, "workers": small.get("workers", campaign["workers"])}
        plan["common"] = {**plan["common"], **(small.get("common") or {}), **(overrides or {})}
        for name, extra in (small.get("rows") or {}).items():
            plan["rows"][name] = {**plan["rows"][name], **extra}
        if small.get("method"):
            plan["method"] = f"{plan.get('method', '').strip()} {small['method'].strip()}".strip()
    for row in plan["rows"].values():
        if row.get("late_interaction_layers") == ALL_LAYERS:
            row["late_interaction_layers"] = backbone_layers(
                row.get("plm_name_or_path") or plan["common"].get("plm_name_or_path")
            )
    return plan


def backbone_layers(plm_name_or_path: str | None) -> int:
    """The number of layers of a backbone (the plugin's default one when None), as M6Rec's layer split counts
    them."""
    from recbole_m6rec.config import PLUGIN_PROPERTIES_DIR
    from recbole_m6rec.lm import load_plm
    from recbole_m6rec.lm.backbone import LayerStack

    if plm_name_or_path is None:
        defaults = yaml.safe_load((PLUGIN_PROPERTIES_DIR / "model" / "M6Rec.yaml").read_text(encoding="utf-8"))
        plm_name_or_path = defaults["plm_name_or_path"]
    return LayerStack(load_plm(plm_name_or_path)[1]).num_layers
