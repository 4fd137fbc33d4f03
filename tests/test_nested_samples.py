"""M6RecCTR scores a user's nested labelled samples (each later one's history holds the earlier ones) in one pass
over the longest, with the scores of each sample alone; real RecBole data split leave-last-5-out."""

import pytest
import torch
from conftest import TINY_SLICE
from helpers import prepare_data
from recbole.utils import init_seed

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.model.m6rec_ctr import M6RecCTR
from recbole_m6rec.model.nested_samples import covering_samples

LEAVE_LAST_FIVE = {"split": {"LS": [5, 5]}, "order": "TO", "mode": "labeled", "group_by": "user"}


def test_a_sample_is_covered_only_by_one_whose_first_steps_it_is():
    users = torch.tensor([7, 7, 7, 8, 7])
    lengths = torch.tensor([2, 3, 1, 2, 3])
    items = torch.tensor([[1, 2, 3, 0], [1, 2, 3, 4], [1, 2, 0, 0], [1, 2, 3, 0], [1, 5, 3, 4]])  # candidate at length
    labels = torch.tensor([[1, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0]])
    run, source = covering_samples(users, lengths, [(items, 1), (labels, 0)])
    # sample 1 holds samples 0 and 2; sample 4 differs at step 1, sample 3 is another user's
    assert sorted(run.tolist()) == [1, 3, 4]
    assert [run[s].item() for s in source] == [1, 1, 1, 3, 4]
    labels[1, 1] = 1  # the same items with another outcome before sample 0's candidate: not its history
    run, source = covering_samples(users, lengths, [(items, 1), (labels, 0)])
    assert [run[s].item() for s in source] == [0, 1, 1, 3, 4]
    times = torch.tensor([[1.0, 2, 3, 0], [1, 2, 3, 4], [1, 9, 0, 0], [1, 2, 3, 0], [1, 2, 3, 4]])
    run, source = covering_samples(users, lengths, [(items, 1), (labels, 0), (times, 1)])
    assert [run[s].item() for s in source] == [0, 1, 2, 3, 4]  # sample 2's candidate shown at another time
    copies = torch.tensor([7, 7, 7])  # one user's copies of a sample, and the same history with another candidate
    run, source = covering_samples(
        copies, torch.tensor([2, 2, 2]), [(torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 4]]), 1)]
    )
    assert [run[s].item() for s in source] == [0, 0, 2]


@pytest.mark.parametrize("recency_words", [False, True])
def test_nested_samples_share_one_pass_and_score_as_each_alone(cache_dir, recency_words):
    settings = {**TINY_SLICE, "text_cache_dir": cache_dir, "eval_args": LEAVE_LAST_FIVE, "recency_words": recency_words}
    settings["MAX_ITEM_LIST_LENGTH"] = 30  # users of up to 40 interactions: most histories fit, some are cut
    config, train, _, test = prepare_data(PluginConfig(model="M6RecCTR", dataset="ml-100k", config_dict=settings))
    init_seed(2020, True)
    model = M6RecCTR(config, train._dataset).eval()
    batch = next(iter(test))[0]  # test samples: their histories hold the validation samples and earlier test samples
    passes = []
    states = model._candidate_states
    model._candidate_states = lambda *args: passes.append(args[0].shape[0]) or states(*args)
    with torch.no_grad():
        nested = model.predict(batch)
        times = (batch["timestamp_list"], batch["timestamp"])  # recency phrases; outcomes hidden in their second
        alone = torch.softmax(
            model.forward(
                batch["item_id_list"],
                batch["item_length"],
                batch["item_id"],
                model._user_ids(batch),
                batch["label_list"],
                times,
            ),
            dim=-1,
        )[:, -1]
    n = len(batch)
    truncated = int((batch["item_length"] == config["MAX_ITEM_LIST_LENGTH"]).sum())
    assert passes and passes[0] < n / 2 and truncated > 5  # shared passes, and histories cut to the window
    torch.testing.assert_close(nested, alone, rtol=1e-4, atol=1e-5)


def test_the_share_command_counts_the_samples_and_steps_that_run(cache_dir):
    from recbole_m6rec.benchmarks.nested_share import counts

    settings = {**TINY_SLICE, "text_cache_dir": cache_dir, "eval_args": LEAVE_LAST_FIVE}
    _, _, valid, _ = prepare_data(PluginConfig(model="M6RecCTR", dataset="ml-100k", config_dict=settings))
    c = counts(valid)
    assert c["samples"] == len(valid.dataset) and c["samples_run"] < c["samples"]
    assert c["steps_run"] < c["steps"] and c["steps"] == int((valid.dataset.inter_feat["item_length"] + 1).sum())


def test_the_time_signal_command_reads_the_last_history_second_of_each_sample(cache_dir):
    from recbole.data.interaction import Interaction

    from recbole_m6rec.benchmarks.time_signal import last_second_features

    settings = {**TINY_SLICE, "text_cache_dir": cache_dir, "eval_args": LEAVE_LAST_FIVE}
    config, _, valid, _ = prepare_data(PluginConfig(model="M6RecCTR", dataset="ml-100k", config_dict=settings))
    features = last_second_features(valid, config)
    assert len(features["label"]) == len(valid.dataset) and set(features["label"]) <= {0.0, 1.0}
    assert 0 < features["shares_second"].sum() < len(valid.dataset)  # real bursts, not every sample in one
    # by hand: an empty history; one item in another second; the last two of three in the candidate's second; the
    # last two in one second before the candidate's (padding after the history never counts)
    batch = Interaction(
        {
            "timestamp_list": torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [1, 5, 5, 0], [1, 4, 4, 4]]),
            "item_length": torch.tensor([0, 1, 3, 3]),
            "timestamp": torch.tensor([0.0, 2, 5, 6]),
            "label": torch.tensor([1.0, 0, 1, 0]),
        }
    )
    by_hand = last_second_features([(batch,)], config)
    assert by_hand["shares_second"].tolist() == [0, 0, 1, 0]
    assert by_hand["last_group"].tolist() == [0, 1, 2, 2]
