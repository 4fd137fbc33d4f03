"""How a report compares the time of two rows: train+eval time per seed, only where both ran on one CPU, split into
the cost of an epoch and the number of epochs early stopping ran."""

from __future__ import annotations

import statistics

from recbole_m6rec.benchmarks.report_tables import seed_list

__all__ = ["time_ratio", "time_ratio_line"]


def time_ratio(mine: dict, theirs: dict) -> dict | None:
    """The chosen row's time over the reference's, mean over the seeds on which both ran on one CPU: times compare
    only on one machine (a result that does not record its CPU counts as one unnamed CPU). ``None`` when no seed
    qualifies; else the ratio, those seeds, the shared seeds left out (``apart``), whether a continued run's
    scaled time entered (``scaled``) and on which seeds, per side (``scaled_seeds``: ``row``, ``reference``); where
    both rows record their epochs on those seeds, also the ratio of their times per epoch run (``per_epoch_ratio``)
    and their mean epochs (``epochs``: ``row``, ``reference``)."""
    mine_t, theirs_t = mine.get("time_by_seed") or {}, theirs.get("time_by_seed") or {}
    mine_cpu, theirs_cpu = mine.get("cpu_by_seed") or {}, theirs.get("cpu_by_seed") or {}
    seeds = sorted((s for s in set(mine_t) & set(theirs_t) if mine_cpu.get(s) == theirs_cpu.get(s)), key=str)
    if not seeds:
        return None
    # which of those seeds' runs were continued after an interruption, their time scaled from the last part
    scaled = {
        side: sorted(set(seeds) & set(entry.get("time_scaled_seeds") or ()), key=str)
        for side, entry in (("row", mine), ("reference", theirs))
    }
    timing = {
        "ratio": statistics.fmean(mine_t[s] for s in seeds) / statistics.fmean(theirs_t[s] for s in seeds),
        "seeds": seeds,
        "apart": sorted(set(mine_t) & set(theirs_t) - set(seeds), key=str),
        "scaled": bool(scaled["row"] or scaled["reference"]),
        "scaled_seeds": scaled,
    }
    # a time ratio mixes the cost of an epoch with how many epochs early stopping ran: give both parts
    mine_e, theirs_e = mine.get("epochs_by_seed") or {}, theirs.get("epochs_by_seed") or {}
    if all(mine_e.get(s) and theirs_e.get(s) for s in seeds):
        timing["per_epoch_ratio"] = statistics.fmean(mine_t[s] / mine_e[s] for s in seeds) / statistics.fmean(
            theirs_t[s] / theirs_e[s] for s in seeds
        )
        timing["epochs"] = {
            "row": statistics.fmean(mine_e[s] for s in seeds),
            "reference": statistics.fmean(theirs_e[s] for s in seeds),
        }
    return timing


def time_ratio_line(chosen: str, mine: dict, reference: str, theirs: dict) -> list[str]:
    """The report line of :func:`time_ratio`."""
    label = f"- {chosen} train+eval time / {reference} train+eval time"
    timing = time_ratio(mine, theirs)
    if timing is None:
        return [f"{label}: none of their seeds ran both on one CPU, so no ratio"]
    # a continued run's time is scaled from part of its epochs: a rough figure, not one to lead with
    ratio = f"{timing['ratio']:.2f}×" if timing["scaled"] else f"**{timing['ratio']:.2f}×**"
    return [
        f"{label}: {ratio} (mean over seed(s) {seed_list(timing['seeds'])}"
        + (
            f"; not seed(s) {seed_list(timing['apart'])}, which ran them on different CPUs or did not record one"
            if timing["apart"]
            else ""
        )
        + (
            f"; mean seconds per epoch run (per seed, then averaged) {timing['per_epoch_ratio']:.2f}×, over "
            f"{timing['epochs']['row']:.1f} against"
            f" {timing['epochs']['reference']:.1f} epochs on average"
            if "per_epoch_ratio" in timing
            else ""
        )
        + "; item encoding reported separately"
        + (
            "; rough: a run continued after an interruption counts as its continued epochs' time scaled to all"
            if timing["scaled"]
            else ""
        )
        + ")"
    ]
