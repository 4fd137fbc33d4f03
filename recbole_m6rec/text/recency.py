"""Recency words: the time between consecutive history items as a short phrase ("3 days later").

Each history item after the first gets the phrase for the gap since the item before it. The gap to the *previous*
item, not the time before the last one ("3 days before"), because whole-sequence training reads the user state after
every step in one causal pass: a phrase relative to the window's last item would show step t the time of later items.
The gaps add up to the same information. Gaps fall into a fixed list of phrases, so every phrase is encoded once.
"""

from __future__ import annotations

import torch

__all__ = ["RECENCY_PHRASES", "recency_buckets", "recency_field"]

_HOUR = 3600.0
_DAY = 24 * _HOUR


def _phrases() -> tuple[tuple[float, str], ...]:
    """(upper bound of the gap in seconds, phrase), in increasing order; the last bound is infinite."""
    table = [(_HOUR, "minutes later"), (_DAY, "hours later"), (2 * _DAY, "1 day later")]
    table += [((days + 1) * _DAY, f"{days} days later") for days in range(2, 7)]
    table += [((weeks + 1) * 7 * _DAY, f"{weeks} week{'s' if weeks > 1 else ''} later") for weeks in range(1, 4)]
    table += [(30 * _DAY, "4 weeks later")]
    table += [((months + 1) * 30 * _DAY, f"{months} month{'s' if months > 1 else ''} later") for months in range(1, 12)]
    table += [(730 * _DAY, "1 year later"), (1095 * _DAY, "2 years later"), (float("inf"), "3 or more years later")]
    return tuple(table)


_TABLE = _phrases()
RECENCY_PHRASES: tuple[str, ...] = tuple(phrase for _, phrase in _TABLE)
_BOUNDS = torch.tensor([bound for bound, _ in _TABLE[:-1]], dtype=torch.float64)


def recency_buckets(timestamps: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Phrase index ``[B n]`` of each history step's gap since the step before, and whether it has one ``[B n]``.

    ``timestamps`` ``[B n]`` (seconds, RecBole's ``timestamp_list``), ``lengths`` ``[B]``. The first step and padding
    have no phrase. Out-of-order timestamps (a negative gap) count as "minutes later".
    """
    gaps = (timestamps[:, 1:].double() - timestamps[:, :-1].double()).clamp(min=0)
    index = torch.bucketize(gaps, _BOUNDS.to(gaps.device), right=True)
    index = torch.cat([torch.zeros_like(index[:, :1]), index], dim=1)
    steps = torch.arange(timestamps.shape[1], device=timestamps.device).unsqueeze(0)
    has_phrase = (steps >= 1) & (steps < lengths.unsqueeze(1))
    return index.masked_fill(~has_phrase, 0), has_phrase


def recency_field(config, dataset) -> str:
    """The batch field of history timestamps (RecBole's ``timestamp_list``); an error when none is loaded."""
    time_field = config["TIME_FIELD"]
    if not time_field or time_field not in dataset.field2type:
        raise ValueError(
            f"recency_words needs timestamps, but the dataset has no TIME_FIELD '{time_field}': load it "
            f"(load_col: {{inter: [..., {time_field}]}}) or set recency_words: False"
        )
    return time_field + config["LIST_SUFFIX"]
