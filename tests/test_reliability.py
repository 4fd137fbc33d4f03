"""Reliability of runs: plain-data checkpoints, resume after a hard kill (M6Rec and a RecBole model), determinism.

Tiny random-initialised backbone (real tokenizer, real RecBole pipeline) on a slice of ml-100k.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import REPO

from recbole_m6rec.checkpoint import FORMAT, load_plain_checkpoint, load_recbole_checkpoint

# 4 epochs, early stopping off, a slice of ml-100k users: ~30 s per run with the tiny model.
SETTINGS = {
    "plm_name_or_path": "tiny-random-llama",
    "user_inter_num_interval": "[0,30]",
    "MAX_ITEM_LIST_LENGTH": 10,
    "epochs": 4,
    "stopping_step": 100,
    "train_batch_size": 32,
    "eval_history_mask": "all",
    "show_progress": False,
    "state": "WARNING",
}

# Runs one training in a fresh process; with KILL_EPOCH=e the process SIGKILLs itself inside the 5th training batch
# of epoch e (no cleanup, no exception handling: what `kill -9` or an out-of-memory kill does mid-epoch).
RUNNER = textwrap.dedent("""
    import json, os, signal, sys
    from recbole.trainer import Trainer
    from recbole_m6rec import registry
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.quick_start import run_pipeline

    model, settings, out, kill_epoch = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    if kill_epoch:
        train_epoch, model_class, batches = Trainer._train_epoch, registry.get_model(model), {}
        def counted_train_epoch(self, train_data, epoch_idx, *args, **kwargs):
            batches["epoch"], batches["n"] = epoch_idx, 0
            return train_epoch(self, train_data, epoch_idx, *args, **kwargs)
        calculate_loss = model_class.calculate_loss
        def killing_calculate_loss(self, interaction):
            batches["n"] += 1
            if batches["epoch"] == kill_epoch and batches["n"] == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return calculate_loss(self, interaction)
        Trainer._train_epoch, model_class.calculate_loss = counted_train_epoch, killing_calculate_loss
    config = PluginConfig(model=model, dataset="ml-100k", config_dict=settings)
    outcome = run_pipeline(config, saved=True)
    with open(out, "w") as handle:
        json.dump({"test": dict(outcome.result["test_result"]), "valid": dict(outcome.result["best_valid_result"]),
                   "epochs": outcome.extra["epochs_run"]}, handle)
""")

# SASRec on the same slice: a RecBole model under RecBole's own Trainer class (plus the run hooks)
SASREC_SETTINGS = {
    key: SETTINGS[key] for key in ("user_inter_num_interval", "MAX_ITEM_LIST_LENGTH", "epochs", "stopping_step")
} | {"train_batch_size": 256, "train_neg_sample_args": None, "show_progress": False, "state": "WARNING"}


def run_training(tmp_path, model, name, settings, kill_epoch=0, **overrides):
    settings = {**settings, "checkpoint_dir": str(tmp_path / f"saved-{name}"), **overrides}
    out = tmp_path / f"{name}.json"
    completed = subprocess.run(
        [sys.executable, "-c", RUNNER, model, json.dumps(settings), str(out), str(kill_epoch)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    return completed, (json.loads(out.read_text()) if out.exists() else None)


def run_m6rec(tmp_path, name, kill_epoch=0, **overrides):
    settings = {**SETTINGS, "text_cache_dir": str(tmp_path / "cache")}
    return run_training(tmp_path, "M6Rec", name, settings, kill_epoch, **overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("reliability")
    first = run_m6rec(tmp_path, "first")
    second = run_m6rec(tmp_path, "second")
    killed = run_m6rec(tmp_path, "killed", kill_epoch=2)
    return tmp_path, first, second, killed


def test_same_seed_and_config_give_identical_metrics(runs):
    _, (done1, first), (done2, second), _ = runs
    assert done1.returncode == 0, done1.stderr[-2000:]
    assert done2.returncode == 0, done2.stderr[-2000:]
    assert first["test"] == second["test"] and first["valid"] == second["valid"]
    assert first["epochs"] == 4 and first["test"]["ndcg@10"] > 0


def test_plugin_checkpoints_are_plain_data(runs):
    tmp_path = runs[0]
    best = next((tmp_path / "saved-first").glob("M6Rec-*[0-9].pth"))
    last = next((tmp_path / "saved-first").glob("M6Rec-*-last.pth"))
    for path in (best, last):
        checkpoint = torch.load(path, weights_only=True)  # no allow-list, no trust needed
        assert checkpoint["format"] == FORMAT and checkpoint["model"] == "M6Rec"
        assert checkpoint["settings"]["plm_name_or_path"] == "tiny-random-llama"
        backbone_keys = [key for key in checkpoint["state_dict"] if key.startswith("late.stack.")]
        assert backbone_keys and all(".adapter." in key for key in backbone_keys)  # frozen weights stay out
    assert load_plain_checkpoint(last)["epoch"] == 3 and "rng" in load_plain_checkpoint(last)
    assert load_recbole_checkpoint(best)["format"] == FORMAT  # the pipeline's best-model reload reads it too


def test_killed_run_resumes_to_the_same_metrics(runs):
    tmp_path, (_, uninterrupted), _, (killed, killed_result) = runs
    assert killed.returncode == -9 and killed_result is None  # really killed mid-epoch
    (resume_point,) = (tmp_path / "saved-killed").glob("M6Rec-*-last.pth")
    assert load_plain_checkpoint(resume_point)["epoch"] == 1  # epochs 0 and 1 finished before the kill
    done, resumed = run_m6rec(
        tmp_path, "resumed", resume_checkpoint=str(resume_point), checkpoint_dir=str(tmp_path / "saved-killed")
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert resumed["test"] == uninterrupted["test"] and resumed["valid"] == uninterrupted["valid"]
    assert resumed["epochs"] == 4


def test_killed_recbole_model_run_resumes_to_the_same_metrics(tmp_path):
    done, uninterrupted = run_training(tmp_path, "SASRec", "whole", SASREC_SETTINGS)
    assert done.returncode == 0, done.stderr[-2000:]
    killed, killed_result = run_training(tmp_path, "SASRec", "killed", SASREC_SETTINGS, kill_epoch=2)
    assert killed.returncode == -9 and killed_result is None
    (resume_point,) = (tmp_path / "saved-killed").glob("SASRec-*-last.pth")
    assert load_plain_checkpoint(resume_point)["epoch"] == 1
    done, resumed = run_training(
        tmp_path,
        "SASRec",
        "resumed",
        SASREC_SETTINGS,
        resume_checkpoint=str(resume_point),
        checkpoint_dir=str(tmp_path / "saved-killed"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert resumed["test"] == uninterrupted["test"] and resumed["valid"] == uninterrupted["valid"]
    assert resumed["epochs"] == 4 and uninterrupted["test"]["ndcg@10"] > 0
    # the best model stays in RecBole's own format, read back by the safe loader
    (best,) = (tmp_path / "saved-killed").glob("SASRec-*[0-9].pth")
    assert "config" in load_recbole_checkpoint(best)


def test_resume_refuses_a_checkpoint_of_another_model(runs, tmp_path):
    from recbole_m6rec.checkpoint import save_plain_checkpoint

    path = save_plain_checkpoint(tmp_path / "other.pth", model="SASRec", dataset="ml-100k", settings={}, epoch=0)
    done, result = run_m6rec(runs[0], "refused", resume_checkpoint=str(path))
    assert result is None and "holds SASRec on ml-100k; this run is M6Rec on ml-100k" in done.stderr
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00" * 100)
    done, result = run_m6rec(runs[0], "corrupt", resume_checkpoint=str(corrupt))
    assert result is None and "corrupt.pth' is not a plain recbole_m6rec checkpoint" in done.stderr


# --- caches under faults ------------------------------------------------------------------------------------------
ENCODER = textwrap.dedent("""
    import hashlib, json, sys
    from recbole.data import create_dataset
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.model.m6rec import M6Rec

    settings = json.loads(sys.argv[1])
    config = PluginConfig(model="M6Rec", dataset="ml-100k", config_dict=settings)
    model = M6Rec(config, create_dataset(config))
    states = model._item_segments.states
    print(json.dumps({"sha": hashlib.sha256(states.numpy().tobytes()).hexdigest(),
                      "hits": model.encoder.cache_hits, "misses": model.encoder.cache_misses}))
""")


def encode_items(cache_dir, background=False):
    settings = {**SETTINGS, "text_cache_dir": str(cache_dir)}
    command = [sys.executable, "-c", ENCODER, json.dumps(settings)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if background:
        return subprocess.Popen(
            command, cwd=cache_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    done = subprocess.run(command, cwd=cache_dir.parent, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_two_processes_building_one_cache_at_once_leave_it_intact(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    builders = [encode_items(cache_dir, background=True) for _ in range(2)]  # both miss, both write
    outputs = [builder.communicate() for builder in builders]
    assert all(builder.returncode == 0 for builder in builders), outputs[0][1][-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert results[0]["sha"] == results[1]["sha"]
    assert not list(cache_dir.rglob("*.tmp"))  # no temporary file left behind
    reader, log = encode_items(cache_dir)
    assert reader["misses"] == 0 and reader["sha"] == results[0]["sha"] and "unusable" not in log


def test_damaged_segment_cache_is_rebuilt_with_a_warning(tmp_path, caplog, no_foreign_argv):
    # in this process: each model built here reads the cache files from disk afresh (nothing is kept in memory
    # between builds), as a new process would, without paying a process start per read
    from recbole.data import create_dataset

    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.model.m6rec import M6Rec

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    config = PluginConfig(model="M6Rec", dataset="ml-100k", config_dict={**SETTINGS, "text_cache_dir": str(cache_dir)})
    dataset = create_dataset(config)

    def encode_here():
        caplog.clear()
        with caplog.at_level("WARNING", logger="recbole_m6rec"):
            model = M6Rec(config, dataset)
        states = model._item_segments.states
        return {"sha": hashlib.sha256(states.numpy().tobytes()).hexdigest(), "misses": model.encoder.cache_misses}, (
            caplog.text
        )

    clean, _ = encode_here()
    (items_file,) = (cache_dir / "segments").glob("items-*.pt")
    good = items_file.read_bytes()
    payload = torch.load(items_file, weights_only=True)
    altered = {**payload, "tensors": {**payload["tensors"], "states": payload["tensors"]["states"].clone()}}
    altered["tensors"]["states"][5, 0, 3] += 0.25  # same shape, same key: only the checksum can tell
    stale = {**payload, "key": "0" * 64}
    damages = {"garbage": b"not a tensor file", "truncated": good[: len(good) // 2], "altered": altered, "stale": stale}
    reasons = {
        "garbage": "unreadable",
        "truncated": "unreadable",
        "altered": "content checksum does not match",
        "stale": "written by other settings",
    }
    for name, damage in damages.items():
        if isinstance(damage, bytes):
            items_file.write_bytes(damage)
        else:
            torch.save(damage, items_file)
        rebuilt, log = encode_here()
        assert rebuilt["sha"] == clean["sha"] and rebuilt["misses"] >= 1, name
        assert f"segment cache file {items_file} is unusable ({reasons[name]}" in log, (name, log[-1500:])
        assert items_file.read_bytes() != (damage if isinstance(damage, bytes) else b"")
        again, log = encode_here()
        assert again["misses"] == 0 and "unusable" not in log, name  # the rebuilt file is good again
