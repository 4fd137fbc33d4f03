"""Carry a report's finished results over to the settings hash by value, once.

``config_hash`` (:func:`~recbole_m6rec.benchmarks.plan.job_spec`) now hashes the settings a run reads, as values.
Results written before hashed the plugin's yaml files as text, comments included, so editing a comment, or a
default that a row overrides anyway, made every finished row of a plan run again. This command gives such results
the new hash, but only where that is provably right: the older hash, recomputed from the plan and today's yaml
files, must equal the one the result carries, so its settings are exactly today's. Anything else is left as it is
(it reruns, as before). Provenance is untouched: a result whose code changed still reruns.

    python -m recbole_m6rec.benchmarks.rehash --config_files=configs/bench_ml-100k.yaml --report=reports/ml-100k

``--new_setting key=value`` (repeatable) carries results over a new setting instead: a key added to a model's
yaml, whose default ``value`` is what the code did before the key existed (e.g. ``popularity_bias=False``). A
result is carried when its hash equals the hash of today's settings without those keys and the run reads each key
at that value; a row that sets another value is left (it reruns). Whether the value is the old behaviour is the
code's claim, which its tests must show; the result's provenance still records that the code changed, so it is
reused only where code changes are kept (``--keep_finished``).

    python -m recbole_m6rec.benchmarks.rehash --config_files=configs/levers_ml-100k.yaml \
        --report=reports/ml-100k-levers --new_setting popularity_bias=False

What it covers: ``results/<row>-seed<seed>.json`` for every row and seed of the plan (tuned rows at their chosen
settings), every trial named in ``tuning/<row>-tuning.json``, and the ``.partial/`` folder beside each, whose
``partial.json`` stamp is carried over too. A carried result keeps the older hash as ``config_hash_text`` (or, over
``--new_setting``, as ``config_hash_before`` with those settings).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from recbole_m6rec.atomic import atomic_write_text, stable_hash
from recbole_m6rec.benchmarks import job
from recbole_m6rec.benchmarks.plan import (
    default_files,
    effective_settings,
    job_spec,
    load_plan,
    row_seeds,
    settings_hash,
)

__all__ = ["text_hash", "hash_before", "carry_over", "main"]


def text_hash(plan: dict, name: str, seed: int, overrides: dict | None = None) -> str:
    """The hash results were written with before: the plugin's yaml files as text, comments included."""
    spec = job_spec(plan, name, seed, overrides)
    texts = [
        path.read_text(encoding="utf-8") if path.is_file() else ""
        for path in default_files(spec["model"], plan["dataset"])
    ]
    parts = [spec["model"], plan["dataset"], seed, spec["config_dict"], spec["config_files"], texts]
    return stable_hash(parts)[:16]


def hash_before(new_settings: dict) -> Callable[..., str | None]:
    """The older-hash function for settings added since: the hash of today's settings without ``new_settings``'
    keys, or ``None`` where the run reads one of them at another value (then nothing is carried). Values compare
    by type too: ``0`` is not ``False``."""

    def older(plan: dict, name: str, seed: int, overrides: dict | None = None) -> str | None:
        spec, settings = _read_settings(plan, name, seed, overrides)
        for key, value in new_settings.items():
            if key not in settings:
                return None
            read = settings.pop(key)
            if type(read) is not type(value) or read != value:
                return None
        return settings_hash(spec["model"], plan["dataset"], seed, settings, spec["config_files"])

    return older


def _read_settings(plan: dict, name: str, seed: int, overrides: dict | None = None) -> tuple[dict, dict]:
    """The job spec of row ``name`` at ``seed``, and the settings it reads (plan settings and yaml defaults), as
    values."""
    spec = job_spec(plan, name, seed, overrides)
    return spec, effective_settings(spec["model"], plan["dataset"], spec["config_dict"])


def _jobs(plan: dict, report_dir: Path, older_hash=text_hash) -> Iterator[tuple[str, int, dict, Path, Path]]:
    """(row, seed, overrides, result file under the older hash, under the new one) for every result a report of
    ``plan`` may hold."""
    for name in plan["rows"]:
        tuning_file = report_dir / "tuning" / f"{name}-tuning.json"
        tuning = json.loads(tuning_file.read_text(encoding="utf-8")) if tuning_file.is_file() else {}
        chosen = tuning.get("best_params") or {}
        for seed in row_seeds(plan, name):
            out = report_dir / "results" / f"{name}-seed{seed}.json"
            yield name, seed, chosen, out, out
        for trial in tuning.get("trials") or []:
            params, seed = trial.get("params") or {}, tuning.get("seed", plan.get("tuning", {}).get("seed"))
            older = older_hash(plan, name, seed, params)  # None: no older settings to carry from
            new = report_dir / "tuning" / name / f"trial-{job_spec(plan, name, seed, params)['config_hash']}.json"
            old = report_dir / "tuning" / name / f"trial-{older}.json" if older else new
            yield name, seed, params, old, new


def _carry_partial(old_out: Path, new_out: Path, old_hash: str, new_hash: str) -> bool:
    """Move an interrupted run's folder to its new name and re-stamp it; False when there is none to carry."""
    folder, stamp_file = job.partial_folder(old_out), job.partial_folder(old_out) / "partial.json"
    try:
        stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp.get("config_hash") != old_hash:
        return False
    atomic_write_text(stamp_file, json.dumps({**stamp, "config_hash": new_hash}, indent=1))
    if new_out != old_out:
        folder.rename(job.partial_folder(new_out))
    return True


def _older_hash_record(old_hash: str, new_settings: dict | None) -> dict:
    """What a carried result keeps of its older hash: ``config_hash_text`` (the yaml-text hash), or for settings
    added since, ``config_hash_before`` with the settings it was carried over (a result may carry both)."""
    if new_settings:
        return {"config_hash_before": {"hash": old_hash, "new_settings": new_settings}}
    return {"config_hash_text": old_hash}


def carry_over(plan: dict, report_dir: Path, new_settings: dict | None = None) -> dict[str, list[str]]:
    """Give ``report_dir``'s results of ``plan`` the new hash where their settings are provably today's (from the
    yaml-as-text hash, or from before ``new_settings`` existed: :func:`hash_before`); returns
    ``{"carried": [...], "partial": [...], "left": [...]}`` (files, relative to ``report_dir``)."""
    older_hash = hash_before(new_settings) if new_settings else text_hash
    done: dict[str, list[str]] = {"carried": [], "partial": [], "left": []}
    for name, seed, overrides, old_out, new_out in _jobs(plan, report_dir, older_hash):
        old_hash, new_hash = (
            older_hash(plan, name, seed, overrides),
            job_spec(plan, name, seed, overrides)["config_hash"],
        )
        if _carry_partial(old_out, new_out, old_hash, new_hash):
            done["partial"].append(str(job.partial_folder(new_out).relative_to(report_dir)))
        if not old_out.is_file():
            continue
        record = json.loads(old_out.read_text(encoding="utf-8"))
        if record.get("config_hash") == new_hash:
            continue  # carried already
        if record.get("config_hash") != old_hash:
            done["left"].append(str(old_out.relative_to(report_dir)))
            continue
        atomic_write_text(
            new_out,
            json.dumps({**record, "config_hash": new_hash, **_older_hash_record(old_hash, new_settings)}, indent=1),
        )
        if new_out != old_out:
            old_out.unlink()
        done["carried"].append(str(new_out.relative_to(report_dir)))
    return done


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", required=True, help="the plan the report was made with")
    parser.add_argument("--report", required=True, help="the report folder")
    parser.add_argument(
        "--new_setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting added since the results ran, at the value that does what the code did before it (yaml)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report_dir = Path(args.report)
    if not report_dir.is_dir():
        raise FileNotFoundError(f"--report={args.report}: no such folder")
    plan = load_plan(args.config_files, {}, None, None)
    new_settings = {}
    for item in args.new_setting:
        key, sep, value = item.partition("=")
        if not (sep and key.strip()):
            parser.error(f"--new_setting {item!r}: expected KEY=VALUE, e.g. popularity_bias=False")
        try:
            new_settings[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            parser.error(f"--new_setting {item!r}: the value is not yaml ({error})")
    for key in new_settings:
        if not any(key in _read_settings(plan, name, row_seeds(plan, name)[0])[1] for name in plan["rows"]):
            parser.error(
                f"--new_setting {key}: no row of {args.config_files} reads a setting '{key}' (check its spelling "
                "against the model's yaml under recbole_m6rec/properties/)"
            )
    done = carry_over(plan, report_dir, new_settings)
    for kind, files in done.items():
        print(f"{kind}: {len(files)}" + "".join(f"\n  {file}" for file in files), flush=True)
    return done


if __name__ == "__main__":
    main()
