"""How much of M6RecCTR's labelled evaluation nested samples save on a plan's split: the samples and steps that run.

    python -m recbole_m6rec.benchmarks.nested_share --config_files=configs/ctr_ml-100k.yaml

Reads the plan's ``common`` settings, builds M6RecCTR's data with RecBole's own steps (no language model is loaded)
and counts, per evaluation set, the passes that scoring each sample alone runs (one per sample) against those that
run when a user's nested samples share a pass (:mod:`recbole_m6rec.model.nested_samples`), batch by batch as the
evaluation sees them. A pass costs the same whatever its history's length (histories are padded to
``MAX_ITEM_LIST_LENGTH``), so the share of passes is the share of the cost; the steps (history items plus the
candidate) are printed for the reader.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml


def counts(loader) -> dict[str, int]:
    """Samples and steps of ``loader``'s batches, alone and with nested samples sharing a pass."""
    from recbole_m6rec.model.nested_samples import covering_samples, with_candidate

    totals = {"samples": 0, "samples_run": 0, "steps": 0, "steps_run": 0}
    for batch in loader:
        interaction = batch[0]
        lengths = interaction["item_length"]
        sequence = with_candidate(interaction["item_id_list"], lengths, interaction["item_id"])
        run, _ = covering_samples(interaction["user_id"], lengths, [(sequence, 1), (interaction["label_list"], 0)])
        totals["samples"] += len(interaction)
        totals["samples_run"] += len(run)
        totals["steps"] += int((lengths + 1).sum())
        totals["steps_run"] += int((lengths[run] + 1).sum())
    return totals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", required=True, help="a labelled (click-through) leaderboard plan")
    args = parser.parse_args(argv)
    from recbole_m6rec.benchmarks.rebuilt_split import rebuild_split

    with open(args.config_files, encoding="utf-8") as handle:
        plan = yaml.safe_load(handle)
    split = rebuild_split(plan, "M6RecCTR")
    config, valid, test = split.config, split.valid, split.test
    print(
        f"{args.config_files}: MAX_ITEM_LIST_LENGTH {config['MAX_ITEM_LIST_LENGTH']}, eval batch {config['eval_batch_size']}"
    )
    for name, loader in (("valid", valid), ("test", test)):
        c = counts(loader)
        print(
            f"{name}: {c['samples']} samples, {c['samples_run']} passes ({c['samples_run'] / c['samples']:.1%}); "
            f"{c['steps']} steps alone, {c['steps_run']} shared ({c['steps_run'] / c['steps']:.1%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
