"""The report's text around the tables: the split sentence, which runs stopped at their epoch cap, where the numbers
came from (commits, libraries, code files that differ between rows), the tuning trials, and a reference run's numbers
next to this one's.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from recbole_m6rec.benchmarks import provenance
from recbole_m6rec.benchmarks.report_tables import CAP_MARK, cpu_of, epochs_cell, record_trains, run_seconds, runs_of
from recbole_m6rec.benchmarks.runner import load_results
from recbole_m6rec.benchmarks.tuning_edges import edge_choices

ALONE_BELOW_CORES = 0.25  # other processes' average busy cores under which a run counts as having run alone

__all__ = ["split_sentence", "convergence_lines", "provenance_lines", "tuning_lines", "reference_lines"]


def split_sentence(fingerprint: str, masks: list[str], labelled: bool) -> str:
    """The sentence under the provenance: the split every row shares, and how history items are masked."""
    if labelled:
        return (
            f"Split fingerprint: `{fingerprint}` (identical for every row, labels included; context and "
            "sequential models share the split and are scored on the same labelled samples). "
            "Labelled evaluation: no ranking, so no history masking."
        )
    return (
        f"Split fingerprint: `{fingerprint}` (identical for every row; general and sequential models share the "
        f"leave-one-out split). History masking rule for every row: `{', '.join(masks)}` "
        "(see `recbole_m6rec/evaluation.py`)."
    )


def convergence_lines(records: list[dict]) -> list[str]:
    """The runs that stopped at their epoch cap (marked in the table), or that none did; the runs continued after
    an interruption."""
    done = [r for r in records if r.get("status") == "ok" and record_trains(r)]
    capped = sorted({f"{r['row']} (seed {r['seed']})" for r in done if r.get("hit_cap")})
    unknown = sorted({f"{r['row']} (seed {r['seed']})" for r in done if "hit_cap" not in r})
    lines = [f"{CAP_MARK} Stopped at its epoch cap, possibly before converging: {', '.join(capped)}."] if capped else []
    if unknown:  # results written before runs recorded it
        lines.append(f"Results that do not record whether they reached their epoch cap: {', '.join(unknown)}.")
    elif not capped:
        lines.append("Every trained row stopped early on its validation metric, before its epoch cap.")
    resumed = [
        f"{r['row']} (seed {r['seed']}) at epoch {r['resumed_from_epoch']}"
        for r in records
        if r.get("status") == "ok" and r.get("resumed_from_epoch")
    ]
    if resumed:
        lines.append(
            "Continued after an interruption, from the resume point of the last evaluated epoch (on the same CPU "
            "kernels, the same metrics as an uninterrupted run; its measured train time covers the continued epochs only, so its time in the table is "
            f"that scaled to all its epochs, marked ~): {', '.join(sorted(resumed))}."
        )
    return lines


def provenance_lines(records: list[dict]) -> list[str]:
    """Which commit, working tree and libraries the rows ran, and which shared code files differ between rows."""
    done = [r for r in records if r.get("status") == "ok"]
    origins = [r.get("provenance") or {} for r in done]
    missing = [f"{r['row']}/seed{r['seed']}" for r, o in zip(done, origins) if not o.get("code")]
    commits = sorted({(o.get("git_commit") or "unknown")[:10] for o in origins if o.get("code")})
    dirty = [f"{r['row']}/seed{r['seed']}" for r, o in zip(done, origins) if o.get("dirty_code")]
    versions = _runs_by(
        (r, ", ".join(f"{k} {v}" for k, v in sorted((o.get("versions") or {}).items())))
        for r, o in zip(done, origins)
        if o.get("code")
    )
    lines = []
    if commits:
        tree = sum(bool(o.get("git_dirty")) for o in origins if o.get("code"))
        lines.append(
            f"- Commit{'s' if len(commits) > 1 else ''}: {', '.join(f'`{c}`' for c in commits)}; uncommitted "
            f"changes to tracked files for {tree} of {len(origins) - len(missing)} runs (results written by older "
            f"versions of the runner counted untracked files too)."
        )
        lines.append(
            "- Runs whose own code files differ from their commit: " + (", ".join(dirty) if dirty else "none") + "."
        )
    lines += _grouped_lines(
        versions, "- Libraries:", "- **Rows ran different library versions** (each result's `provenance.versions`):"
    )
    if missing:
        lines.append(f"- **No provenance recorded** (older results): {', '.join(missing)}.")
    changed_since = [(r, provenance.stale_reasons(r)) for r, o in zip(done, origins) if o.get("code")]
    changed_since = [(r, reasons) for r, reasons in changed_since if reasons]
    if changed_since:  # kept with --keep_finished: a --resume alone would run these again
        lines.append("- **Rows whose code, data or libraries changed after they ran** (kept as they are):")
        lines += [f"  - {r['row']}/seed{r['seed']}: {'; '.join(reasons)}" for r, reasons in changed_since]
    runtimes = _runs_by(
        (
            r,
            f"{o['runtime'].get('torch_threads')} torch thread(s), allocator "
            f"{o['runtime'].get('ld_preload') or 'default (glibc)'}",
        )
        for r, o in zip(done, origins)
        if o.get("runtime")
    )  # times only: neither changes a number
    lines += _grouped_lines(
        runtimes, "- Runtime (changes times, not results):", "- Runtime (changes times, not results), by run:"
    )
    lines += _cpu_lines(done)
    lines += _beside_lines(done)
    # files shared by rows, with different contents
    contents: dict[str, dict[str, set]] = {}
    for r, o in zip(done, origins):
        for path, digest in (o.get("code") or {}).items():
            contents.setdefault(path, {}).setdefault(digest, set()).add(r["row"])
    differing = {path: by_hash for path, by_hash in contents.items() if len(by_hash) > 1}
    if differing:
        lines.append("- **Rows ran different versions of shared code files**:")
        for path, by_hash in sorted(differing.items()):
            parts = "; ".join(f"`{(h or 'none')[:8]}`: {', '.join(sorted(rows))}" for h, rows in by_hash.items())
            lines.append(f"  - `{path}`: {parts}")
    elif contents:
        lines.append(
            "- Every plugin file that two runs share has the same content in both; the `code` column hashes "
            "the plugin files each row imported (baselines import none of the language-model code)."
        )
    return lines


def _runs_by(pairs) -> dict[str, list[str]]:
    """``{text: runs}`` from ``(result, text)`` pairs: which runs share each value (a library set, a runtime)."""
    groups: dict[str, list[str]] = {}
    for record, text in pairs:
        groups.setdefault(text, []).append(f"{record['row']}/seed{record['seed']}")
    return groups


def _grouped_lines(groups: dict[str, list[str]], one: str, several: str) -> list[str]:
    """One line when every run shares the value; else a heading and the runs of each value, so that a reader can
    tell which rows differ."""
    if len(groups) == 1:
        return [f"{one} {next(iter(groups))}."]
    return [several] + [f"  - {text}: {', '.join(runs)}" for text, runs in sorted(groups.items())] if groups else []


def _cpu_lines(done: list[dict]) -> list[str]:
    """The CPUs the rows ran on (and torch's CPU kernel set, where recorded); where there were several, or older
    results that do not say, which rows ran on which, since times compare only on one CPU and numbers reproduce bit
    for bit only on one kernel set."""
    cpus: dict[str, list[str]] = {}
    unknown = []
    for r in done:
        cpu = cpu_of(r, with_features=True)
        (unknown if cpu is None else cpus.setdefault(cpu, [])).append(f"{r['row']}/seed{r['seed']}")
    if not cpus:
        return _unrecorded_part_lines(done)
    if len(cpus) == 1 and not unknown:
        lines = [f"- CPU: {next(iter(cpus))}."]
    else:
        lines = ["- **Rows ran on different CPUs, or may have** (compare times only within one):"]
        lines += [f"  - {cpu}: {', '.join(runs)}" for cpu, runs in sorted(cpus.items())]
        lines += [f"  - not recorded (older results): {', '.join(unknown)}"] if unknown else []
    return lines + _mixed_kernel_lines(done) + _unrecorded_part_lines(done)


def _unrecorded_part_lines(done: list[dict]) -> list[str]:
    """Continued runs older than per-part records: the CPU they name is their last part's; the parts before it,
    which may have trained the best epoch, ran on a CPU and kernel set nobody recorded."""
    unknown = []
    for r in done:
        parts = (r.get("provenance") or {}).get("part_runtimes") or []
        earlier = parts[:-1] if parts else [None]  # a part from before the records began is None
        if r.get("resumed_from_epoch") and any(not (part or {}).get("cpu") for part in earlier):
            unknown.append(f"{r['row']}/seed{r['seed']}")
    if not unknown:
        return []
    return [
        "- Continued runs whose earlier parts' CPU and kernel set were not recorded (a CPU named above is their last "
        "part's): " + ", ".join(unknown) + "."
    ]


def _mixed_kernel_lines(done: list[dict]) -> list[str]:
    """Runs continued under another torch CPU kernel set than their earlier part (a resume on another CPU kind):
    their numbers do not reproduce bit for bit, and can move by as much as another seed."""
    mixed = []
    for r in done:
        parts = (r.get("provenance") or {}).get("part_runtimes") or []
        kernels = [(part or {}).get("cpu_capability") or "not recorded" for part in parts]
        if len(set(kernels) - {"not recorded"}) > 1:
            mixed.append(f"{r['row']}/seed{r['seed']} ({' then '.join(kernels)})")
    if not mixed:
        return []
    return [
        "- **Continued under another torch CPU kernel set** (not reproducible bit for bit; can move by as much as "
        "another seed): " + ", ".join(mixed)
    ]


def _beside_lines(done: list[dict]) -> list[str]:
    """Which runs had the machine to themselves: times are comparable only between runs that did, or that shared
    it alike (the job records the cores other processes kept busy during the run)."""
    measured = [(r, (r.get("machine") or {}).get("other_cores")) for r in done]
    known = [(r, cores) for r, cores in measured if cores is not None]
    if not known:
        return []
    cpus = (known[0][0].get("machine") or {}).get("cpus")
    shared = sorted((r for r, cores in known if cores >= ALONE_BELOW_CORES), key=lambda r: (r["row"], r["seed"]))
    text = (
        f"- Other processes beside each run (cores they kept busy on average, {cpus} CPUs): "
        + (
            f"{len(known) - len(shared)} of {len(known)} runs ran alone (under {ALONE_BELOW_CORES}); "
            "beside others, so their times are not alone-times: "
            + ", ".join(f"{r['row']}/seed{r['seed']} ({r['machine']['other_cores']})" for r in shared)
            if shared
            else f"none: all {len(known)} runs ran alone (under {ALONE_BELOW_CORES})"
        )
        + "."
    )
    unmeasured = len(measured) - len(known)
    return [text + (f" Not recorded for {unmeasured} older runs." if unmeasured else "")]


def tuning_lines(tuned: dict[str, dict], main_metric: str) -> list[str]:
    """The ``## Tuning`` section: each tuned row's trials and chosen settings; nothing when no row was tuned."""
    if not tuned:
        return []
    if all("borrowed_from" in record for record in tuned.values()):
        return borrowed_tuning_lines(tuned, main_metric)
    lines = [
        "## Tuning",
        "",
        f"Each tuned row's trials at the tuning seed, selected on valid {main_metric}; the "
        "chosen settings then ran on every seed (already in the per-row settings below). The winning trial is that "
        "row's run at the tuning seed, not run again: its valid score is the best of its trials, so it is a little "
        "optimistic, and its test score shares that run's luck. Every tuned row gets the same number of trials "
        "from the space its plan declares (how each space was chosen is the plan's to say); the rows that train "
        "nothing (or are not tuned) get no such edge, and the other seeds' runs carry none of it. Trials are "
        "numbered from 1, in the order the tuner proposed them; `epochs (best)`: epochs run and the best epoch "
        "(0-based), and for a trial continued after an interruption the epoch it continued from.",
        "",
    ]
    for row, record in tuned.items():
        if record.get("error"):
            lines += [f"- {row}: not tuned ({record['error']}).", ""]
            continue
        trials = record.get("trials") or []
        if record.get("unfinished"):
            best = f"; best so far `{json.dumps(record.get('best_params'))}`" if record.get("best_params") else ""
            lines.append(
                f"{row}: **tuning not finished**, {len(trials)} of {record.get('budget')} trials so far "
                f"({record.get('algo')}, space `{json.dumps(record.get('space'))}`){best}. Its seeds wait for the "
                "chosen settings: its table line says `not run yet`."
            )
            if not trials:
                lines.append("")
                continue
        else:
            lines.append(
                f"{row} ({record.get('algo')}, {len(trials)} trials, space "
                f"`{json.dumps(record.get('space'))}`): chose `{json.dumps(record.get('best_params'))}`"
                + _edge_text(record)
            )
        lines.append("")
        lines.append(f"| trial | settings | status | valid {main_metric} | epochs (best) |")
        lines.append("|---|---|---|---|---|")
        for trial in trials:
            value = (trial.get("valid") or {}).get(main_metric)
            lines.append(
                f"| {_trial_number(trial)} | `{json.dumps(trial.get('params'))}` | {trial.get('status')} | "
                f"{'–' if value is None else f'{value:.4f}'} | {_trial_epochs(trial)} |"
            )
        lines.append("")
        if record.get("other_files"):
            names = ", ".join(f"`{name}`" for name in record["other_files"])
            lines += [
                f"`tuning/{row}/` also keeps {len(record['other_files'])} result file(s) that none of these trials "
                "uses (runs of other settings or older code, or trials past a budget since cut; kept, not counted): "
                f"{names}.",
                "",
            ]
    return lines


def _edge_text(record: dict) -> str:
    edges = edge_choices(record.get("space") or {}, record.get("best_params") or {})
    return f"; at the edge of its space: {', '.join(edges)}, so a wider space might choose otherwise" if edges else ""


def _trial_epochs(trial: dict) -> str:
    """``"71 (64), continued from 22"``: the results table's epochs cell for one run, and a resume point."""
    text = epochs_cell([(True, trial.get("epochs_run", "–"), trial.get("best_epoch"), False)])
    if trial.get("resumed_from_epoch"):
        text += f", continued from {trial['resumed_from_epoch']}"
    return text


def _trial_number(trial: dict) -> str:
    """A trial's 1-based number (the tuning record keeps 0-based indices; `--trials` and the text count from 1)."""
    index = trial.get("index")
    return str(index + 1) if isinstance(index, int) else "–"


def borrowed_tuning_lines(tuned: dict[str, dict], main_metric: str) -> list[str]:
    """The ``## Tuning`` section of a plan whose rows take another report's tuning (``tuning.from``)."""
    lines = [
        "## Tuning",
        "",
        "No row is tuned here: each tuned row takes the settings that another report's tuning chose for the row of "
        f"its name or its `tuned_as` (its trials at the tuning seed, selected on valid {main_metric} of that "
        "report's split), and runs them on every seed here; a `tuned_as` row takes another row's choice, not one "
        "made for it. No run here is a winning trial, and validation here chose nothing but each run's best epoch; "
        "where this split shares its validation targets with that report's (a cold-item split of the same data "
        "does), the choice's luck on them can carry over.",
        "",
    ]
    for row, record in tuned.items():
        if record.get("error"):
            lines += [f"- {row}: not tuned ({record['error']}): it ran with the settings it lists.", ""]
            continue
        if record.get("unfinished"):
            lines += [f"- {row} **{record['unfinished']}**. Its table line says `not run yet`.", ""]
            continue
        via = "" if record.get("source_row") == row else f" (row {record.get('source_row')} there)"
        lines += [
            f"- {row}: `{json.dumps(record.get('best_params'))}` from `{record.get('borrowed_from')}`{via}: "
            f"{record.get('source_trials')} {record.get('algo')} trials at seed {record.get('seed')}, space "
            f"`{json.dumps(record.get('space'))}`, best valid {main_metric} {record.get('best_valid'):.4f} there"
            f"{_edge_text(record)}.",
            "",
        ]
    return lines


def reference_ran(mine: dict[int, tuple], theirs: dict[int, tuple]) -> str:
    """Whether a row's reference runs ran the settings and plugin code this run's did, on the seeds both ran (the
    settings hash covers the seed): a reference of other code or settings is not this run's number to reproduce."""
    if not mine or not theirs:
        return "–"
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return "other seeds"
    pairs = [(mine[seed], theirs[seed]) for seed in seeds]
    if any(None in ours or None in their for ours, their in pairs):
        return "not recorded"
    settings = all(ours[0] == their[0] for ours, their in pairs)
    code = all(ours[1] == their[1] for ours, their in pairs)
    return {
        (True, True): "same",
        (True, False): "other code",
        (False, True): "other settings",
        (False, False): "other code and settings",
    }[(settings, code)]


def reference_lines(summary: list[dict], reference_dir: Path, main_metric: str) -> list[str]:
    """This run's valid and test ``main_metric`` and time per row next to the mean of the reference folder's, and
    whether the reference ran the same settings and code."""
    reference = [r for r in load_results(reference_dir) if r.get("status") == "ok"]
    if not reference:
        return [f"No finished results in the reference folder `{reference_dir}`."]
    lines = [
        f"This run next to the reference in `{reference_dir}` (mean over seeds). `reference ran`: whether the "
        "reference's runs of that row, on the seeds both ran, had this run's settings and plugin code (`same`; "
        "libraries, data and CPU are not compared: identical numbers need the same machine and libraries, "
        "otherwise they agree only within seed noise, see docs/reliability.md, Determinism), `other code`, "
        "`other settings`, both, `other seeds`, or `not recorded` (an older result without these hashes):",
        "",
        f"| model | valid {main_metric} | test {main_metric} | reference valid | reference test | "
        "train+eval s | reference s | reference ran |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        theirs = [r for r in reference if r["row"] == e["row"]]

        def mean(values):
            values = [v for v in values if v is not None]
            return f"{statistics.fmean(values):.4f}" if values else "–"

        ref_valid = mean([(r.get("valid") or {}).get(main_metric) for r in theirs])
        ref_test = mean([(r.get("test") or {}).get(main_metric) for r in theirs])
        ref_time = [run_seconds(r) for r in theirs]
        mine, valid, seconds = e.get(main_metric), e.get("valid"), e.get("train_seconds")
        cells = [
            e["row"],
            f"{valid[0]:.4f}" if valid else "–",
            f"{mine[0]:.4f}" if mine else "–",
            ref_valid,
            ref_test,
            f"{seconds[0]:.0f}" if seconds else "–",
            f"{statistics.fmean(ref_time):.0f}" if ref_time else "–",
            reference_ran(e.get("runs_of") or {}, runs_of(theirs)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
