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
    table = torch.tensor([[1.0, -2.0], [3.0, 10.0]])  # the outcome tokens of "no" and "yes"
    labels = torch.tensor([[1, 0, 1, 1, -1]])  # the last step is the candidate: no outcome
    times = torch.tensor([[1.0, 2.0, 2.0, 2.0, 2.0]])  # steps 1-3 share the candidate's second
    trail, valid = outcomes_after_time_group(labels, table, times, torch.tensor([5]))
    assert valid.tolist() == [[True, False, False, False, True]]  # step 0's own slot; the second's outcomes at 4
    assert torch.equal(trail[0, 0], table[1])  # a group of one keeps its token as it is
    torch.testing.assert_close(trail[0, 4], table[[0, 1, 1]].mean(dim=0))  # the candidate's slot: no step sees it
    assert trail[0, 1:4].abs().sum() == 0


def test_without_ties_every_outcome_stays_in_its_own_slot():
    table = torch.randn(2, 3)
    labels = torch.tensor([[1, 0, 1, -1], [0, -1, 1, 1]])
    times = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    trail, valid = outcomes_after_time_group(labels, table, times, torch.tensor([4, 4]))
    assert torch.equal(valid, labels >= 0)
    assert torch.equal(trail[valid], table[labels[valid]])  # exactly: one outcome is its token


def test_gradients_reach_the_outcome_tokens_of_the_shown_labels():
    table = torch.randn(3, 4, requires_grad=True)
    labels = torch.tensor([[2, 2, -1]])
    trail, _ = outcomes_after_time_group(labels, table, torch.tensor([[1.0, 1.0, 2.0]]), torch.tensor([3]))
    trail.sum().backward()
    assert table.grad[:2].abs().sum() == 0 and bool((table.grad[2] == 1).all())
