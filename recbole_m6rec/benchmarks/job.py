"""One (row, seed) of a leaderboard, run in its own process so that its peak memory, logs and failures are its own.

    python -m recbole_m6rec.benchmarks.job SPEC.json OUT.json

SPEC holds ``row``, ``model``, ``dataset``, ``seed``, ``config_dict`` and ``config_files`` (and, optionally,
``valid_values: false`` to skip validation's values); OUT is written atomically
whether the run succeeds or fails. A finished record holds the results (``valid``: the best epoch's validation
result, ``test``), the training length (``epochs_run``, ``best_epoch``, ``epoch_cap``, ``hit_cap``) and its
``per_sample_test`` (labelled evaluation: each test sample's user, label and score, for a paired AUC test), the
same for validation (``per_user_valid`` / ``per_sample_valid``: :mod:`~recbole_m6rec.benchmarks.valid_values`), its
``provenance`` (:mod:`recbole_m6rec.benchmarks.provenance`: the plugin code the run imported, the data files,
the library versions, the git commit) and ``machine`` (:class:`recbole_m6rec.benchmarks.machine.CpuBeside`: how
many cores other processes kept busy during the run, so a report can say whose times were measured alone).

**Interrupted jobs continue.** A job's checkpoints live in ``.partial/<OUT name>/`` beside OUT (or below
``$RECBOLE_M6REC_PARTIAL_DIR``: :func:`partial_parent`), with the resume point its trainer writes after every
evaluated epoch (:class:`recbole_m6rec.trainer.RunHooks`). A job killed mid-run (the machine went away,
``kill -9``) leaves that folder; the next job for the same OUT continues from the last finished epoch, to the
metrics an uninterrupted run gives, if the row's settings, the plugin's source files and the library versions are
those the partial run had (``partial.json``); otherwise it starts over. The record says ``resumed_from_epoch``,
and ``provenance.part_runtimes`` lists each part's runtime (threads, CPU, torch's CPU kernel set; ``None`` for a
part from before this record), since a run continued on a CPU of another kernel set is no longer reproducible bit
for bit. The folder is removed once the job has a result, success or failure.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks.kept_values import compact_samples, kept_per_user
from recbole_m6rec.benchmarks.machine import CpuBeside
from recbole_m6rec.benchmarks.report_tables import trains_nothing
from recbole_m6rec.benchmarks.valid_values import validation_record


def best_epoch(checkpoint_file: str | None) -> int | None:
    """The epoch of the best model, as its checkpoint records it (RecBole's and the plugin's both keep ``epoch``);
    -1 for a model saved before any training."""
    if not checkpoint_file:
        return None
    import torch

    try:  # our own file, written by this process a moment ago
        checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint only loses this one fact
        return None
    epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
    return int(epoch) if epoch is not None else None


def training_facts(config, outcome) -> dict:
    """Epochs run, the best epoch, the cap and whether the run stopped at it (none of these for a model that
    trains nothing)."""
    trains = outcome.extra.get("trains", True) and config["epochs"] > 0 and not trains_nothing(config["model"])
    if not trains:
        return {
            "trains": False,
            "epochs_run": 0,
            "best_epoch": None,
            "epoch_cap": None,
            "hit_cap": False,
            "stopping_step": None,
        }
    epochs_run = int(outcome.extra.get("epochs_run", 0))
    cap = int(config["epochs"])
    return {
        "trains": True,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch(outcome.checkpoint_file),
        "epoch_cap": cap,
        "hit_cap": epochs_run >= cap,
        "stopping_step": config["stopping_step"],
    }


AMP_DTYPES = ("bfloat16", "float16")


def apply_torch_settings(config_dict: dict) -> None:
    """Two process-wide torch settings a plan may give, for which RecBole has no key: ``amp_dtype``, the dtype of
    the autocast that RecBole's ``enable_amp`` puts around each training step (torch's default on CUDA is float16,
    which needs loss scaling; ``bfloat16`` does not), and ``float32_matmul_precision`` (``high``: float32 matrix
    products may use TF32 on CUDA). Being settings, both count in the result's settings hash."""
    import torch

    dtype = config_dict.get("amp_dtype")
    if dtype is not None:
        if dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)} (got {dtype!r})")
        torch.set_autocast_dtype("cuda", getattr(torch, dtype))
    if config_dict.get("float32_matmul_precision") is not None:
        torch.set_float32_matmul_precision(config_dict["float32_matmul_precision"])


PARTIAL_DIR_ENV = "RECBOLE_M6REC_PARTIAL_DIR"


def partial_parent(folder: str | Path) -> Path:
    """Where the jobs writing results into ``folder`` keep their checkpoints: ``folder/.partial``, or, when
    ``$RECBOLE_M6REC_PARTIAL_DIR`` is set (a disk that outlives the machine), that directory followed by
    ``folder``'s path (relative to the working directory when it lies below it)."""
    root = os.environ.get(PARTIAL_DIR_ENV)
    if not root:
        return Path(folder) / ".partial"
    resolved = Path(folder).resolve()
    try:
        relative = resolved.relative_to(Path.cwd().resolve())
    except ValueError:
        relative = resolved.relative_to(resolved.anchor)
    return Path(root) / relative


def partial_folder(out: str | Path) -> Path:
    """Where the job writing ``out`` keeps its checkpoints while it runs."""
    out = Path(out)
    return partial_parent(out.parent) / out.stem


def resume_point(folder: Path, spec: dict) -> tuple[Path | None, dict]:
    """The latest resume point in ``folder`` if a run of this spec wrote it under the same libraries and the same
    code for this row, else ``None`` with the folder emptied and stamped for the run about to start; and the stamp
    (``partial.json``) the run continues under.

    "The same code for this row" is checked on the plugin modules a run of ``spec["model"]`` imports up front (the
    model's module, its trainer's, the pipeline's), so a partial SASRec run survives a change to M6Rec's files;
    :func:`run_job` checks again, after the continued run, every module it really imported."""
    from recbole_m6rec import quick_start, registry  # noqa: F401 - imported for their files
    from recbole_m6rec.benchmarks import provenance

    registry.get_model(spec["model"])
    if registry.is_plugin_model(spec["model"]):
        registry.get_trainer(None, spec["model"])
    versions = provenance.library_versions()
    stamp_file = folder / "partial.json"
    try:
        stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
        same = (
            all(stamp[key] == spec[key] for key in ("config_hash", "seed"))
            and stamp["versions"] == versions
            and not provenance.changed_files(provenance.code_files(), stamp["files"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    points = sorted(folder.glob("*-last.pth"), key=lambda path: path.stat().st_mtime) if same else []
    if points:
        try:
            _best_file_beside(points[-1])
            stamp["runtimes"] = [*stamp.get("runtimes", [None]), provenance.runtime()]  # the part starting now
            atomic_write_text(stamp_file, json.dumps(stamp, indent=1))
            return points[-1], stamp
        except (ValueError, OSError) as error:  # unreadable, or a full disk: start over, not fail every resume
            print(f"starting over: the resume point in {folder} cannot be read ({error})", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    stamp = {
        "config_hash": spec["config_hash"],
        "seed": spec["seed"],
        "versions": versions,
        "files": provenance.package_files(),
        "runtimes": [provenance.runtime()],
    }
    atomic_write_text(stamp_file, json.dumps(stamp, indent=1))
    return None, stamp


def _best_file_beside(point: Path) -> None:
    """Point a resume point's ``best_file`` (where the run keeps its best epoch's model) into the folder it lies in.
    The path is written when the run starts; a partial folder moved since (a report folder renamed or copied, a
    tuning trial given a new hash) would otherwise send the continued run's saves to a folder that is gone."""
    from recbole_m6rec.checkpoint import load_plain_checkpoint, save_plain_checkpoint

    checkpoint = load_plain_checkpoint(point, map_location="cpu")
    best = checkpoint.get("best_file")
    if best and Path(best).parent.resolve() != point.parent.resolve():
        checkpoint.pop("format", None)
        save_plain_checkpoint(point, **{**checkpoint, "best_file": str(point.parent / Path(best).name)})


def forget_resume_point(folder: Path) -> None:
    """Make ``folder`` no longer a run to continue (its stamp and last-epoch points go; the best model, which the
    re-evaluation on validation loads, stays). A later job for the same result starts over instead of training a
    finished run on, or, after a run that ended at its epoch cap, testing its last epoch in place of its best."""
    (folder / "partial.json").unlink(missing_ok=True)
    for point in folder.glob("*-last.pth"):
        point.unlink(missing_ok=True)


def run_job(spec: dict, checkpoint_dir: Path | None = None, write: Callable[[dict], None] | None = None) -> dict:
    """Run ``spec``; with ``checkpoint_dir``, continue the interrupted run found there (see the module docstring).
    ``write`` gets the finished record (times, memory and provenance those of the run) before validation's values
    are added to it (:mod:`~recbole_m6rec.benchmarks.valid_values`), so that a job stopped during that extra step
    still leaves its result."""
    from recbole_m6rec.benchmarks import provenance
    from recbole_m6rec.checkpoint import load_plain_checkpoint
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.quick_start import run_pipeline

    started_at = time.time()
    data_path = None
    resume_from = None
    if checkpoint_dir is None:
        checkpoint_dir = Path(tempfile.mkdtemp(prefix="m6rec-job-"))
    else:
        resume_from, stamp = resume_point(checkpoint_dir, spec)
    record = {key: spec[key] for key in ("row", "model", "dataset", "seed", "config_hash")}
    beside = CpuBeside()
    started = time.perf_counter()
    outcome = main = None
    try:
        config_dict = {**spec["config_dict"], "seed": spec["seed"], "checkpoint_dir": str(checkpoint_dir)}
        if resume_from is not None:
            config_dict["resume_checkpoint"] = str(resume_from)
            record["resumed_from_epoch"] = load_plain_checkpoint(resume_from)["epoch"] + 1
            print(f"continuing the interrupted run in {checkpoint_dir} at epoch {record['resumed_from_epoch']}")
        apply_torch_settings(config_dict)
        config = PluginConfig(
            model=spec["model"],
            dataset=spec["dataset"],
            config_file_list=spec.get("config_files") or None,
            config_dict=config_dict,
        )
        data_path = config["data_path"]
        outcome = run_pipeline(config, saved=True)
        main = config["valid_metric"].lower()
        cold_plan = "cold_test_users" in outcome.extra
        record.update(
            status="ok",
            split_fingerprint=outcome.split_fingerprint,
            history_mask=outcome.history_mask,
            train_seconds=round(outcome.seconds["train"], 2),
            test_seconds=round(outcome.seconds["test"], 2),
            model_init_seconds=round(outcome.seconds["model_init"], 2),
            test=dict(outcome.result["test_result"]),
            valid=dict(outcome.result["best_valid_result"]),
            extra=outcome.extra,
            **training_facts(config, outcome),
            # each user's value of the main metric (and a cold-item plan's Recalls), for the report's paired tests
            per_user_test=kept_per_user(outcome.per_user_test, main, cold_plan),
            per_sample_test=compact_samples(outcome.per_sample_test),
        )
    except Exception as error:  # recorded, and the leaderboard goes on with the next row
        record.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    try:
        # after the run: the plugin modules it imported are in sys.modules now
        record["provenance"] = provenance.collect(data_path, spec["dataset"], started_at)
        if resume_from is not None:
            record["provenance"]["part_runtimes"] = stamp["runtimes"]
            kernels = {(part or {}).get("cpu_capability") for part in stamp["runtimes"]} - {None}
            if len(kernels) > 1:
                print(
                    f"this run's parts ran different torch CPU kernel sets ({', '.join(sorted(kernels))}): its result "
                    "reproduces within seed noise, not bit for bit"
                )
        if resume_from is not None and record["status"] == "ok":
            earlier_code = provenance.changed_files(record["provenance"]["code"], stamp["files"])
            if earlier_code:  # a module imported only later in the run changed between the two parts
                record.update(
                    status="failed",
                    error=f"continued a run whose first part ran other code ({', '.join(earlier_code)}); run it again",
                )
        record["wall_seconds"] = round(time.perf_counter() - started, 2)
        record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        record["machine"] = beside.stop()  # what else ran: this row's times are its own only if nothing did
        if record["status"] == "ok":
            if write is not None:
                write(record)
                # the run is done: a job stopped from here on must not leave it to be continued
                forget_resume_point(checkpoint_dir)
            # the same values for validation, which chooses: the best model evaluated on it once more (it imports
            # no plugin module the run did not, so the provenance above holds); not for a spec that says
            # `valid_values: false` (time-budgeted runs)
            if spec.get("valid_values", True):
                record.update(validation_record(outcome, main, record["trains"]))
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))

    def write(record: dict) -> None:
        atomic_write_text(argv[1], json.dumps(record, indent=1, default=str))

    record = run_job(spec, partial_folder(argv[1]), write)
    write(record)
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
