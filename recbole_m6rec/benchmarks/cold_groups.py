"""A cold-item report's test users in three groups, and each row's cold hits against chance.

    python -m recbole_m6rec.benchmarks.cold_groups --config_files=configs/cold_ml-100k.yaml \
        --report=reports/cold_ml-100k

The report's ``cold_*`` / ``warm_*`` columns split the test users by their target. A "warm" user's history can still
end in a cold item: a cold item stays in the data as some users' validation target, so it is the last item of their
test history, and an ID model has never seen it as a positive (its embedding was only pushed down as a negative). So
the warm users are split again here: **warm after cold** (the validation target, the last history item, is cold) and
**warm** (it is not). For every row, the mean
per-user test metric (the plan's ``valid_metric``, as ``per_user_test`` records it) in each group, mean over seeds.

With one target per user, cold recall@K times the cold test users is the cold targets found. Random ranking finds
each cold user's target in its top K with probability K / (the items it can be shown: every item but the user's
masked history, training items and validation target, as ``eval_history_mask: all`` masks them), so the found count
has an exact chance distribution (a sum of unequal coin flips): its mean, and per seed the one-sided p of finding at
least as many by chance, and on how many distinct items the hits fall. Then the plan's ``pairs`` and its primary
row against every baseline, paired within each group (:func:`paired_by_group`).

It reads the runs the report used (the (row, seed) pairs of its ``results.csv``), so older results left in
``results/`` stay out. The split is rebuilt from the plan with RecBole's own data steps; its fingerprint must equal
the results'. Writes ``cold_groups.md`` and ``cold_groups.json`` into the report folder; trains nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks.headline import used_results
from recbole_m6rec.benchmarks.plan import load_plan
from recbole_m6rec.benchmarks.rebuilt_split import rebuild_split, require_same_split
from recbole_m6rec.benchmarks.report_tables import check_one_split, json_finite, run_labels, seed_list

__all__ = [
    "GROUPS",
    "at_least_by_chance",
    "cold_hits",
    "group_means",
    "group_of",
    "main",
    "paired_by_group",
    "split_groups",
]

GROUPS = ("cold", "warm after cold", "warm")


def group_of(target: str, last_item: str | None, cold_items: set) -> str:
    """A test user's group (:data:`GROUPS`) by its test target and the last item of its test history (its
    validation target)."""
    return "cold" if target in cold_items else ("warm after cold" if last_item in cold_items else "warm")


def split_groups(plan: dict) -> dict:
    """The plan's cold split rebuilt: its fingerprint, per test user (raw token) its ``group`` (:data:`GROUPS`),
    ``target`` (item token) and ``candidates`` (the items its test ranking can show: all but its training items and
    validation target), the number of cold items (``cold_items``), and
    per validation user its group there (``valid_users``: ``cold`` or ``warm`` by its validation target)."""
    from recbole_m6rec.cold_start import test_target_tokens
    from recbole_m6rec.model.most_pop import training_column

    if plan["common"].get("eval_history_mask") != "all":
        raise ValueError(
            f"the plan's eval_history_mask is {plan['common'].get('eval_history_mask')!r}; the chance counts here "
            "assume 'all' (training and validation items masked from the test ranking)"
        )
    split = rebuild_split(plan)
    if split.cold is None:
        raise ValueError("the plan holds out no cold items (set cold_items in its common settings)")
    train_set = split.train._dataset
    cold_items = set(split.cold.cold_item_tokens)
    trained = np.bincount(training_column(train_set, train_set.uid_field), minlength=train_set.user_num)
    user_ids = train_set.field2token_id[train_set.uid_field]
    n_items = train_set.item_num - 1  # without the padding id
    last = test_target_tokens(split.valid._dataset)  # the validation target: the last item of the test history
    users = {}
    for user, target in test_target_tokens(split.test._dataset).items():
        group = group_of(target, last.get(user), cold_items)
        masked = int(trained[user_ids[user]]) + (user in last)
        users[user] = {"group": group, "target": target, "candidates": n_items - masked}
    valid_users = {user: ("cold" if target in cold_items else "warm") for user, target in last.items()}
    return {"fingerprint": split.fingerprint, "users": users, "valid_users": valid_users, "cold_items": len(cold_items)}


def at_least_by_chance(probabilities: Sequence[float], found: int) -> float:
    """P(at least ``found`` successes) among independent trials with these success ``probabilities`` (exact)."""
    if found <= 0:
        return 1.0
    counts = np.zeros(len(probabilities) + 1)
    counts[0] = 1.0
    for p in probabilities:  # the distribution of the number of successes, one trial at a time
        counts[1:] = counts[1:] * (1 - p) + counts[:-1] * p
        counts[0] *= 1 - p
    return float(min(1.0, counts[found:].sum()))


def group_means(records: list[dict], users: dict, metric: str, rows: Sequence[str]) -> dict:
    """Per row: its seeds and, per group, the mean per-user test ``metric`` (mean over its seeds)."""
    result = {}
    for row in rows:
        runs = [r for r in records if r["row"] == row and metric in (r.get("per_user_test") or {})]
        if not runs:
            continue
        means = {}
        for group in GROUPS:
            per_seed = [
                statistics.fmean(scores)
                for r in runs
                if (scores := [float(v) for u, v in r["per_user_test"][metric].items() if users[u]["group"] == group])
            ]
            means[group] = statistics.fmean(per_seed) if per_seed else None
        result[row] = {"seeds": sorted((r["seed"] for r in runs), key=str), "mean": means}
    return result


def cold_hits(records: list[dict], users: dict, rows: Sequence[str]) -> dict:
    """Per cutoff K of the results' ``cold_recall@K``: the chance mean of cold targets found, and per row and seed
    the targets found, the one-sided chance p and, where the run kept per-user recall@K, how many distinct items
    those targets are (hits on one well-known item are not independent evidence)."""
    cold = [facts["candidates"] for facts in users.values() if facts["group"] == "cold"]
    cold_users = {user for user, facts in users.items() if facts["group"] == "cold"}
    cutoffs = sorted(
        {
            int(m.group(1))
            for r in records
            for key in r.get("test") or {}
            if (m := re.fullmatch(r"cold_recall@(\d+)", key))
        }
    )
    targets = {users[user].get("target") for user in cold_users} - {None}
    result = {"cold_users": len(cold), "cold_targets": len(targets) or None, "cutoffs": {}}
    for k in cutoffs:
        chance = [min(k, n) / n for n in cold]
        entry = {"chance_mean": float(sum(chance)), "rows": {}}
        for row in rows:
            for r in sorted((r for r in records if r["row"] == row), key=lambda r: str(r["seed"])):
                recall = (r.get("test") or {}).get(f"cold_recall@{k}")
                if recall is None:
                    continue
                found = int(round(recall * len(cold)))
                per_user = (r.get("per_user_test") or {}).get(f"recall@{k}")
                items = None
                if per_user is not None and targets:
                    items = len({users[u]["target"] for u, hit in per_user.items() if u in cold_users and hit > 0})
                entry["rows"].setdefault(row, []).append(
                    {"seed": r["seed"], "found": found, "items": items, "p": at_least_by_chance(chance, found)}
                )
        result["cutoffs"][k] = entry
    return result


PAIRED_METRICS = ("recall@10", "recall@100")


def paired_by_group(
    records: list[dict], users: dict, valid_users: dict, comparisons: Sequence[tuple[str, str]]
) -> list[dict]:
    """Each comparison ``(row, reference)`` within each user group, as the report's paired ratio: recall@10 and
    @100 of the row over the reference's, paired over users and the seeds both ran (bootstrap resampling users),
    p Holm-adjusted over every test here; on validation too, where both rows kept validation values, by the
    validation target's group (cold or warm; its own Holm family). A ratio whose reference finds nothing in a group
    (an ID model on cold targets) is left out: it is undefined."""
    from recbole_m6rec.benchmarks.report_stats import _with_holm
    from recbole_m6rec.benchmarks.significance import defined_paired_ratio, per_user_by_seed

    test_groups = {user: facts["group"] for user, facts in users.items()}

    tests: dict[str, dict] = {"test": {}, "valid": {}}
    for row, reference in comparisons:
        for split, key, groups, names in (
            ("test", "per_user_test", test_groups, GROUPS),
            ("valid", "per_user_valid", valid_users, ("cold", "warm")),
        ):
            for group in names:
                in_group = {user for user, its_group in groups.items() if its_group == group}
                for metric in PAIRED_METRICS:
                    mine, theirs = (
                        per_user_by_seed(records, r, metric, key, keep=in_group.__contains__) for r in (row, reference)
                    )
                    if (result := defined_paired_ratio(mine, theirs)) is not None:
                        # with one target per user, recall sums to the targets found: a ratio of 6 to 4 says little
                        shared = set(mine) & set(theirs)
                        result["hits"] = [round(sum(side[k] for k in shared)) for side in (mine, theirs)]
                        tests[split][f"{row}|{reference}|{group}|{metric}"] = result
    rows = []
    for split in ("test", "valid"):
        for name, result in _with_holm(tests[split]).items():
            row, reference, group, metric = name.split("|")
            rows.append(
                {"split": split, "row": row, "reference": reference, "group": group, "metric": metric, **result}
            )
    return rows


def comparisons_of(plan: dict) -> list[tuple[str, str]]:
    """The plan's named ``pairs`` and its primary row against every baseline (each row outside the primary's
    family): one reference alone could be the one a group's condition hurts most (a sequential ID model after a cold
    last item), so each is compared and all are Holm-adjusted together."""
    from recbole_m6rec.benchmarks.report_choice import _in_family, family_of

    pairs = [tuple(pair) for pair in (plan.get("pairs") or {}).values()]
    primary = plan.get("primary", "M6Rec")
    baselines = [row for row in plan["rows"] if not _in_family(row, family_of(primary))]
    if primary in plan["rows"]:  # a pair the plan names either way round is compared once
        pairs += [(primary, row) for row in baselines if (primary, row) not in pairs and (row, primary) not in pairs]
    return pairs


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def write(report_dir: Path, plan: dict, records: list[dict], facts: dict, metric: str, command: str) -> dict:
    rows = list(plan["rows"])
    users = facts["users"]
    sizes = {group: sum(1 for f in users.values() if f["group"] == group) for group in GROUPS}
    result = {
        "metric": metric,
        "split_fingerprint": facts["fingerprint"],
        "group_users": sizes,
        "groups": group_means(records, users, metric, rows),
        "cold_hits": cold_hits(records, users, rows),
        "paired": paired_by_group(records, users, facts.get("valid_users") or {}, comparisons_of(plan)),
    }
    text = [
        f"# Cold-item test users in three groups, and cold hits against chance: {plan['dataset']}",
        "",
        f"Command: `{command}`",
        "",
        f"Split fingerprint `{facts['fingerprint']}`, rebuilt from the plan and equal to every result's. "
        "**warm after cold**: a warm test target after a cold last history item (the user's validation target), "
        "an item no ID model has seen as a positive. Validation has no such group (a validation history holds "
        "training items only), so no validation score anticipates it. Test only, but for the validation lines of "
        "the paired comparisons.",
        "",
        f"## Mean per-user test {metric} by group",
        "",
        "| row | seeds | " + " | ".join(f"{g} ({sizes[g]} users)" for g in GROUPS) + " |",
        "|---|---|" + "---|" * len(GROUPS),
    ]
    for row, entry in result["groups"].items():
        seeds = seed_list(entry["seeds"])
        text.append(f"| {row} | {seeds} | " + " | ".join(_cell(entry["mean"][g]) for g in GROUPS) + " |")
    hits = result["cold_hits"]
    text += [
        "",
        f"## Cold targets found, of {hits['cold_users']} cold test users, against random ranking",
        "",
        "Per seed: targets found (cold recall@K × cold users), on how many distinct items where the run kept its "
        "per-user recall@K, and the chance of finding at least as many by random ranking of the items each user can "
        "be shown (one-sided, exact, counting users as independent: hits on one item are not)."
        + (
            f" The {hits['cold_users']} cold test users' targets are {hits['cold_targets']} distinct items of the "
            f"{facts['cold_items']} cold ones."
            if hits.get("cold_targets") and facts.get("cold_items")
            else ""
        ),
        "",
    ]
    for k, entry in hits["cutoffs"].items():
        text += [f"At {k}: random ranking finds {entry['chance_mean']:.2f} on average.", ""]
        text += ["| row | found per seed | chance p per seed |", "|---|---|---|"]
        for row, seeds in entry["rows"].items():
            found = ", ".join(f"{s['found']}{_on_items(s['found'], s.get('items'))} (seed {s['seed']})" for s in seeds)
            chance = ", ".join(format(s["p"], ".3g") for s in seeds)
            text.append(f"| {row} | {found} | {chance} |")
        text.append("")
    text += _paired_lines(result["paired"], sizes, facts.get("valid_users") or {})
    # the runs read, so that the report can tell whether this file still matches it; each test user's group and
    # target, so that every count here can be checked against the per-user values in results/
    result["runs"] = run_labels(records)
    result["users"] = {user: {"group": f["group"], "target": f.get("target")} for user, f in sorted(users.items())}
    atomic_write_text(report_dir / "cold_groups.json", json.dumps(json_finite(result), indent=1) + "\n")
    atomic_write_text(report_dir / "cold_groups.md", "\n".join(text))
    return result


def _on_items(found: int, items: int | None) -> str:
    return "" if items is None or not found else f" on {items} item{'' if items == 1 else 's'}"


def _hits(hits: list | None) -> str:
    return "" if not hits else f"; {hits[0]} vs {hits[1]} targets found"


def _bound(value: float) -> str:
    """An interval end; unbounded where some resamples drew none of the reference's hits (a ratio over 0)."""
    return f"{value:.3f}" if np.isfinite(value) else "unbounded"


def _paired_lines(paired: list[dict], sizes: dict, valid_users: dict) -> list[str]:
    if not paired:
        return []
    valid_sizes = {g: sum(1 for v in valid_users.values() if v == g) for g in ("cold", "warm")}
    lines = [
        "## Paired comparisons within each group",
        "",
        "Row / reference, mean over users and the seeds both ran (95% bootstrap interval resampling users; p for "
        "ratio = 1, Holm-adjusted over all the test lines, and separately over the validation lines). Validation "
        f"groups follow each user's validation target ({valid_sizes['cold']} cold, {valid_sizes['warm']} warm "
        "users); it chose each run's best epoch on all users, so it leans upward for every row. A reference that "
        "finds nothing in a group (an ID model on cold targets) gives no ratio. Each line also counts the targets "
        "each side found (summed over the seeds): a ratio of a few hits moves a lot with one.",
        "",
        "| split | row / reference | group (users) | metric | ratio [95% interval] | p | Holm p |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in paired:
        n = (sizes if r["split"] == "test" else valid_sizes).get(r["group"])
        bound = "≤ " if r["p_is_bound"] else ""  # a bootstrap p at its floor only bounds the p-value
        lines.append(
            f"| {r['split']} | {r['row']} / {r['reference']} | {r['group']} ({n}) | {r['metric']} | "
            f"{r['ratio']:.3f}× [{r['ci_low']:.3f}, {_bound(r['ci_high'])}] ({r['n_seeds']} seed"
            f"{'' if r['n_seeds'] == 1 else 's'}{_hits(r.get('hits'))}) | {bound}{r['p_value']:.3g} | "
            f"{bound}{r['holm_p']:.3g} |"
        )
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", required=True, help="the cold-item plan the report was made with")
    parser.add_argument("--report", required=True, help="the report folder (its results/)")
    parser.add_argument(
        "--rows", default=None, help="comma-separated rows to read (default: every row of the plan with results)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = "python -m recbole_m6rec.benchmarks.cold_groups " + " ".join(sys.argv[1:] if argv is None else argv)
    wanted = [row.strip() for row in args.rows.split(",") if row.strip()] if args.rows else None
    try:
        plan = load_plan(args.config_files, {}, wanted, None)  # refuses a row the plan does not have
    except ValueError as error:
        parser.error(f"--rows: {error}")
    report_dir = Path(args.report)
    records = used_results(report_dir, plan["rows"])
    if records is None:
        raise SystemExit(f"--report={args.report}: no results.csv there; run it on a report the leaderboard wrote")
    if not records:
        raise SystemExit(f"--report={args.report}: its report used no finished result of the plan's rows")
    masks = sorted({str(r.get("history_mask")) for r in records} - {"all"})
    if masks:
        raise SystemExit(
            f"results with eval_history_mask {', '.join(masks)}: the chance counts here assume 'all' for every run"
        )
    fingerprint = check_one_split(records)
    try:
        facts = split_groups(plan)
    except ValueError as error:
        raise SystemExit(f"--config_files={args.config_files}: {error}") from None
    require_same_split(facts["fingerprint"], fingerprint)
    metric = str(plan["common"].get("valid_metric") or "").lower()
    result = write(report_dir, plan, records, facts, metric, command)
    print((report_dir / "cold_groups.md").read_text(encoding="utf-8"))
    return result


if __name__ == "__main__":
    main()
