"""Where in the catalogue each row wins or loses: a ranking report's test metric by strata of its test users.

    python -m recbole_m6rec.benchmarks.strata --config_files=configs/levers_ml-100k.yaml \
        --report=reports/ml-100k-levers --reference=SASRec

Two stratifications of the test users, each into ``--bins`` groups at quantiles over the test users: the training
popularity of the user's test target (its training interactions), and the length of the user's training history.
For every row, the mean per-user test metric (the plan's ``valid_metric``, as ``per_user_test`` records it) in each
group, mean over the row's seeds, and its ratio to ``--reference``'s on the seeds both ran. The split is rebuilt from
the plan with RecBole's own data steps, and its fingerprint must equal the results': the strata are computed on the
very split the rows were scored on. Writes ``strata.md`` and ``strata.json`` into the report folder; reads nothing
else and trains nothing.

What it is for: a ratio over all users can hide a row that wins on rare targets and loses on popular ones. The
groups are small (a quarter of ml-100k's 943 test users each), so read a difference that one seed shows and another
does not as noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks.plan import is_labelled, load_plan
from recbole_m6rec.benchmarks.rebuilt_split import rebuild_split, require_same_split
from recbole_m6rec.benchmarks.report_tables import check_one_split, seed_list
from recbole_m6rec.benchmarks.runner import load_results

__all__ = ["split_facts", "strata", "main"]


def split_facts(plan: dict) -> dict:
    """The plan's split rebuilt by the data steps its runs use: its fingerprint, and per test user (raw token) the
    test target's training interactions (``target_count``) and the user's training interactions (``history``)."""
    from recbole_m6rec.cold_start import test_target_tokens
    from recbole_m6rec.model.most_pop import training_column, training_item_counts

    split = rebuild_split(plan)
    train_set, test_set = split.train._dataset, split.test._dataset
    if len(test_set.inter_feat) != len(set(test_set.inter_feat[test_set.uid_field].tolist())):
        raise ValueError(
            f"the plan's split holds several test targets per user (eval_args.split: "
            f"{plan['common'].get('eval_args', {}).get('split')}); strata need one per user (LS: valid_and_test)"
        )
    counts = training_item_counts(train_set)
    history = np.bincount(training_column(train_set, train_set.uid_field), minlength=train_set.user_num)
    item_ids = train_set.field2token_id[train_set.iid_field]
    user_ids = train_set.field2token_id[train_set.uid_field]
    users = {
        user: {"target_count": int(counts[item_ids[item]]), "history": int(history[user_ids[user]])}
        for user, item in test_target_tokens(test_set).items()
    }
    return {"fingerprint": split.fingerprint, "users": users}


def _edges(values: list[int], bins: int) -> list[float]:
    """Group upper bounds at the quantiles of ``values`` (duplicates dropped: ties never split across groups)."""
    cuts = np.quantile(np.asarray(values, dtype=float), [k / bins for k in range(1, bins)])
    return sorted(set(float(c) for c in cuts))


def _group_of(value: int, edges: list[float]) -> int:
    return int(np.searchsorted(edges, value, side="left"))


def _label(k: int, edges: list[float], values: list[int]) -> str:
    members = [v for v in values if _group_of(v, edges) == k]
    return f"{min(members)}–{max(members)}"


def strata(
    records: list[dict], users: dict, key: str, metric: str, rows: Sequence[str], bins: int, reference: str | None
) -> dict:
    """Per group of ``users[*][key]``: its range and size, and per row the mean of the per-user ``metric`` (mean
    over the row's seeds) and the ratio to ``reference``'s mean on the seeds both ran."""
    values = [facts[key] for facts in users.values()]
    edges = _edges(values, bins)
    groups = sorted({_group_of(v, edges) for v in values})
    member = {user: _group_of(facts[key], edges) for user, facts in users.items()}
    by_row: dict[str, dict] = {}
    for r in records:
        if r.get("status") == "ok" and metric in (r.get("per_user_test") or {}) and r["row"] in rows:
            by_row.setdefault(r["row"], {})[r["seed"]] = r["per_user_test"][metric]

    def mean_in(per_user: dict, group: int) -> float | None:
        scores = [float(v) for user, v in per_user.items() if member.get(user) == group]
        return statistics.fmean(scores) if scores else None

    result = {
        "key": key,
        "groups": [
            {"range": _label(g, edges, values), "users": sum(1 for m in member.values() if m == g)} for g in groups
        ],
        "rows": {},
    }
    for row in rows:
        seeds = by_row.get(row)
        if not seeds:
            continue
        means = {seed: [mean_in(per_user, g) for g in groups] for seed, per_user in seeds.items()}
        entry = {
            "seeds": sorted(seeds, key=str),
            "mean": [_mean([means[s][k] for s in seeds]) for k in range(len(groups))],
        }
        shared = sorted(set(seeds) & set(by_row.get(reference) or {}), key=str) if reference else []
        if shared and row != reference:
            theirs = {s: [mean_in(by_row[reference][s], g) for g in groups] for s in shared}
            entry["ratio_seeds"] = shared
            entry["ratio"] = [
                _ratio(_mean([means[s][k] for s in shared]), _mean([theirs[s][k] for s in shared]))
                for k in range(len(groups))
            ]
        result["rows"][row] = entry
    return result


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _table(result: dict) -> list[str]:
    groups = result["groups"]
    head = " | ".join(f"{g['range']} ({g['users']} users)" for g in groups)
    lines = [f"| row | seeds | ratio on seeds | {head} |", "|---|---|---|" + "---|" * len(groups)]
    for row, entry in result["rows"].items():
        cells = []
        for k, mean in enumerate(entry["mean"]):
            cell = "–" if mean is None else f"{mean:.4f}"
            ratio = (entry.get("ratio") or [None] * len(groups))[k]
            cells.append(cell + (f" ({ratio:.2f}×)" if ratio is not None else ""))
        seeds, ratio_seeds = (seed_list(entry.get(key) or []) for key in ("seeds", "ratio_seeds"))
        lines.append(f"| {row} | {seeds} | {ratio_seeds or '–'} | " + " | ".join(cells) + " |")
    return lines


def write(
    report_dir: Path,
    plan: dict,
    records: list[dict],
    facts: dict,
    metric: str,
    bins: int,
    reference: str | None,
    command: str,
) -> dict:
    rows = list(plan["rows"])
    result = {
        "metric": metric,
        "split_fingerprint": facts["fingerprint"],
        "reference": reference,
        "target_popularity": strata(records, facts["users"], "target_count", metric, rows, bins, reference),
        "history_length": strata(records, facts["users"], "history", metric, rows, bins, reference),
    }
    ratio_note = (
        f" In brackets: the row's mean over {reference}'s, both on the seeds they both ran (`ratio on seeds`), "
        "which can differ from the row's own seeds in the cell."
        if reference
        else ""
    )
    text = [
        f"# Test {metric} by stratum of the test users: {plan['dataset']}",
        "",
        f"Command: `{command}`",
        "",
        f"Split fingerprint `{facts['fingerprint']}`, rebuilt from the plan and equal to every result's. Each cell is "
        f"the mean per-user test {metric} of the group's users, mean over the row's seeds.{ratio_note} Groups are cut "
        "at quantiles over the test users; a tie never straddles two groups, so sizes differ. Small groups: read a "
        "difference that one seed shows and another does not as noise. Test only, with no intervals: exploratory, "
        "a place to look for levers, which are then chosen on validation like everything else.",
        "",
        "## By the test target's training interactions",
        "",
        *_table(result["target_popularity"]),
        "",
        "## By the user's training interactions",
        "",
        *_table(result["history_length"]),
        "",
    ]
    atomic_write_text(report_dir / "strata.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(report_dir / "strata.md", "\n".join(text))
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", required=True, help="the plan the report was made with")
    parser.add_argument("--report", required=True, help="the report folder (its results/)")
    parser.add_argument("--reference", default=None, help="a row every other row's groups are divided by")
    parser.add_argument("--bins", type=int, default=4, help="groups per stratification, >= 2 (default 4)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = "python -m recbole_m6rec.benchmarks.strata " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.bins < 2:
        parser.error(f"--bins is {args.bins}; it needs at least 2 groups")
    plan = load_plan(args.config_files, {}, None, None)
    if is_labelled(plan):
        parser.error(f"{args.config_files} is a labelled (click-through) plan; strata are for ranking plans")
    if args.reference is not None and args.reference not in plan["rows"]:
        parser.error(f"--reference={args.reference} is not a row of the plan; rows: {', '.join(plan['rows'])}")
    report_dir = Path(args.report)
    records = [r for r in load_results(report_dir) if r.get("row") in plan["rows"] and r.get("status") == "ok"]
    if not records:
        raise SystemExit(f"--report={args.report}: no finished results of the plan's rows in its results/")
    fingerprint = check_one_split(records)
    facts = split_facts(plan)
    require_same_split(facts["fingerprint"], fingerprint)
    metric = str(plan["common"].get("valid_metric") or "").lower()
    if not any(metric in (r.get("per_user_test") or {}) for r in records):
        raise SystemExit(
            f"no result records per-user test values of the plan's valid_metric ({metric or 'not set'}): strata "
            "need them (results written by the leaderboard record them for ranking plans)"
        )
    result = write(report_dir, plan, records, facts, metric, args.bins, args.reference, command)
    print((report_dir / "strata.md").read_text(encoding="utf-8"))
    return result


if __name__ == "__main__":
    main()
