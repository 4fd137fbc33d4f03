"""What the history's times alone say about a click-through label on a plan's split: the signal M6RecCTR with
``history_labels`` can read through the outcomes it hides, and no other row reads.

    python -m recbole_m6rec.benchmarks.time_signal --config_files=configs/ctr_ml-100k.yaml

M6RecCTR shows a history item's outcome only to steps after the item's second (an outcome entered together with the
candidate is not feedback that arrived before it was shown, :mod:`recbole_m6rec.model.outcome_slots`). Which
outcomes are missing therefore tells it whether the candidate shares the last history item's second, and how many
history items that second holds. This scores the plan's validation and test samples by each of the two alone and
prints their AUC: what the times could give a model beyond the items and outcomes. It reads the plan's ``common``
settings and builds the data with RecBole's own steps, comparing times as the batches carry them (no language
model is loaded).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

__all__ = ["last_second_features", "main"]


def last_second_features(loader, config) -> dict[str, np.ndarray]:
    """Per labelled sample of ``loader``: ``shares_second`` (1 when the candidate's time equals the last history
    item's), ``last_group`` (history items at the last history item's time; 0 for an empty history) and ``label``."""
    times_field = config["TIME_FIELD"] + config["LIST_SUFFIX"]
    parts: dict[str, list[np.ndarray]] = {"shares_second": [], "last_group": [], "label": []}
    for batch in loader:
        interaction = batch[0]
        times, lengths = interaction[times_field], interaction[config["ITEM_LIST_LENGTH_FIELD"]]
        rows = np.arange(len(lengths))
        last = times[rows, (lengths - 1).clamp(min=0)]  # the last history item's time (any value when empty)
        has_history = lengths > 0
        steps = np.arange(times.shape[1])[None, :] < lengths[:, None].numpy()
        in_last = (times == last[:, None]).numpy() & steps
        parts["shares_second"].append((has_history & (interaction[config["TIME_FIELD"]] == last)).numpy())
        parts["last_group"].append(in_last.sum(axis=1))
        parts["label"].append(interaction[config["LABEL_FIELD"]].numpy())
    return {name: np.concatenate(values).astype(np.float64) for name, values in parts.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", required=True, help="a labelled (click-through) leaderboard plan")
    args = parser.parse_args(argv)
    from recbole_m6rec.benchmarks.plan import is_labelled, load_plan
    from recbole_m6rec.benchmarks.rebuilt_split import rebuild_split
    from recbole_m6rec.benchmarks.significance import auc_ci

    try:
        plan = load_plan(args.config_files, {}, None, None)
    except ValueError as error:
        parser.error(str(error))
    if not is_labelled(plan):
        parser.error(f"{args.config_files} is not a labelled (click-through) plan: its samples carry no label")
    split = rebuild_split(plan, "M6RecCTR")
    config, valid, test = split.config, split.valid, split.test
    print(
        f"{args.config_files}: AUC of a score from the history's times alone (0.5 = no signal; DeLong's 95% interval, "
        "which takes a user's samples as independent, so it is too narrow)"
    )
    for name, loader in (("valid", valid), ("test", test)):
        f = last_second_features(loader, config)
        flag, group = auc_ci(f["label"], f["shares_second"]), auc_ci(f["label"], f["last_group"])
        print(
            f"{name}: {len(f['label'])} samples, {int(f['shares_second'].sum())} share the last history item's "
            f"second; AUC of that flag {_auc(flag)}, of the number of history items in the last history second "
            f"{_auc(group)}"
        )
    return 0


def _auc(result: dict) -> str:
    return f"{result['auc']:.4f} [{result['ci_low']:.4f}, {result['ci_high']:.4f}]"


if __name__ == "__main__":
    sys.exit(main())
