"""A benchmark job killed mid-run continues from its last finished epoch when run again for the same result file,
also after a change to code the row does not run (M6Rec's files, for a SASRec row), and starts over when the row's
settings or its own code changed."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

from helpers import REPO

from recbole_m6rec.benchmarks import job
from recbole_m6rec.benchmarks.plan import job_spec

PLAN = {
    "dataset": "ml-100k",
    "common": {
        "user_inter_num_interval": "[0,30]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "epochs": 4,
        "stopping_step": 100,
        "train_batch_size": 256,
        "train_neg_sample_args": None,
        "show_progress": False,
        "state": "WARNING",
    },
    "rows": {"SASRec": {"model": "SASRec"}},
}

# The job's own command line; with KILL_EPOCH=e it SIGKILLs itself inside epoch e's 3rd batch, as a machine that
# goes away would (no cleanup runs).
RUNNER = textwrap.dedent("""
    import os, signal, sys
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole_m6rec.benchmarks import job

    kill_epoch, state = int(sys.argv[3]), {}
    if kill_epoch:
        train_epoch, calculate_loss = Trainer._train_epoch, SASRec.calculate_loss
        def counted(self, train_data, epoch_idx, *args, **kwargs):
            state["epoch"], state["n"] = epoch_idx, 0
            return train_epoch(self, train_data, epoch_idx, *args, **kwargs)
        def killing(self, interaction):
            state["n"] += 1
            if state["epoch"] == kill_epoch and state["n"] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return calculate_loss(self, interaction)
        Trainer._train_epoch, SASRec.calculate_loss = counted, killing
    sys.exit(job.main(sys.argv[1:3]))
""")


def run(tmp_path, spec, out, kill_epoch=0, env=None):
    spec_file = tmp_path / f"spec-{spec['config_hash']}.json"
    spec_file.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(spec_file), str(out), str(kill_epoch)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
    )
    return done, (json.loads(out.read_text()) if out.exists() else None)


def test_a_killed_job_continues_where_it_stopped(tmp_path):
    spec = job_spec(PLAN, "SASRec", 2020)
    whole_done, whole = run(tmp_path, spec, tmp_path / "whole.json")
    assert whole_done.returncode == 0, whole_done.stderr[-2000:]
    assert whole["status"] == "ok" and "resumed_from_epoch" not in whole

    out = tmp_path / "results" / "SASRec-seed2020.json"
    out.parent.mkdir()
    killed, record = run(tmp_path, spec, out, kill_epoch=2)
    assert killed.returncode == -9 and record is None
    partial = job.partial_folder(out)
    assert len(list(partial.glob("SASRec-*-last.pth"))) == 1  # epochs 0 and 1 finished before the kill
    pretend_changed(partial, "recbole_m6rec/model/m6rec.py")  # code a SASRec run never imports
    # the report folder is moved before the run continues: the checkpoint's own paths name the old folder
    (tmp_path / "results").rename(tmp_path / "moved")
    out = tmp_path / "moved" / "SASRec-seed2020.json"
    partial = job.partial_folder(out)

    done, resumed = run(tmp_path, spec, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert resumed["resumed_from_epoch"] == 2
    assert resumed["valid"] == whole["valid"] and resumed["test"] == whole["test"]
    assert resumed["epochs_run"] == whole["epochs_run"] == 4
    assert not partial.exists()  # a finished job leaves no checkpoints behind


def test_a_continued_job_records_the_runtime_of_each_part(tmp_path):
    # a part run under other torch CPU kernels (another CPU kind) makes the result reproducible only within noise
    spec = job_spec(PLAN, "SASRec", 2020)
    out = tmp_path / "results" / "SASRec-seed2020.json"
    out.parent.mkdir()
    killed, _ = run(tmp_path, spec, out, kill_epoch=2, env={"ATEN_CPU_CAPABILITY": "default"})
    assert killed.returncode == -9
    done, resumed = run(tmp_path, spec, out)
    assert done.returncode == 0, done.stderr[-2000:]
    parts = resumed["provenance"]["part_runtimes"]
    assert [part["cpu_capability"] for part in parts] == ["DEFAULT", resumed["provenance"]["runtime"]["cpu_capability"]]
    assert parts[-1] == resumed["provenance"]["runtime"]


def pretend_changed(partial, path):
    """Make the partial run's stamp say that ``path`` had other content when that run started."""
    stamp_file = partial / "partial.json"
    stamp = json.loads(stamp_file.read_text())
    assert path in stamp["files"]
    stamp["files"][path] = "0" * 16
    stamp_file.write_text(json.dumps(stamp))


def test_a_partial_run_of_other_settings_or_code_is_not_continued(tmp_path):
    out = tmp_path / "SASRec-seed2020.json"
    spec = job_spec(PLAN, "SASRec", 2020)
    killed, _ = run(tmp_path, spec, out, kill_epoch=1)
    assert killed.returncode == -9 and list(job.partial_folder(out).glob("*-last.pth"))
    changed = job_spec(PLAN, "SASRec", 2020, {"learning_rate": 0.002})
    done, record = run(tmp_path, changed, out, kill_epoch=1)
    assert done.returncode == -9 and record is None
    stamp = json.loads((job.partial_folder(out) / "partial.json").read_text())
    assert stamp["config_hash"] == changed["config_hash"] != spec["config_hash"]  # started over, stamped anew

    pretend_changed(job.partial_folder(out), "recbole_m6rec/trainer.py")  # code every run imports
    done, record = run(tmp_path, changed, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert record["status"] == "ok" and "resumed_from_epoch" not in record


def test_an_unreadable_resume_point_starts_over_instead_of_failing_every_resume(tmp_path):
    spec = job_spec(PLAN, "SASRec", 2020)
    folder = job.partial_folder(tmp_path / "SASRec-seed2020.json")
    assert job.resume_point(folder, spec)[0] is None  # a fresh run stamps the folder
    (folder / "SASRec-Dec-03-2026_11-00-00-last.pth").write_bytes(b"cut short by a full disk")
    point, stamp = job.resume_point(folder, spec)
    assert point is None and not list(folder.glob("*.pth")) and stamp["config_hash"] == spec["config_hash"]


def test_checkpoints_kept_on_another_disk_continue_a_run_whose_result_folder_is_new(tmp_path, monkeypatch):
    """With $RECBOLE_M6REC_PARTIAL_DIR the checkpoints live there, not beside the result: a run killed on one
    machine continues on a fresh checkout of the report folder that brought that directory along."""
    keep = {job.PARTIAL_DIR_ENV: "keep"}  # relative: below the job's working directory
    spec = job_spec(PLAN, "SASRec", 2020)
    out = tmp_path / "reports" / "r" / "results" / "SASRec-seed2020.json"
    out.parent.mkdir(parents=True)
    killed, _ = run(tmp_path, spec, out, kill_epoch=2, env=keep)
    assert killed.returncode == -9
    kept = tmp_path / "keep" / "reports" / "r" / "results" / "SASRec-seed2020"
    assert len(list(kept.glob("SASRec-*-last.pth"))) == 1 and not (out.parent / ".partial").exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(job.PARTIAL_DIR_ENV, "keep")
    assert job.partial_folder(out).resolve() == kept  # what status and the runner read

    shutil.rmtree(tmp_path / "reports")  # a fresh checkout: the report folder as committed, no results
    out.parent.mkdir(parents=True)
    done, resumed = run(tmp_path, spec, out, env=keep)
    assert done.returncode == 0, done.stderr[-2000:]
    assert resumed["resumed_from_epoch"] == 2 and not kept.exists()


def test_a_partial_dir_holds_result_folders_outside_the_working_directory_at_their_whole_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(job.PARTIAL_DIR_ENV, str(tmp_path / "keep"))
    outside = tmp_path.parent / "elsewhere" / "SASRec-seed1.json"
    assert job.partial_folder(outside) == tmp_path / "keep" / str(outside.parent.resolve()).lstrip("/") / "SASRec-seed1"
    monkeypatch.delenv(job.PARTIAL_DIR_ENV)
    assert job.partial_folder(outside) == outside.parent / ".partial" / "SASRec-seed1"
