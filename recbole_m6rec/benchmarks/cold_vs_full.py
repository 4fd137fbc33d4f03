"""Warm users under the cold-item split against the same users with every item trained (the full data).

    python -m recbole_m6rec.benchmarks.cold_vs_full --cold=reports/cold_ml-100k/results/M6Rec-seed2020.json \
        --full=reports/demo_ml-100k/results/M6Rec-seed2020.json --report=reports/cold_ml-100k
    python -m recbole_m6rec.benchmarks.cold_vs_full --cold_plan=configs/cold_ml-100k.yaml \
        --cold_report=reports/cold_ml-100k --full_plan=configs/bench_ml-100k.yaml --full_report=reports/ml-100k \
        --report=reports/cold_ml-100k/cold_vs_full

Two leaderboard results of one model and seed: one run with ``cold_items`` (a share of the items never trained on),
one without. Holding items out changes the split's fingerprint, so the leaderboard refuses to put both in one table;
this command compares them user by user instead. It rebuilds both splits with RecBole to find each user's test
target, checks that every user has the same test target in both (else the comparison is refused), and reports the
per-user metric averaged over the users of each group (warm, warm after a cold last history item, cold, as
``cold_groups`` groups them) and over all users.

With two report folders (the second form) it compares every row the two plans share (same name, same model) on the
seeds both reports used, each user with its values on every such seed, with the warm users split again as
``cold_groups`` splits them (warm after a cold last history item, and the other warm): the ratio cold split / full
data per group
with a 95% bootstrap interval that resamples users (:func:`~recbole_m6rec.benchmarks.significance.paired_ratio_ci`),
and every setting in which the two runs of a row differ (the held-out items, and whatever else), rebuilt from the
plans and the reports' tuning and checked against each run's recorded settings hash. Each split is rebuilt from its
plan and must have the fingerprint its report's results record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from recbole_m6rec.benchmarks import publish
from recbole_m6rec.benchmarks.cold_groups import GROUPS, group_of
from recbole_m6rec.benchmarks.plan import load_plan
from recbole_m6rec.benchmarks.rebuilt_split import rebuild_split
from recbole_m6rec.benchmarks.run_settings import difference_text, settings_differences, tuned_spec
from recbole_m6rec.cold_start import test_target_tokens

__all__ = ["compare", "compare_reports", "main", "settings_differences"]

SHOWN_GROUPS = tuple(reversed(GROUPS))  # warm first, as the report's columns


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
    argv = list(sys.argv)  # rebuild_split clears the command line (RecBole's Config reads it): give it back
    try:
        cold_split = rebuild_split(plan)
        full_split = rebuild_split({**plan, "common": _without_cold(plan["common"])})
    finally:
        sys.argv = argv
    for split, run, path in ((cold_split, cold_run, cold_path), (full_split, full_run, full_path)):
        recorded = run.get("split_fingerprint")
        if recorded and split.fingerprint != recorded:
            raise ValueError(
                f"'{path}' was scored on split {recorded}, but the split rebuilt for it here is {split.fingerprint}"
            )
    cold_targets, cold_items = _targets(cold_split)
    full_targets, held_out = _targets(full_split)
    if held_out:  # the comparison's other side must train every item
        raise ValueError(f"the full-data split still holds out {len(held_out)} items; it must hold out none")
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
    last_items = test_target_tokens(cold_split.valid._dataset)
    group_of_user = {u: group_of(item, last_items.get(u), cold_items) for u, item in cold_targets.items()}
    for metric in sorted(set(cold_run["per_user_test"]) & set(full_run["per_user_test"])):
        cold_values, full_values = cold_run["per_user_test"][metric], full_run["per_user_test"][metric]
        for group in (*SHOWN_GROUPS, "all"):
            users = [u for u, g in group_of_user.items() if group in ("all", g)]
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


# --- two report folders: every row they share --------------------------------------------------------------------
def _used_records(report_dir: Path, plan: dict) -> list[dict]:
    """The finished results the report in ``report_dir`` used (the (row, seed) pairs of its ``results.csv``)."""
    from recbole_m6rec.benchmarks.headline import used_results

    records = used_results(report_dir, plan["rows"])
    if records is None:
        raise ValueError(f"'{report_dir}' has no results.csv: name a report folder the leaderboard wrote")
    return records


def _without_cold(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key != "cold_items"}


def _targets(split) -> tuple[dict[str, str], set[str]]:
    """``{user token: test target token}`` of a rebuilt split, and its cold item tokens (none without cold items)."""
    cold = set(split.cold.cold_item_tokens) if split.cold is not None else set()
    return test_target_tokens(split.test._dataset), cold


def _split_targets(plan: dict, records: list[dict], where: str) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """The plan's split rebuilt (its fingerprint checked against the results'): test target per user, cold items,
    and validation target per user (the last item of the test history)."""
    from recbole_m6rec.benchmarks.report_tables import check_one_split

    split = rebuild_split(plan)
    recorded = check_one_split(records)
    if recorded and split.fingerprint != recorded:
        raise ValueError(
            f"{where}: the plan's split rebuilt here has fingerprint {split.fingerprint}, its results' is {recorded}"
        )
    return (*_targets(split), test_target_tokens(split.valid._dataset))


def _by_seed_user(records: list[dict], row: str, metric: str, seeds: list, users: set) -> dict[str, float]:
    """``row``'s per-user test values keyed ``"<seed>:<user>"``, on ``seeds`` and ``users`` only."""
    from recbole_m6rec.benchmarks.significance import per_user_by_seed

    def wanted(key: str) -> bool:
        seed, user = key.split(":", 1)
        return int(seed) in seeds and user in users

    return {key: value for key, value in per_user_by_seed(records, row, metric).items() if wanted(key)}


def compare_reports(cold_plan_path: str, cold_report: str, full_plan_path: str, full_report: str) -> dict:
    """Every row of the cold plan that the full plan also has (same name and model), cold split against full data,
    per group of test users, on the seeds both reports used (see the module's docstring)."""
    from recbole_m6rec.benchmarks.significance import defined_paired_ratio

    cold_plan = load_plan(cold_plan_path, overrides={}, rows=None, seeds=None)
    full_plan = load_plan(full_plan_path, overrides={}, rows=None, seeds=None)
    if "cold_items" not in cold_plan["common"]:
        raise ValueError(f"--cold_plan '{cold_plan_path}' holds out no items (no cold_items in its common settings)")
    if full_plan["common"].get("cold_items"):
        raise ValueError(f"--full_plan '{full_plan_path}' holds out items too (cold_items in its common settings)")
    if cold_plan["dataset"] != full_plan["dataset"]:
        raise ValueError(f"the plans read different datasets: {cold_plan['dataset']} vs {full_plan['dataset']}")
    metric = str(cold_plan["common"].get("valid_metric") or "").lower()
    full_metric = str(full_plan["common"].get("valid_metric") or "").lower()
    if not metric or metric != full_metric:
        raise ValueError(
            f"the plans' valid_metric must be set and equal (results keep per-user values of it): {metric or None} "
            f"vs {full_metric or None}"
        )
    cold_records = _used_records(Path(cold_report), cold_plan)
    full_records = _used_records(Path(full_report), full_plan)
    cold_targets, cold_items, last_items = _split_targets(cold_plan, cold_records, "--cold_plan")
    full_targets, _, _ = _split_targets(full_plan, full_records, "--full_plan")
    if cold_targets != full_targets:
        differing = sorted(
            u for u in set(cold_targets) | set(full_targets) if cold_targets.get(u) != full_targets.get(u)
        )
        raise ValueError(
            f"the two splits give different test targets for {len(differing)} users (e.g. {differing[:3]}); "
            "they are not comparable"
        )
    # as cold_groups splits them: a warm target after a cold last history item (which no ID model has trained as a
    # positive) is its own group, so the warm users' ratio is not the two conditions mixed
    group = {u: group_of(item, last_items.get(u), cold_items) for u, item in cold_targets.items()}
    groups = {name: {u for u, g in group.items() if g == name} for name in SHOWN_GROUPS}
    groups["all"] = set(cold_targets)
    shared = [
        row
        for row in cold_plan["rows"]
        if row in full_plan["rows"] and cold_plan["rows"][row]["model"] == full_plan["rows"][row]["model"]
    ]

    def seeds_of(records, row):
        return {int(r["seed"]) for r in records if r["row"] == row and metric in (r.get("per_user_test") or {})}

    def recorded_hash(records, row, seed):
        return next(r.get("config_hash") for r in records if r["row"] == row and int(r["seed"]) == seed)

    result = {
        "metric": metric,
        "cold_plan": cold_plan_path,
        "cold_report": cold_report,
        "full_plan": full_plan_path,
        "full_report": full_report,
        "group_users": {g: len(users) for g, users in groups.items()},
        "rows": {},
        "unpaired": {
            row: "no row of that name and model in the full plan" for row in cold_plan["rows"] if row not in shared
        },
    }
    for row in shared:
        seeds = sorted(seeds_of(cold_records, row) & seeds_of(full_records, row))
        if not seeds:
            result["unpaired"][row] = f"no seed with per-user test {metric} in both reports"
            continue
        sides = {
            "cold": (cold_plan, Path(cold_report), cold_records),
            "full": (full_plan, Path(full_report), full_records),
        }
        settings, unverified = {}, []
        for side, (plan, folder, records) in sides.items():
            for seed in seeds:  # the settings do not depend on the seed; each run's hash does
                job, settings[side] = tuned_spec(plan, folder, row, seed)
                if job["config_hash"] != recorded_hash(records, row, seed):
                    unverified.append(f"{side} seed {seed}")
        entry = {
            "seeds": seeds,
            "settings_differences": settings_differences(settings["cold"], settings["full"]),
            # runs whose recorded settings hash differs from the rebuilt one (an override on the leaderboard's
            # command line, another tuning record): their differences above are not what they ran
            "settings_unverified": unverified,
            "groups": {},
        }
        for group, users in groups.items():
            cold = _by_seed_user(cold_records, row, metric, seeds, users)
            full = _by_seed_user(full_records, row, metric, seeds, users)
            both = sorted(set(cold) & set(full))  # "<seed>:<user>" keys
            full_values = [full[k] for k in both]
            entry["groups"][group] = {
                "users": len({key.split(":", 1)[1] for key in both}),
                "cold_split": float(np.mean([cold[k] for k in both])) if both else None,
                "full_data": float(np.mean(full_values)) if both else None,
                "ratio": defined_paired_ratio(cold, full),
            }
        result["rows"][row] = entry
    return result


def markdown_reports(result: dict) -> str:
    def ratio(group: dict) -> str:
        r = group["ratio"]
        if r is None:
            return "– (no users)" if group["users"] == 0 else "– (full data 0)"
        return f"{r['ratio']:.3f}× [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"

    def mean(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    sizes = result["group_users"]
    lines = [
        f"Test {result['metric']} per user, trained without the cold items (`{result['cold_report']}`, plan "
        f"`{result['cold_plan']}`) vs on the full data (`{result['full_report']}`, plan `{result['full_plan']}`); "
        "the same test target for every user in both splits, and each split's fingerprint equal to its results' "
        "(checked). Mean over the users of a group and the seeds both reports used; the ratio's 95% interval "
        "resamples users, each with its values on every seed. **warm after cold**: a warm test target after a cold "
        "last history item (the user's validation target), which an ID model trained only as a negative on the cold "
        "split; **warm**: the other warm targets.",
        "",
        "| row | seeds | "
        + " | ".join(f"{g} ({sizes[g]} users): cold split | full data | ratio" for g in SHOWN_GROUPS)
        + " | all: ratio |",
        "|---|---|" + "---|---|---|" * len(SHOWN_GROUPS) + "---|",
    ]
    for row, entry in result["rows"].items():
        cells = [
            f"{mean(group['cold_split'])} | {mean(group['full_data'])} | {ratio(group)}"
            for group in (entry["groups"][g] for g in SHOWN_GROUPS)
        ]
        every = ratio(entry["groups"]["all"])
        lines.append(f"| {row} | {', '.join(str(s) for s in entry['seeds'])} | {' | '.join(cells)} | {every} |")
    lines += [
        "",
        "Settings in which a row's two runs differ (cold split vs full data), rebuilt from the plans and the reports' "
        "tuning; each run's recorded settings hash is checked against them:",
        "",
    ]
    for row, entry in result["rows"].items():
        unverified = entry["settings_unverified"]
        check = f" **Not verified** for {', '.join(unverified)}: their settings hash differs." if unverified else ""
        lines.append(f"- {row}: {difference_text(entry['settings_differences'])}.{check}")
    if result["unpaired"]:
        lines += ["", "Not compared: " + "; ".join(f"{row} ({why})" for row, why in result["unpaired"].items()) + "."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", default=None, help="result JSON of a run with cold_items")
    parser.add_argument("--full", default=None, help="result JSON of the same model and seed on the full data")
    parser.add_argument("--cold_plan", default="configs/cold_ml-100k.yaml", help="the cold run's benchmark plan")
    parser.add_argument("--cold_report", default=None, help="the cold plan's report folder (instead of --cold)")
    parser.add_argument("--full_plan", default=None, help="the full-data plan (with --full_report)")
    parser.add_argument("--full_report", default=None, help="the full-data plan's report folder (instead of --full)")
    parser.add_argument("--report", default=None, help="folder to write cold_vs_full.json and .md into")
    argv = sys.argv[1:] if argv is None else list(argv)  # rebuilding a split clears sys.argv (RecBole reads it)
    args = parser.parse_args(argv)
    folders = (args.cold_report, args.full_report, args.full_plan)
    if any(folders):
        if not all(folders) or args.cold or args.full:
            parser.error("compare two reports with --cold_report, --full_report and --full_plan (not --cold / --full)")
        try:
            result = compare_reports(args.cold_plan, args.cold_report, args.full_plan, args.full_report)
        except (ValueError, RuntimeError, OSError) as error:  # bad plans or folders, results on mixed splits
            raise SystemExit(f"cold_vs_full: {error}") from None
        body = markdown_reports(result)
    elif args.cold and args.full:
        result = compare(args.cold, args.full, args.cold_plan)
        body = markdown(result)
    else:
        parser.error("give --cold and --full (two results), or --cold_report, --full_report and --full_plan")
    publish("recbole_m6rec.benchmarks.cold_vs_full", argv, body, result, args.report, "cold_vs_full")


if __name__ == "__main__":
    main()
