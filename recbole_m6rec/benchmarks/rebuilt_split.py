"""A plan's split rebuilt with RecBole's own data steps, for the commands that analyse a plan's data or a report's
results without training (strata, cold_groups, nested_share, time_signal)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["RebuiltSplit", "rebuild_split", "require_same_split"]

QUIET = {"state": "WARNING", "show_progress": False}


@dataclass
class RebuiltSplit:
    config: object  # the PluginConfig the data was built with
    cold: object  # the ColdItemSplit, or None when the plan holds out no items
    train: object
    valid: object
    test: object
    fingerprint: str


def rebuild_split(plan: dict, model: str = "MostPop") -> RebuiltSplit:
    """The split of ``plan`` (its dataset and ``common`` settings) as ``model``'s runs see it, cold items held out
    where the plan says so. MostPop's leave-one-out split equals a sequential model's (same fingerprint); a labelled
    plan's samples need a model that reads them (M6RecCTR). It drops the process's command-line arguments, which
    RecBole's Config would read as settings: a caller takes what it needs from ``sys.argv`` first."""
    from recbole.data import data_preparation

    from recbole_m6rec.cold_start import apply_cold_items
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.evaluation import split_fingerprint

    sys.argv = sys.argv[:1]  # RecBole's Config reads the command line
    config = PluginConfig(model=model, dataset=plan["dataset"], config_dict={**plan["common"], **QUIET})
    dataset = create_dataset(config)
    cold = apply_cold_items(dataset, config)
    train, valid, test = data_preparation(config, dataset)
    return RebuiltSplit(config, cold, train, valid, test, split_fingerprint(train, valid, test))


def require_same_split(rebuilt: str, results: str) -> None:
    """Stop when the split rebuilt here is not the one the results were scored on."""
    if rebuilt != results:
        raise SystemExit(
            f"the plan's split rebuilt here has fingerprint {rebuilt}, the results' is {results}: "
            "they were scored on another split (another plan, dataset file or RecBole version)"
        )
