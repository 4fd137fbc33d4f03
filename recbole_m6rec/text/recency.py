"""Recency words: the time between consecutive history items as a short phrase ("3 days later").

Each history item after the first gets the phrase for the gap since the item before it. The gap to the *previous*
item, not the time before the last one ("3 days before"), because whole-sequence training reads the user state after
every step in one causal pass: a phrase relative to the window's last item would show step t the time of later items.
The gaps add up to the same information. Gaps fall into a fixed list of phrases, so every phrase is encoded once.

Gaps are in seconds of the raw time field. RecBole's ``normalize_all`` (its ml-100k default) or a ``normalize_field``
naming the time field min-max scales the timestamps to [0, 1] before a model sees them; the scaling is affine, so
``seconds = normalised gap * (max - min)`` of the raw field, a range :func:`recbole_m6rec.data.create_dataset`
records (:func:`seconds_per_time_unit`). Normalised float32 times carry about 1e-7 of that range: ~2 s on ml-100k.
"""

from __future__ import annotations

import torch

from ..data import time_field_is_normalised

__all__ = ["RECENCY_PHRASES", "recency_buckets", "recency_field", "seconds_per_time_unit"]

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


def recency_buckets(
    timestamps: torch.Tensor, lengths: torch.Tensor, seconds_per_unit: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Phrase index ``[B n]`` of each history step's gap since the step before, and whether it has one ``[B n]``.

    ``timestamps`` ``[B n]`` (RecBole's ``timestamp_list``, in units of ``seconds_per_unit`` seconds: 1 for raw
    times, see :func:`seconds_per_time_unit`), ``lengths`` ``[B]``. The first step and padding have no phrase.
    Out-of-order timestamps (a negative gap) count as "minutes later".
    """
    gaps = (timestamps[:, 1:].double() - timestamps[:, :-1].double()).clamp(min=0) * seconds_per_unit
    index = torch.bucketize(gaps, _BOUNDS.to(gaps.device), right=True)
    index = torch.cat([index.new_zeros(index.shape[0], 1), index], dim=1)  # the first step has no gap
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


def seconds_per_time_unit(config, dataset) -> float:
    """Seconds in one unit of ``TIME_FIELD`` as the model's batches carry it: the raw range ``max - min`` when RecBole
    normalised the field (recorded by :func:`recbole_m6rec.data.create_dataset`), 1 when it did not.

    A dataset whose time field was normalised without that record (built by ``recbole.data.create_dataset``) is an
    error: its gaps would all read as "minutes later"."""
    if hasattr(dataset, "raw_time_range"):
        low_high = dataset.raw_time_range
        return 1.0 if low_high is None else float(low_high[1] - low_high[0])
    if time_field_is_normalised(config, dataset.field2type):
        setting = "normalize_field" if config["normalize_field"] else "normalize_all"
        raise ValueError(
            f"recency_words needs time gaps in seconds, but RecBole's {setting} scaled the time field "
            f"'{config['TIME_FIELD']}' to [0, 1] and this dataset ({type(dataset).__name__}, built by "
            "recbole.data.create_dataset) did not record its raw range. Build the dataset with "
            "recbole_m6rec.data.create_dataset (recbole_m6rec.quick_start's run_pipeline and load_data_and_model do), "
            f"or keep the time field out of normalisation (normalize_all: False, or a normalize_field list without "
            f"'{config['TIME_FIELD']}')"
        )
    return 1.0
