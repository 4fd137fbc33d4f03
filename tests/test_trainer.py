"""The run's trainer (``build_trainer``): one hooks class on the model's own trainer, the history-mask rule in the
full-ranking scores, and per-user values that average to RecBole's metric. An untrained small SASRec: no fit."""

import sys

import numpy as np
import pytest
import torch
from helpers import QUIET, SMALL_SASREC, prepare_data
from recbole.trainer import Trainer
from recbole.utils import init_seed

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.registry import get_model
from recbole_m6rec.trainer import RunHooks, build_trainer


@pytest.fixture(scope="module")
def sasrec_data():
    return prepare_data(
        PluginConfig(model="SASRec", dataset="ml-100k", config_dict={**SMALL_SASREC, **QUIET, "topk": [10, 50]})
    )


def trainer_for(data, rule, tmp_path):
    config, train, valid, test = data
    config["eval_history_mask"], config["checkpoint_dir"] = rule, str(tmp_path)
    init_seed(config["seed"], True)
    model = get_model("SASRec")(config, train._dataset)
    return build_trainer(config, model, train, valid, test)


def known_items(data, user):
    """Items the user has in training (history lists and targets) and validation (targets)."""
    _, train, valid, _ = data
    items = set()
    for dataset in (train._dataset, valid._dataset):
        feat = dataset.inter_feat
        rows = feat["user_id"] == user
        items |= set(feat["item_id"][rows].tolist()) | set(feat["item_id_list"][rows].flatten().tolist())
    return items - {0}


def test_the_trainer_is_the_models_trainer_with_the_run_hooks(sasrec_data, tmp_path):
    trainer = trainer_for(sasrec_data, "recbole", tmp_path)
    assert type(trainer).__mro__[1:3] == (RunHooks, Trainer)


@pytest.mark.parametrize("rule", ["all", "none", "recbole"])
def test_history_mask_rule_reaches_the_full_ranking_scores(sasrec_data, rule, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    trainer = trainer_for(sasrec_data, rule, tmp_path)
    test = sasrec_data[3]
    trainer.model.eval()
    trainer.tot_item_num = test._dataset.item_num
    trainer._current_eval_data = test
    batch = next(iter(test))
    with torch.no_grad():
        interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)
    for row in range(3):
        user = int(interaction["user_id"][row])
        known = sorted(known_items(sasrec_data, user) - {int(interaction["item_id"][row])})
        masked = torch.isinf(scores[row, known])
        # RecBole masks nothing for sequential models; "all" masks every known item
        assert bool(masked.all()) if rule == "all" else not bool(masked.any())


def test_per_user_values_average_to_the_reported_metric(sasrec_data, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    trainer = trainer_for(sasrec_data, "all", tmp_path)
    result = trainer.evaluate(sasrec_data[3], load_best_model=False)
    dataset = sasrec_data[3]._dataset
    per_user = trainer.per_user_result(dataset.field2id_token["user_id"])
    assert len(per_user["ndcg@10"]) == len(set(dataset.inter_feat["user_id"].tolist()))
    assert np.mean(list(per_user["ndcg@10"].values())) == pytest.approx(result["ndcg@10"], abs=5e-5)


def test_per_user_values_belong_to_their_users(sasrec_data, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    trainer = trainer_for(sasrec_data, "all", tmp_path)
    test = sasrec_data[3]
    trainer.evaluate(test, load_best_model=False)
    per_user = trainer.per_user_result(test._dataset.field2id_token["user_id"])["ndcg@50"]
    tokens = test._dataset.field2id_token["user_id"]
    direct = {}
    with torch.no_grad():
        for batch in test:  # the same masked scores, ranked by hand (one target per user)
            interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)
            targets = interaction["item_id"]
            for row in range(len(targets)):
                rank = int((scores[row] > scores[row, targets[row]]).sum())
                direct[str(tokens[int(interaction["user_id"][row])])] = 1 / np.log2(rank + 2) if rank < 50 else 0.0
    assert sum(value > 0 for value in direct.values()) >= 5  # enough hits to tell users apart
    assert per_user == pytest.approx(direct, abs=1e-6)
