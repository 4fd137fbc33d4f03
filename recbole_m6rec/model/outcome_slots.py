"""History outcomes that only strictly later steps see.

M6RecCTR puts the outcome of each history step (liked / not liked) in the trailing slot after the step, where every
later step of the segment-causal pass sees it. On ml-100k many ratings share a timestamp: a user rates a batch of
films in the same second, and the films' outcomes are strongly correlated. An outcome entered in the candidate's own
second is not feedback that arrived before the candidate was shown, so it must stay hidden from it.

Each outcome therefore moves to the trailing slot of the **last step of its time group** (the run of consecutive
steps that share its timestamp). Only steps after that slot see it, and they are strictly later in time (RecBole's
sequences are sorted by time, so equal times are consecutive). The outcomes landing in one slot are averaged: a
group of one keeps its outcome token as it is, and a larger group gives one token of the same scale (the layers'
RMS norm reads a sum and a mean alike; the mean keeps the residual stream in range).

Times are compared as the batch carries them: RecBole's float32 copy of the time field, in which neighbouring
seconds can round to one value. Such a merge hides more outcomes, never fewer.
"""

from __future__ import annotations

import torch

__all__ = ["group_ends", "outcome_time_field", "outcomes_after_time_group"]


def outcome_time_field(config, dataset) -> str:
    """The batch field of history timestamps (RecBole's ``timestamp_list``) that history outcomes need; an error
    naming the fix when the dataset has no time field."""
    time_field = config["TIME_FIELD"]
    if not time_field or time_field not in dataset.field2type:
        raise ValueError(
            f"history_labels needs timestamps (an outcome entered in the candidate's second must stay hidden from it), "
            f"but the dataset has no TIME_FIELD '{time_field}': load it (load_col: {{inter: [..., {time_field}]}}) "
            "or set history_labels: False"
        )
    return time_field + config["LIST_SUFFIX"]


def group_ends(times: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[B n]`` step times, ``[B]`` sequence lengths -> ``[B n]`` the index of the last step of each step's run
    of equal times (steps at or past ``lengths`` never extend a run)."""
    n = times.shape[1]
    steps = torch.arange(n, device=times.device)
    same_as_next = torch.zeros_like(times, dtype=torch.bool)
    if n > 1:
        same_as_next[:, :-1] = (times[:, 1:] == times[:, :-1]) & (steps[1:].unsqueeze(0) < lengths.unsqueeze(1))
    ends = torch.where(same_as_next, torch.full_like(steps, n), steps).expand_as(same_as_next)  # a run ends here
    return torch.flip(torch.cummin(torch.flip(ends, [1]), dim=1).values, [1])  # the first end at or after each step


def outcomes_after_time_group(
    labels: torch.Tensor, table: torch.Tensor, times: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome labels ``[B n]`` (``-1``: no outcome) of steps with ``times`` ``[B n]`` -> the trailing tokens
    ``[B n d]`` and their valid ``[B n]``: the mean of the outcome tokens (rows of ``table`` ``[C d]``) of each time
    group, in the slot of its last step (``lengths`` ``[B]``: the steps in each sequence).

    The labels are counted per slot as integers and the mean is one matrix product, so the result does not depend on
    the order of floating-point additions (a float ``index_add_`` on a GPU does)."""
    batch, n = labels.shape
    n_options = table.shape[0]
    shown = labels >= 0
    slot = (torch.arange(batch, device=labels.device).unsqueeze(1) * n + group_ends(times, lengths))[shown]  # [K]
    counts = torch.zeros(batch * n, n_options, dtype=torch.long, device=labels.device)
    counts.index_put_((slot, labels[shown]), torch.ones_like(slot), accumulate=True)  # [B*n C]
    total = counts.sum(dim=1, keepdim=True)
    means = (counts.to(table.dtype) / total.clamp(min=1).to(table.dtype)) @ table  # [B*n d]
    return means.reshape(batch, n, table.shape[1]), (total > 0).reshape(batch, n)
