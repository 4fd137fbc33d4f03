"""Leave-last-k-out: RecBole's leave-one-out split with more than one held-out interaction per user.

RecBole's ``eval_args: {split: {LS: valid_and_test}}`` keeps each user's last interaction for test and the one
before it for validation: on ml-100k that is 943 samples per part, an AUC standard error of about 0.015, too few to
tell click-through models apart. ``LS: [k_valid, k_test]`` keeps each user's last ``k_test`` interactions (time
order) for test and the ``k_valid`` before them for validation; ``LS: [1, 1]`` is RecBole's ``valid_and_test``.

The held-out interactions are the same whatever the model type: a sequential dataset's samples are each user's
interactions after the first, a context or general dataset's are all of them, and the last ``k_valid + k_test``
coincide whenever a user has more than ``k_valid + k_test + 1`` interactions (the split fingerprint checks it).
A user with fewer keeps at least one training sample, test filled first, as RecBole's leave-one-out does.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LeaveLastOut", "leave_last_counts", "check_leave_out_mode", "RECBOLE_LEAVE_ONE_MODES"]

RECBOLE_LEAVE_ONE_MODES = ("valid_and_test", "valid_only", "test_only")


def check_leave_out_mode(mode) -> None:
    """``mode`` is one of RecBole's ``LS`` modes or ``[k_valid, k_test]`` with whole numbers ``k_valid >= 0``,
    ``k_test >= 1``; anything else is an error naming it."""
    if isinstance(mode, str) and mode in RECBOLE_LEAVE_ONE_MODES:
        return
    is_pair = isinstance(mode, Sequence) and not isinstance(mode, str) and len(mode) == 2
    if is_pair and all(isinstance(k, int) and not isinstance(k, bool) for k in mode) and mode[0] >= 0 and mode[1] >= 1:
        return
    raise ValueError(
        f"eval_args.split.LS is {mode!r}; valid: one of {', '.join(RECBOLE_LEAVE_ONE_MODES)} (RecBole's leave-one-out) "
        "or [k_valid, k_test], whole numbers with k_valid >= 0 and k_test >= 1 (each user's last k_test interactions "
        "for test, the k_valid before them for validation)"
    )


def leave_last_counts(n: int, k_valid: int, k_test: int) -> tuple[int, int]:
    """How many of a user's ``n`` samples go to validation and test: at least one stays for training."""
    test = max(0, min(k_test, n - 1))
    valid = max(0, min(k_valid, n - 1 - test))
    return valid, test


class LeaveLastOut:
    """Dataset mixin: ``leave_one_out`` also takes ``[k_valid, k_test]`` (RecBole's string modes are unchanged)."""

    def leave_one_out(self, group_by, leave_one_mode):
        if isinstance(leave_one_mode, str):
            return super().leave_one_out(group_by, leave_one_mode)
        check_leave_out_mode(leave_one_mode)
        if group_by is None:
            raise ValueError("leave-last-k-out needs group_by: user")
        k_valid, k_test = leave_one_mode
        train, valid, test = [], [], []
        for index in self._grouped_index(self.inter_feat[group_by].numpy()):
            index = list(index)  # in the order build() sorted the data: time order for order: TO
            n_valid, n_test = leave_last_counts(len(index), k_valid, k_test)
            cut_valid, cut_test = len(index) - n_valid - n_test, len(index) - n_test
            train += index[:cut_valid]
            valid += index[cut_valid:cut_test]
            test += index[cut_test:]
        self._drop_unused_col()
        return [self.copy(self.inter_feat[part]) for part in (train, valid, test)]
