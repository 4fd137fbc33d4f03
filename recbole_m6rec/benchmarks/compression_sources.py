"""Parts of a compression report taken from earlier runs (:mod:`recbole_m6rec.benchmarks.compression`).

Speed wants a quiet machine and takes minutes; accuracy does not care about load and takes an hour. So a report may
combine runs: ``--speed_from`` keeps an earlier run's speed part, ``--accuracy_from`` its accuracy results. Every
taken part keeps the record it came from, that run's commit and load, and its phases are tagged with that record;
a part taken from a run that had itself taken it keeps its first origin.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = [
    "ACCURACY_MODELS",
    "ACCURACY_PHASES",
    "SPEED_RESULTS",
    "SPEED_SETTINGS",
    "accuracy_sources",
    "read_record",
    "source_lines",
    "take_accuracy",
    "take_speed",
]

ACCURACY_MODELS = ("M6Rec", "M6RecCTR")
ACCURACY_SETTINGS = ("accuracy_plm", "max_epoch_minutes", "epochs", "retrain_epochs", "accuracy_threads")
ACCURACY_PHASES = ("accuracy", "epoch estimate")  # phases whose numbers do not depend on the machine's load
SPEED_RESULTS = (
    "matmul",
    "matmul_1_thread",
    "encoding",
    "activation_ranges",
    "state_separation",
    "paired_encoding",
    "latency",
)
SPEED_OPTIONAL = ("compiled_encoding",)  # records older than that phase lack it, and its setting
SPEED_SETTINGS = ("plm", "threads", "repeats", "paired_batches", "paired_rounds", "candidates", "latency_rounds")
MACHINE_KEYS = ("cpus", "platform", "processor", "torch", "threads", "quantized_engine")


def read_record(path: str, flag: str) -> dict:
    """A saved record or report.json, with an error that names the flag and the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{flag}={path}: no such file (give a record.json or a report's report.json)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag}={path}: not a JSON record ({error})") from None


def earlier_accuracy(earlier: dict) -> list[dict]:
    """The accuracy results in a record: a finished run's ``accuracy`` and what an unfinished run saved phase by
    phase in ``results`` (a run cut short after M6Rec keeps M6Rec's), one per model."""
    by_model = {
        name: earlier["results"][f"accuracy {name}"]
        for name in ACCURACY_MODELS
        if f"accuracy {name}" in (earlier.get("results") or {})
    }
    by_model.update({result["model"]: result for result in earlier.get("accuracy") or []})
    return [by_model[name] for name in ACCURACY_MODELS if name in by_model]


def take_speed(record: dict, earlier_file: str) -> None:
    """The speed part of an earlier run's record (``--speed_from``): its measurements, the settings and phases that
    made them and where they came from (``record["speed_source"]``), so that a run that only trains (under load)
    keeps speed measured on a quiet machine."""
    earlier = read_record(earlier_file, "--speed_from")
    missing = [key for key in SPEED_RESULTS if key not in earlier]
    if missing:
        raise ValueError(f"--speed_from={earlier_file}: that record lacks {', '.join(missing)} (its run ended early)")
    record.update({key: earlier[key] for key in SPEED_RESULTS + SPEED_OPTIONAL if key in earlier})
    settings = record["settings"]
    settings.update({key: earlier["settings"][key] for key in SPEED_SETTINGS})
    settings.pop("compile_rounds", None)  # this run measures no speed: the setting is the earlier run's, if any
    if "compile_rounds" in earlier["settings"]:
        settings["compile_rounds"] = earlier["settings"]["compile_rounds"]
    record["phases"].update(_tagged_phases(earlier, earlier_file, speed=True))
    # speed taken from a run that had itself taken it: the run that measured it is the source
    record["speed_source"] = earlier.get("speed_source") or {
        **_source(earlier, earlier_file, models=None),
        "machine": {key: earlier["machine"].get(key) for key in MACHINE_KEYS},
    }


def take_accuracy(record: dict, earlier_file: str) -> list[dict]:
    """The accuracy results of an earlier run's record (``--accuracy_from``), with the settings and phases that made
    them and where they came from (``record["accuracy_sources"]``)."""
    earlier = read_record(earlier_file, "--accuracy_from")
    taken = earlier_accuracy(earlier)
    if not taken:
        raise ValueError(f"--accuracy_from={earlier_file}: that record has no accuracy part (its run ended before it)")
    for key in ("accuracy_plm", "epoch_estimate"):
        if key in earlier:
            record[key] = earlier[key]
    for key in ACCURACY_SETTINGS:
        record["settings"][key] = earlier["settings"][key]
    record["phases"].update(_tagged_phases(earlier, earlier_file, speed=False))
    # a result the earlier run took from a still earlier one keeps that origin
    sources = accuracy_sources(earlier)
    handed_on = {model for source in sources for model in source.get("models") or []}
    measured_there = [result["model"] for result in taken if result["model"] not in handed_on]
    record["accuracy_sources"] = sources + ([_source(earlier, earlier_file, measured_there)] if measured_there else [])
    return taken


def accuracy_sources(record: dict) -> list[dict]:
    """The earlier runs a record's accuracy results come from, one entry per run (older records kept one)."""
    if "accuracy_sources" in record:
        return list(record["accuracy_sources"])
    return [record["accuracy_source"]] if record.get("accuracy_source") else []


def _tagged_phases(earlier: dict, earlier_file: str, speed: bool) -> dict:
    """The earlier record's speed or accuracy phases, each tagged with the record that ran it (a tag it already has
    stays: the phase came from further back)."""
    return {
        name: {**phase, "run": phase.get("run", str(earlier_file))}
        for name, phase in earlier["phases"].items()
        if name.startswith(ACCURACY_PHASES) != speed
    }


def _source(earlier: dict, earlier_file: str, models: list[str] | None) -> dict:
    """Where taken results come from: the record, its load at the start and the code it ran."""
    return {
        "record": str(earlier_file),
        "started_load": earlier["machine"]["start"]["load_average"],
        "code": {k: (earlier.get("code") or {}).get(k) for k in ("git_commit", "git_dirty", "code_hash")},
        **({} if models is None else {"models": models}),
    }


def source_lines(record: dict) -> list[str]:
    """Which parts of this report were measured by the run that wrote it, and which it took from earlier runs."""
    speed = record.get("speed_source")
    lines = [
        "",
        "The speed part was measured in this run."
        if not speed
        else f"The speed part comes from an earlier run of this command ({_described(speed)}{_machine(speed)}), "
        "taken with "
        "`--speed_from` so that it stays a measurement on a quiet machine while this run trained under load.",
    ]
    for source in accuracy_sources(record):
        lines.append(
            f"The accuracy of {', '.join(source.get('models') or ['every model'])} comes from an earlier run of this "
            f"command ({_described(source)}), taken with `--accuracy_from`."
        )
    if speed or accuracy_sources(record):
        lines.append("Every run's phases are listed under Machine.")
    return lines if len(lines) > 2 else []


def _machine(source: dict) -> str:
    machine = source.get("machine")
    return f"; torch {machine['torch']}, {machine['threads']} threads" if machine else ""


def _described(source: dict) -> str:
    code = source["code"]
    ran = f"commit `{code['git_commit'][:10]}`" if code.get("git_commit") else "code it did not record"
    dirty = " + uncommitted changes" if code.get("git_dirty") else ""
    return f"`{source['record']}`, {ran}{dirty}; load average {source['started_load']} at its start"
