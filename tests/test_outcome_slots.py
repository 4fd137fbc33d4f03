"""History outcomes move to the last step of their time group: only strictly later steps see them."""

import torch

from recbole_m6rec.model.outcome_slots import group_ends, outcomes_after_time_group


def test_each_step_points_to_the_last_step_of_its_run_of_equal_times():
    times = torch.tensor([[1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0]])
    lengths = torch.tensor([6, 3])  # the second row's 4th step is past its length: it does not extend the run
    assert group_ends(times, lengths).tolist() == [[0, 2, 2, 5, 5, 5, 6], [2, 2, 2, 3, 4, 5, 6]]


def test_equal_times_apart_are_two_groups():
    times = torch.tensor([[1.0, 2.0, 1.0]])  # not in time order: only consecutive equal times form a group
    assert group_ends(times, torch.tensor([3])).tolist() == [[0, 1, 2]]


def test_outcomes_of_one_second_are_averaged_into_its_last_slot():
    tokens = torch.arange(5, dtype=torch.float).reshape(1, 5, 1) * torch.tensor([1.0, 10.0])  # [1 5 2]
    shown = torch.tensor([[True, True, True, True, False]])  # the last step is the candidate: no outcome
    times = torch.tensor([[1.0, 2.0, 2.0, 2.0, 2.0]])  # steps 1-3 share the candidate's second
    trail, valid = outcomes_after_time_group(tokens, shown, times, torch.tensor([5]))
    assert valid.tolist() == [[True, False, False, False, True]]  # step 0's own slot; the second's outcomes at 4
    torch.testing.assert_close(trail[0, 0], tokens[0, 0])  # a group of one keeps its token as it is
    torch.testing.assert_close(trail[0, 4], tokens[0, 1:4].mean(dim=0))  # the candidate's slot: no step sees it
    assert trail[0, 1:4].abs().sum() == 0


def test_without_ties_every_outcome_stays_in_its_own_slot():
    tokens = torch.randn(2, 4, 3)
    shown = torch.tensor([[True, True, True, False], [True, False, True, True]])
    times = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    trail, valid = outcomes_after_time_group(tokens, shown, times, torch.tensor([4, 4]))
    assert torch.equal(valid, shown)
    torch.testing.assert_close(trail[shown], tokens[shown])
