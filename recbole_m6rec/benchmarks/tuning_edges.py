"""Chosen settings that sit at the edge of their search space.

A tuned value at the largest (or smallest) of its choices, or within the outer tenth of a continuous range, says the
best setting may lie outside the space: a wider space might choose otherwise. The report names such values so that
a reader can weigh the tuning behind each row. Zero at the bottom of a list is not an edge (no dropout or weight
decay below none), nor is a list of non-numbers.
"""

from __future__ import annotations

import math

__all__ = ["EDGE_SHARE", "edge_choices"]

EDGE_SHARE = 0.1  # the outer share of a continuous range that counts as its edge (on a log scale for loguniform)


def edge_choices(space: dict, chosen: dict) -> list[str]:
    """``["weight_decay 0.0001 (the largest of its choices)", ...]`` for each key of ``space`` whose chosen value
    is at an edge of it, in the space's order."""
    found = []
    for key, spec in (space or {}).items():
        if key not in (chosen or {}) or not isinstance(spec, (list, tuple)) or len(spec) < 2:
            continue
        where = _edge(spec[0], list(spec[1:]), chosen[key])
        if where:
            found.append(f"{key} {chosen[key]} ({where})")
    return found


def _edge(kind: str, values: list, value) -> str | None:
    if not _number(value):
        return None
    if kind == "choice":
        numbers = [v for v in values if _number(v)]
        if len(numbers) != len(values) or len(numbers) < 2:
            return None
        if value == max(numbers):
            return "the largest of its choices"
        if value == min(numbers) and value != 0:
            return "the smallest of its choices"
        return None
    if kind in ("uniform", "loguniform") and len(values) == 2 and all(_number(v) for v in values):
        low, high = sorted(values)
        scale = math.log if kind == "loguniform" else float
        if value <= 0 and kind == "loguniform":
            return None
        share = (scale(value) - scale(low)) / (scale(high) - scale(low))
        if share >= 1 - EDGE_SHARE:
            return f"in the top tenth of its range to {high}"
        if share <= EDGE_SHARE and not (kind == "uniform" and low == 0):
            return f"in the bottom tenth of its range from {low}"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
