"""Labelled samples whose (history, candidate) is a prefix of another sample's history, for scoring them in one pass.

RecBole's labelled evaluation gives each user several samples when a split holds out several interactions per user
(``eval_args.split.LS: [5, 5]``): the later samples' histories hold the earlier samples, in order, with their labels
and times. In M6RecCTR's segment-causal pass the state at step t of a sequence is "item t as the candidate after
steps < t" (what whole-sequence training relies on), so one pass over the longest sequence gives every nested
sample's state. A sample is covered by another when its history and candidate are the other's first steps exactly:
the same items, the same history labels and the same times (a history cut to ``MAX_ITEM_LIST_LENGTH`` starts later
and shifts every step, so it is not covered, and runs on its own).
"""

from __future__ import annotations

import torch

__all__ = ["covering_samples", "with_candidate"]


def with_candidate(history: torch.Tensor, lengths: torch.Tensor, candidate, fill=0) -> torch.Tensor:
    """``[B n]`` per-step values of each sample's history -> ``[B n+1]`` with the candidate's value (a tensor
    ``[B]`` or a number) at column ``lengths``, the step after the history; other new slots hold ``fill``."""
    steps = torch.nn.functional.pad(history, (0, 1), value=fill)
    rows = torch.arange(history.shape[0], device=history.device)
    steps[rows, lengths] = candidate.to(steps.dtype) if isinstance(candidate, torch.Tensor) else candidate
    return steps


def covering_samples(
    users: torch.Tensor, lengths: torch.Tensor, steps: list[tuple[torch.Tensor, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which samples of a batch to run, and where each sample's state is found.

    ``users`` ``[B]``, ``lengths`` ``[B]`` (history lengths); ``steps``: per-sample step tensors ``[B W]`` with the
    number of steps past the history that must match, e.g. ``(items with the candidate at column length, 1)`` and
    ``(history labels, 0)``: sample i is covered by sample k when, for each tensor, k's first ``lengths[i] + extra``
    columns equal i's. Returns ``(run [K], source [B])``: the indices of the samples to run (none covered by another
    run sample) and, per sample, the position in ``run`` of the sample whose pass holds its state at step
    ``lengths[i]``."""
    device = lengths.device
    users, lengths = users.cpu(), lengths.cpu()  # one copy, not a device sync per sample
    steps = [(tensor.cpu(), extra) for tensor, extra in steps]
    source = torch.empty(users.shape[0], dtype=torch.long)
    run: list[int] = []
    by_user: dict[int, list[int]] = {}
    for i in torch.argsort(lengths, descending=True, stable=True).tolist():  # longest first: they cover the others
        by_user.setdefault(int(users[i]), []).append(i)
    for rows in by_user.values():
        longer: list[int] = []  # this user's run samples longer than the sample at hand
        same: dict[bytes, int] = {}  # this user's run samples of the current length, by content: a copy is covered
        current = None
        for i in rows:
            n = int(lengths[i])
            if n != current:
                longer += same.values()
                same, current = {}, n
            key = b"".join(tensor[i, : n + extra].numpy().tobytes() for tensor, extra in steps)
            k = same.get(key)
            if k is None:
                k = next((k for k in longer if _holds(k, i, n, steps)), None)
            if k is None:
                same[key] = i
                source[i] = len(run)
                run.append(i)
            else:
                source[i] = source[k]
    return torch.tensor(run, dtype=torch.long, device=device), source.to(device)


def _holds(k: int, i: int, n: int, steps: list[tuple[torch.Tensor, int]]) -> bool:
    """Sample k's first steps are sample i's history (``n`` steps) and what follows it."""
    return all(torch.equal(tensor[k, : n + extra], tensor[i, : n + extra]) for tensor, extra in steps)
