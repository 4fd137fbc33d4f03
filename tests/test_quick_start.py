"""RecBole's quick start with the plugin: ``run_recbole``, ``objective_function`` (with RecBole's ``HyperTuning``) and
``load_data_and_model`` take RecBole's arguments, return RecBole's values, and work for plugin models and under
torch >= 2.6, where RecBole's own best-model reload fails."""

import pickle
import sys

import pytest
import torch
from helpers import ML100K_YAML, QUIET

from recbole_m6rec.quick_start import load_data_and_model, objective_function, run_recbole
from recbole_m6rec.trainer import build_trainer

RESULT_KEYS = {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
TINY_M6REC = {
    "plm_name_or_path": "tiny-random-llama",
    "user_inter_num_interval": "[0,30]",
    "MAX_ITEM_LIST_LENGTH": 10,
    "epochs": 1,
    "train_batch_size": 64,
    **QUIET,
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """RecBole writes log/, log_tensorboard/ and saved/ into the working directory; keep them in tmp."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])  # RecBole's own Config reads sys.argv
    return tmp_path


def test_run_recbole_saves_and_reloads_where_recbole_fails(workdir):
    from recbole.quick_start import run_recbole as recbole_run_recbole

    settings = {"epochs": 1, **QUIET}
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):  # RecBole's own, torch >= 2.6
        recbole_run_recbole(model="BPR", dataset="ml-100k", config_file_list=[ML100K_YAML], config_dict=dict(settings))
    ours = run_recbole(model="BPR", dataset="ml-100k", config_dict=dict(settings))  # saved=True: reloads the best
    theirs = recbole_run_recbole(
        model="BPR", dataset="ml-100k", config_file_list=[ML100K_YAML], config_dict=dict(settings), saved=False
    )  # one epoch: the last model is the best
    assert set(ours) == RESULT_KEYS
    assert ours["test_result"] == theirs["test_result"] and ours["best_valid_result"] == theirs["best_valid_result"]


class _ListQueue(list):
    put = list.append


def test_run_recbole_and_load_data_and_model_for_a_plugin_model(workdir):
    queue = _ListQueue()
    result = run_recbole(
        model="M6Rec",
        dataset="ml-100k",
        config_dict={**TINY_M6REC, "text_cache_dir": str(workdir / "cache")},
        queue=queue,
    )
    assert set(result) == RESULT_KEYS and queue == [result]  # rank 0 of a (here one-process) run fills the queue
    (checkpoint,) = (workdir / "saved").glob("M6Rec-*[0-9].pth")
    assert torch.load(checkpoint, weights_only=True)["model"] == "M6Rec"  # plain data
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(str(checkpoint))
    assert type(model).__name__ == "M6Rec" and config["plm_name_or_path"] == "tiny-random-llama"
    trainer = build_trainer(config, model, train_data, valid_data, test_data)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) == dict(result["test_result"])


def test_recbole_hyper_tuning_runs_a_plugin_model(workdir, monkeypatch):
    from hyperopt import hp
    from recbole.trainer import HyperTuning

    monkeypatch.setenv("HYPEROPT_FMIN_SEED", "2020")  # hyperopt's fmin seeds its random search from it

    fixed = workdir / "fixed.yaml"
    fixed.write_text(
        "model: M6Rec\ndataset: ml-100k\n"
        + "".join(
            f"{key}: {value!r}\n" if isinstance(value, str) else f"{key}: {value}\n"
            for key, value in {**TINY_M6REC, "text_cache_dir": str(workdir / "cache")}.items()
        )
    )
    trials = []

    def recorded_objective(config_dict, config_file_list):
        result = objective_function(config_dict, config_file_list)
        trials.append((dict(config_dict), result))
        return result

    # random search: RecBole 1.2.1's exhaustive search fails on hyperopt 0.2.7
    tuning = HyperTuning(
        recorded_objective,
        space={"learning_rate": hp.loguniform("learning_rate", -9, -4)},
        fixed_config_file_list=[str(fixed)],
        algo="random",
        max_evals=2,
    )
    tuning.run()
    assert len(trials) == 2 and tuning.model == "M6Rec"
    assert all(set(result) == {"model", *RESULT_KEYS} and result["model"] == "M6Rec" for _, result in trials)
    # the tuned setting reached each run: its best-model checkpoint trained with that learning rate
    checkpoints = [torch.load(path, weights_only=True) for path in (workdir / "saved").glob("M6Rec-*[0-9].pth")]
    tried = sorted(params["learning_rate"] for params, _ in trials)
    assert sorted(c["optimizer"]["param_groups"][0]["lr"] for c in checkpoints) == pytest.approx(tried)
    assert tuning.best_params["learning_rate"] in tried
