"""Warm users under the cold-item split against the same users with every item trained (the full data).

    python -m recbole_m6rec.benchmarks.cold_vs_full --cold=reports/cold_ml-100k/results/M6Rec-seed2020.json \
        --full=reports/demo_ml-100k/results/M6Rec-seed2020.json --report=reports/cold_ml-100k

Two leaderboard results of one model and seed: one run with ``cold_items`` (a share of the items never trained on),
one without. Holding items out changes the split's fingerprint, so the leaderboard refuses to put both in one table;
this command compares them user by user instead. It rebuilds both splits with RecBole to find each user's test
target, checks that every user has the same test target in both (else the comparison is refused), and reports the
per-user metric averaged over users whose target is a warm item, a cold item, and all users.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from recbole_m6rec.benchmarks import publish
from recbole_m6rec.benchmarks.plan import load_plan
from recbole_m6rec.cold_start import apply_cold_items, test_target_tokens
from recbole_m6rec.config import PluginConfig

__all__ = ["compare", "main"]


def _test_targets(settings: dict, dataset: str, with_cold: bool) -> tuple[dict[str, str], set[str]]:
    """``{user token: test target token}`` of RecBole's leave-one-out split, and the cold item tokens."""
    from recbole.data import data_preparation

    from recbole_m6rec.data import create_dataset

    settings = dict(settings)
    if not with_cold:
        settings.pop("cold_items", None)
    argv, sys.argv = sys.argv, [sys.argv[0]]  # RecBole's Config reads sys.argv
    try:
        # Pop needs no model settings; the split does not depend on the model for leave-one-out in time order
        config = PluginConfig(model="Pop", dataset=dataset, config_dict={**settings, "state": "WARNING"})
        data = create_dataset(config)
        split = apply_cold_items(data, config)
        _, _, test = data_preparation(config, data)
    finally:
        sys.argv = argv
    return test_target_tokens(test._dataset), set(split.cold_item_tokens) if split else set()


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    if record.get("status") != "ok" or not record.get("per_user_test"):
        raise ValueError(
            f"'{path}' is not a finished leaderboard result with per-user test values "
            f"(status {record.get('status')!r}); rerun its report"
        )
    return record


def compare(cold_path: str, full_path: str, cold_plan: str) -> dict:
    cold_run, full_run = _load(cold_path), _load(full_path)
    if cold_run["model"] != full_run["model"] or cold_run["seed"] != full_run["seed"]:
        raise ValueError(
            f"compare one model and seed: {cold_run['model']} seed {cold_run['seed']} vs "
            f"{full_run['model']} seed {full_run['seed']}"
        )
    plan = load_plan(cold_plan, overrides={}, rows=None, seeds=None)  # the leaderboard's reader and its checks
    if "cold_items" not in plan["common"]:
        raise ValueError(f"'{cold_plan}' has no cold_items setting in common")
    cold_targets, cold_items = _test_targets(plan["common"], plan["dataset"], with_cold=True)
    full_targets, _ = _test_targets(plan["common"], plan["dataset"], with_cold=False)
    differing = [u for u in cold_targets if full_targets.get(u) != cold_targets[u]]
    if differing or set(full_targets) != set(cold_targets):
        raise ValueError(
            f"the two splits give different test targets for {len(differing)} users "
            f"(e.g. {differing[:3]}); they are not comparable"
        )
    result = {
        "model": cold_run["model"],
        "seed": cold_run["seed"],
        "cold_result": cold_path,
        "full_result": full_path,
        "cold_plan": cold_plan,
        "groups": [],
    }
    for metric in sorted(set(cold_run["per_user_test"]) & set(full_run["per_user_test"])):
        cold_values, full_values = cold_run["per_user_test"][metric], full_run["per_user_test"][metric]
        for group in ("warm", "cold", "all"):
            users = [
                u for u, item in cold_targets.items() if group == "all" or (item in cold_items) == (group == "cold")
            ]
            users = [u for u in users if u in cold_values and u in full_values]
            on_cold = float(np.mean([cold_values[u] for u in users])) if users else float("nan")
            on_full = float(np.mean([full_values[u] for u in users])) if users else float("nan")
            result["groups"].append(
                {
                    "metric": metric,
                    "group": group,
                    "users": len(users),
                    "cold_split": round(on_cold, 4),
                    "full_data": round(on_full, 4),
                    "ratio": round(on_cold / on_full, 3) if on_full else float("nan"),
                }
            )
    return result


def markdown(result: dict) -> str:
    lines = [
        f"{result['model']}, seed {result['seed']}: trained without the cold items "
        f"(`{result['cold_result']}`) vs trained on the full data (`{result['full_result']}`); the same test "
        "target for every user in both splits (checked).",
        "",
        "| metric | test users | users | cold-item split | full data | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for g in result["groups"]:
        lines.append(
            f"| {g['metric']} | {g['group']} | {g['users']} | {g['cold_split']:.4f} | {g['full_data']:.4f} "
            f"| {g['ratio']:.3f}× |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", required=True, help="result JSON of a run with cold_items")
    parser.add_argument("--full", required=True, help="result JSON of the same model and seed on the full data")
    parser.add_argument("--cold_plan", default="configs/cold_ml-100k.yaml", help="the cold run's benchmark plan")
    parser.add_argument("--report", default=None, help="folder to write cold_vs_full.json and .md into")
    args = parser.parse_args(argv)
    result = compare(args.cold, args.full, args.cold_plan)
    publish("recbole_m6rec.benchmarks.cold_vs_full", argv, markdown(result), result, args.report, "cold_vs_full")


if __name__ == "__main__":
    main()
