"""On-device compression on this CPU: int8 dynamic quantisation and early exit of the item encoding, against fp32.

    python -m recbole_m6rec.benchmarks.compression --report=reports/compression_ml-100k

One run measures, on ml-100k with the default language model (``--plm``, SmolLM2-135M):

1. **Matrix-multiply rates** of this CPU on the encoder's own shapes (each linear layer of one transformer layer, with
   as many rows as the tokens of a typical padded encoding batch): fp32 ``torch.matmul``, torch's dynamic int8
   linear (what ``quantize: int8`` runs, activation quantisation included) and ``torch._int_mm`` (the bare int8
   product) where this torch has it, on ``--threads`` threads.
2. **Item encoding** of every ml-100k item text (the segment states M6Rec caches): items/s and GFLOP/s, fp32 and
   int8 over every lower layer, and early exit at 3/4, 1/2 and 1/4 of the lower layers. FLOPs are the model's: 2 per
   weight of each linear layer that runs, per token, plus attention's two products; "useful" counts real tokens,
   "executed" every padded token slot of the batches. Timing hooks split each encoding into the linear layers of
   attention and MLP, attention's core (scores, softmax, weighted sum), the MLP's activation, and the rest (norms,
   residuals, embeddings, masks, pooling). A paired check alternates fp32 and int8 on the same batches
   (``--paired_rounds``), so their ratio is measured close in time. ``torch.compile`` of the fp32 layers is timed
   against eager in alternated full passes (``--compile_rounds``, in
   :mod:`~recbole_m6rec.benchmarks.compression_compiled`).
   The input range of each kind of linear layer (largest against median magnitude) says what int8 has to
   represent: dynamic quantisation gives a whole input tensor one scale.
3. **Scoring latency** of M6RecCTR's ``predict`` per 1,000 labelled test candidates (as ``ctr_latency``), fp32 and
   int8 models alternated (``--latency_rounds``), untrained: latency does not depend on the weights.
4. **Accuracy**: M6Rec (NDCG@10, valid and test) and M6RecCTR (AUC) are each trained once in fp32 with the default
   settings for ``--epochs`` epochs (best epoch by validation); the *same trained parameters* are then evaluated with
   int8 (items re-encoded by the int8 layers, online layers int8 too) and with early-exit item states, nothing
   retrained. Both change what the online layers read, so each setting (int8 and every early exit) is also trained
   afresh for ``--retrain_epochs`` epochs and compared with the fp32 model after as many epochs (same seed, same
   batches).
   ``--accuracy_plm auto`` times two training steps of M6Rec on ``--plm`` and uses ``minilm-l6`` instead when an
   epoch would take over ``--max_epoch_minutes`` on this machine now; the report says which it used.

The machine may be shared: the report records, for every phase, the cores other processes kept busy, the load average
and the busiest other processes before and after; compare the ratios within this run. The measurements live in
:mod:`~recbole_m6rec.benchmarks.compression_speed` and :mod:`~recbole_m6rec.benchmarks.compression_accuracy`, the
report's text in :mod:`~recbole_m6rec.benchmarks.compression_report`. ``report.md`` and ``report.json`` go into ``--report``; the measurements
are also saved after every phase to ``<work_dir>/record.json``, from which ``--from_record`` rewrites the report.
``--accuracy_from=<record.json or report.json>`` takes the accuracy results that earlier record holds (a run cut short
keeps the models it finished) and measures the speed part again, on a quiet machine, without the hours of training;
``--speed_from=<record.json or report.json>`` does the converse: it keeps speed measured alone and only trains.
``--accuracy_models`` names the models this run measures itself when the record lacks them ('' for none).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks import publish
from recbole_m6rec.benchmarks.compression_accuracy import accuracy, early_exit_layers, epoch_estimate, plugin_config
from recbole_m6rec.benchmarks.compression_compiled import compiled_encoding
from recbole_m6rec.benchmarks.compression_report import report_markdown, summary
from recbole_m6rec.benchmarks.compression_sources import ACCURACY_MODELS, read_record, take_accuracy, take_speed
from recbole_m6rec.benchmarks.compression_speed import (
    activation_ranges,
    encode_items,
    matmul_rates,
    paired_encoding,
    scoring_latency,
    segment_encoder,
    state_separation,
)
from recbole_m6rec.benchmarks.machine import CpuBeside, machine_load
from recbole_m6rec.lm.batch_encoding import length_sorted_batches

if TYPE_CHECKING:
    from recbole.config import Config

__all__ = ["main", "run"]

FALLBACK_PLM = "minilm-l6"


def run(args) -> dict:
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.text import build_item_texts

    started_at = time.time()
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="compression-"))
    cache_dir = str(work / "text")  # this run's own cache: every encoding is computed, none read from disk
    settings_record = {k: v for k, v in vars(args).items() if k != "from_record"}
    record = {
        "settings": settings_record,
        "machine": {
            "start": machine_load(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "quantized_engine": torch.backends.quantized.engine,
        },
        "phases": {},
    }

    def phase(name: str, fn, *fn_args):
        """Run one measurement, note the machine's load around it, save everything measured so far (an hour's
        measurements survive a later failure)."""
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        before, started, beside = machine_load(), time.perf_counter(), CpuBeside()
        result = fn(*fn_args)
        record["phases"][name] = {
            "seconds": round(time.perf_counter() - started, 1),
            "before": before,
            "after": machine_load(),
            "other_cores": beside.stop()["other_cores"],
        }
        record.setdefault("results", {})[name] = result
        atomic_write_text(work / "record.json", json.dumps(record, indent=2) + "\n")
        return result

    config = plugin_config("M6Rec", args.plm, cache_dir)
    init_seed(config["seed"], config["reproducibility"])
    if args.speed_from:
        take_speed(record, args.speed_from)
        if record["settings"]["plm"] != args.plm:  # the accuracy part would train on another model than it names
            raise ValueError(
                f"--speed_from={args.speed_from} measured --plm={record['settings']['plm']}, this run has "
                f"--plm={args.plm}: give the same model"
            )
        return measure_accuracy(record, args, phase, config, work, started_at)
    train, _, _ = data_preparation(config, create_dataset(config))
    texts = build_item_texts(train._dataset, config["item_text_fields"], config["item_text_template"])
    encoder_keys = ("late_interaction_layers", "segment_tokens", "text_max_tokens", "encode_batch_size")
    settings = {key: config[key] for key in encoder_keys}

    probe = segment_encoder(args.plm, settings, None)
    tokens = probe.tokenize(texts)
    batches = length_sorted_batches(tokens, probe.batch_size)
    tokens_per_batch = int(statistics.median(len(rows) * int(tokens.lengths[rows].max()) for rows in batches))
    shapes = [(m.in_features, m.out_features) for m in probe.stack.layers[0].modules() if isinstance(m, nn.Linear)]
    n_lower = probe.n_lower_layers
    del probe

    record["matmul"] = phase("matmul rates", matmul_rates, tokens_per_batch, shapes, args.repeats)
    torch.set_num_threads(1)  # for context: what the other jobs leave to one thread
    record["matmul_1_thread"] = phase("matmul rates, 1 thread", matmul_rates, tokens_per_batch, shapes, args.repeats)
    torch.set_num_threads(args.threads)
    record["encoding"] = [
        phase(
            f"item encoding {'int8' if quantize == 'int8' else 'fp32'}, {k or n_lower} layers",
            encode_items,
            args.plm,
            settings,
            texts,
            k,
            quantize,
            cache_dir,
        )
        for quantize, k in [("none", None), ("int8", None)] + [("none", k) for k in early_exit_layers(n_lower)[1:]]
    ]
    record["activation_ranges"] = phase("activation ranges", activation_ranges, args.plm, settings, texts)
    record["state_separation"] = phase("int8 state separation", state_separation, args.plm, settings, texts)
    record["paired_encoding"] = phase(
        "paired fp32 / int8 encoding",
        paired_encoding,
        args.plm,
        settings,
        texts,
        args.paired_batches,
        args.paired_rounds,
    )
    if args.compile_rounds:
        record["compiled_encoding"] = phase(
            "compiled fp32 encoding", compiled_encoding, args.plm, settings, texts, args.compile_rounds
        )
    record["latency"] = phase(
        "scoring latency", scoring_latency, args.plm, args.candidates, args.latency_rounds, cache_dir
    )
    return measure_accuracy(record, args, phase, config, work, started_at)


def measure_accuracy(
    record: dict, args: argparse.Namespace, phase: Callable, config: Config, work: Path, started_at: float
) -> dict:
    """The accuracy part: what ``--accuracy_from`` holds, then the ``--accuracy_models`` it lacks, each measured
    through ``phase`` (which times it and saves the record)."""
    cache_dir = str(work / "text")
    record["accuracy"] = take_accuracy(record, args.accuracy_from) if args.accuracy_from else []
    taken = {result["model"] for result in record["accuracy"]}
    to_measure = [name for name in args.accuracy_models if name not in taken]
    if not to_measure:
        return finish(record, work, started_at)
    # training and evaluation on --accuracy_threads: their numbers do not depend on it, their time under load does
    torch.set_num_threads(record["settings"]["accuracy_threads"])
    accuracy_plm = record.get("accuracy_plm") or args.accuracy_plm
    if accuracy_plm == "auto":
        record["epoch_estimate"] = phase("epoch estimate", epoch_estimate, args.plm, cache_dir)
        too_slow = record["epoch_estimate"]["epoch_s"] > 60 * args.max_epoch_minutes
        accuracy_plm = FALLBACK_PLM if too_slow else args.plm
    record["accuracy_plm"] = accuracy_plm
    accuracy_lower = _lower_layers(accuracy_plm, config)
    for name in to_measure:
        epochs, retrain_epochs = record["settings"]["epochs"], record["settings"]["retrain_epochs"]
        record["accuracy"].append(
            phase(f"accuracy {name}", accuracy, name, accuracy_plm, epochs, retrain_epochs, cache_dir, accuracy_lower)
        )
    return finish(record, work, started_at)


def finish(record: dict, work: Path, started_at: float) -> dict:
    """The record's last parts (the code this process ran, the machine at the end), saved for ``--from_record``."""
    from recbole_m6rec.benchmarks import provenance

    record.pop("results", None)  # every result has its own key now
    record["code"] = provenance.collect(None, "ml-100k", started_at)
    record["machine"]["end"] = machine_load()
    atomic_write_text(work / "record.json", json.dumps(record, indent=2) + "\n")  # --from_record reads it back
    print(f"measurements saved to {work / 'record.json'}", flush=True)
    return record


def _lower_layers(plm: str, config) -> int:
    from recbole_m6rec.lm import load_plm

    return load_plm(plm)[1].config.num_hidden_layers - config["late_interaction_layers"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_m6rec.benchmarks.compression",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--report", required=True, help="folder for report.md and report.json")
    parser.add_argument("--plm", default="smollm2-135m", help="language model for the speed part")
    parser.add_argument("--accuracy_plm", default="auto", help=f"auto (--plm, or {FALLBACK_PLM} if too slow) or a name")
    parser.add_argument("--max_epoch_minutes", type=float, default=15.0, help="auto: longest affordable M6Rec epoch")
    parser.add_argument("--epochs", type=int, default=3, help="fp32 training epochs for the accuracy part")
    parser.add_argument(
        "--retrain_epochs", type=int, default=1, help="epochs of int8 and each early exit trained afresh (0: none)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the speed measurements")
    parser.add_argument(
        "--accuracy_threads", type=int, default=1, help="torch threads for training and evaluation (accuracy part)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timings per matmul shape")
    parser.add_argument("--paired_batches", type=int, default=2, help="batches of the paired fp32 / int8 check")
    parser.add_argument("--paired_rounds", type=int, default=3, help="alternations of the paired check")
    parser.add_argument("--candidates", type=int, default=1000, help="scored candidates per latency round")
    parser.add_argument("--latency_rounds", type=int, default=3, help="alternations of the latency check")
    parser.add_argument(
        "--compile_rounds", type=int, default=2, help="alternated eager / compiled encoding passes (0: skip)"
    )
    parser.add_argument("--work_dir", default=None, help="this run's caches and checkpoints (default: a temp folder)")
    parser.add_argument(
        "--from_record", default=None, help="rewrite the report from a saved record.json, measure nothing"
    )
    parser.add_argument(
        "--accuracy_from",
        default=None,
        help="take the accuracy results an earlier run's record.json holds (speed is measured again)",
    )
    parser.add_argument(
        "--speed_from",
        default=None,
        help="take the speed part an earlier run's record.json holds (this run only trains and evaluates)",
    )
    parser.add_argument(
        "--accuracy_models",
        default=",".join(ACCURACY_MODELS),
        help="models whose accuracy this run measures unless --accuracy_from has it; '' for none",
    )
    args = parser.parse_args(argv)
    for name in (
        "epochs",
        "threads",
        "accuracy_threads",
        "repeats",
        "paired_batches",
        "paired_rounds",
        "candidates",
        "latency_rounds",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1 (got {getattr(args, name)})")
    args.accuracy_models = [name for name in args.accuracy_models.split(",") if name]
    unknown = sorted(set(args.accuracy_models) - set(ACCURACY_MODELS))
    if unknown:
        parser.error(f"--accuracy_models: {', '.join(unknown)} unknown; valid: {', '.join(ACCURACY_MODELS)}")
    if args.from_record and (args.speed_from or args.accuracy_from):
        parser.error(
            "--from_record rewrites a report and measures nothing: --speed_from / --accuracy_from do not apply"
        )
    if args.speed_from and not args.accuracy_from and not args.accuracy_models:
        parser.error(f"--speed_from={args.speed_from} with no --accuracy_from and --accuracy_models='': nothing to do")
    if args.compile_rounds < 0:
        parser.error(f"--compile_rounds must be >= 0 (0 skips the compiled encoding; got {args.compile_rounds})")
    if not 0 <= args.retrain_epochs <= args.epochs:
        parser.error(f"--retrain_epochs must be between 0 and --epochs={args.epochs} (got {args.retrain_epochs})")
    return args


def main(argv: list[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    argv_before, sys.argv = sys.argv, [sys.argv[0]]  # RecBole reads sys.argv; keep this script's flags out of it
    try:
        record = read_record(args.from_record, "--from_record") if args.from_record else run(args)
    finally:
        sys.argv = argv_before
    data = {**record, "summary": summary(record)}  # flat names for README figures
    return publish("recbole_m6rec.benchmarks.compression", argv, report_markdown(record), data, args.report, "report")


if __name__ == "__main__":
    main()
