"""M6Rec's training-step time against catalogue size, for each loss (CE, inbatch, BPR, sampled_softmax), in float32
and optionally under bfloat16 autocast (what RecBole's ``enable_amp`` does on a CPU: ``--precisions float32 bfloat16``).

    python -m recbole_m6rec.benchmarks.step_time --report=reports/step_time

CE runs the item tower over every item at every step, so its step grows with the catalogue; inbatch, BPR and
sampled_softmax run it over the batch's targets and their negatives only. One run measures every (catalogue, loss)
pair on the same batch, so the ratios side by side are what to read; the absolute times depend on the machine and on
what else ran beside it (the report records the load average and the busiest other processes before and after).

Catalogues: the model is built once on ml-100k (its real texts, segment states and training windows); a catalogue of
N items is ml-100k's item table padded to N rows, item i > 1,682 reusing the cached segment states of item
``(i - 1) % 1682 + 1``. With ``segment_tokens: 1`` every item is one pooled vector whatever its text, so the item
tower's cost per item does not depend on which text it is; the default sizes are ml-100k's 1,682 items, ml-1m's
3,706 rated items and a synthetic 50,000. Nothing but the catalogue changes between sizes: the same batch of
windows (ml-100k users), the same targets; BPR's RecBole negative is drawn again from the padded catalogue.

Each (catalogue, loss) pair gets a fresh Adam optimiser, ``--warmup`` untimed steps, then ``--steps`` timed steps
(forward, backward, optimiser step); the median is reported. ``report.md`` and ``results.json`` are written atomically
into the report folder, with the command that made them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks.machine import machine_load

__all__ = ["main", "pad_catalogue", "measure"]

LOSSES = {
    "CE": {"loss_type": "CE"},
    "inbatch": {"loss_type": "inbatch"},
    "BPR": {"loss_type": "BPR"},
    "sampled_softmax": {"loss_type": "sampled_softmax"},
}
DEFAULT_SIZES = (1682, 3706, 50000)
PRECISIONS = ("float32", "bfloat16")  # bfloat16: the step under torch.autocast, as RecBole's enable_amp runs it


def pad_catalogue(model, items: int) -> None:
    """Give ``model`` a catalogue of ``items`` items (at least its own; row 0 stays the padding item): item i past the
    real ones reuses the cached segment states, the seen flag and (text+ID hybrid) a copy of the ID embedding of real
    item ``(i - 1) % real + 1``."""
    segments = model._item_segments
    if segments.states is None:
        raise ValueError("padding the catalogue needs cached segment states (a tuning other than 'full')")
    real = len(segments.states) - 1
    if items < real:
        raise ValueError(f"a catalogue of {items} items is smaller than the dataset's {real}")
    rows = torch.arange(items + 1)
    rows[1:] = (rows[1:] - 1) % real + 1
    model._item_segments = dataclasses.replace(segments, states=segments.states[rows], mask=segments.mask[rows])
    model.cold.seen = model.cold.seen[rows]
    if model.item_id_embedding is not None:  # the hybrid: a learned ID vector per item, as a real catalogue has
        old = model.item_id_embedding
        model.item_id_embedding = torch.nn.Embedding(items + 1, old.embedding_dim, padding_idx=0).to(old.weight)
        with torch.no_grad():
            model.item_id_embedding.weight.copy_(old.weight[rows])
    model.n_items = items + 1


def measure(model, batch, warmup: int, steps: int, learning_rate: float, precision: str = "float32") -> dict:
    """Median seconds of a training step (forward, backward, Adam step) and the items the item tower scored;
    ``precision`` bfloat16 runs the forward pass under ``torch.autocast`` (float32 weights and optimiser)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    device_type = next(model.parameters()).device.type
    scored = []
    item_vectors = model.item_vectors

    def counting(item_ids=None):
        scored.append(model.n_items - 1 if item_ids is None else len(item_ids))  # CE's row 0 is the padding item
        return item_vectors(item_ids)

    model.item_vectors = counting
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    times, losses = [], []
    try:
        for step in range(warmup + steps):
            started = time.perf_counter()
            optimizer.zero_grad()
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                loss = model.calculate_loss(batch)
            loss.backward()
            optimizer.step()
            if step >= warmup:
                times.append(time.perf_counter() - started)
                losses.append(loss.item())
    finally:
        del model.item_vectors
    return {
        "median_s": statistics.median(times),
        "step_s": [round(t, 4) for t in times],
        "items_scored": scored[-1],
        "final_loss": losses[-1],
    }


def _config(args, **overrides):
    from recbole_m6rec.config import PluginConfig

    settings = {
        "plm_name_or_path": args.plm,
        "train_batch_size": args.batch_size,
        "show_progress": False,
        "state": "WARNING",
        "loss_type": "BPR",
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
        **overrides,
    }
    if args.max_history:
        settings["MAX_ITEM_LIST_LENGTH"] = args.max_history
    return PluginConfig(model="M6Rec", dataset="ml-100k", config_dict=settings)


def run(args) -> dict:
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.m6rec_trainer import whole_sequence_loader
    from recbole_m6rec.model.losses import draw_negatives, negative_pool
    from recbole_m6rec.registry import get_model

    if args.threads:
        torch.set_num_threads(args.threads)
    before = machine_load()
    config = _config(args)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    batch = next(iter(whole_sequence_loader(config, train)))
    results = []
    for n_items, name, precision in itertools.product(args.sizes, args.losses, args.precisions):
        init_seed(config["seed"], config["reproducibility"])
        model = get_model("M6Rec")(config, train._dataset)
        model.settings = dataclasses.replace(model.settings, **LOSSES[name], softmax_negatives=args.negatives)
        pad_catalogue(model, n_items)
        if model.n_items > train._dataset.item_num:  # RecBole's negative from the padded catalogue
            batch.interaction[model.NEG_ITEM_ID] = draw_negatives(negative_pool(model.n_items), batch[model.ITEM_ID])
        row = {
            "items": n_items,
            "loss": name,
            "precision": precision,
            **measure(model, batch, args.warmup, args.steps, config["learning_rate"], precision),
        }
        results.append(row)
        print(
            f"{n_items:>7} items  {name:<16} {precision:<9} {row['median_s']:.3f} s/step  "
            f"({row['items_scored']} item vectors)",
            flush=True,
        )
        del model
    return {
        "command": "python -m recbole_m6rec.benchmarks.step_time " + " ".join(shlex.quote(a) for a in args.argv),
        "settings": {
            "plm_name_or_path": args.plm,
            "windows_per_batch": len(batch),
            "scored_positions": int(batch["item_length"].sum()),
            "MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"],
            "softmax_negatives": args.negatives,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "torch_threads": torch.get_num_threads(),
            "precisions": list(args.precisions),
            "tuning": config["tuning"],
            "item_tower": config["item_tower"],
            "segment_tokens": config["segment_tokens"],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "before": before,
            "after": machine_load(),
        },
        "results": results,
    }


def _table(sizes: list[int], columns: list, headers: dict, cell: dict, text) -> list[str]:
    """Markdown rows: one per catalogue size, one column per entry of ``columns`` (headed ``headers[column]``),
    ``text(result)`` in each cell that has a result in ``cell[(size, column)]``, "–" in the others."""
    lines = ["| items | " + " | ".join(headers[c] for c in columns) + " |", "|---:|" + "---:|" * len(columns)]
    for n in sizes:
        lines.append(f"| {n:,} | " + " | ".join(text(cell[(n, c)]) if (n, c) in cell else "–" for c in columns) + " |")
    return lines


def report_markdown(record: dict) -> str:
    results = record["results"]
    sizes = sorted({r["items"] for r in results})
    precisions = [p for p in PRECISIONS if any(r.get("precision", "float32") == p for r in results)]
    columns = [  # (loss, precision), named by the loss alone when every step ran in float32
        (name, p) for name in LOSSES for p in precisions if any(r["loss"] == name for r in results)
    ]
    label = {c: c[0] if precisions == ["float32"] else f"{c[0]} {c[1]}" for c in columns}
    cell = {(r["items"], (r["loss"], r.get("precision", "float32"))): r for r in results}
    base = cell.get((sizes[0], ("CE", "float32")))
    lines = [
        "# M6Rec training-step time against catalogue size",
        "",
        f"Made by `{record['command']}`.",
        "",
        "Median seconds per training step (forward, backward, Adam step) on one batch of "
        f"{record['settings']['windows_per_batch']} ml-100k windows ({record['settings']['scored_positions']} scored "
        f"positions), {record['settings']['plm_name_or_path']}, after {record['settings']['warmup_steps']} warm-up "
        f"step(s), {record['settings']['timed_steps']} timed; in brackets the item vectors the item tower computed "
        "per step. A catalogue of N items is ml-100k's item table padded to N rows (see the module docstring of "
        "`recbole_m6rec.benchmarks.step_time`)."
        + (
            " `bfloat16`: the forward pass under torch.autocast (bfloat16 matrix products, float32 weights and "
            "optimiser), as RecBole's `enable_amp` runs a training step on the CPU."
            if "bfloat16" in precisions
            else ""
        ),
        "",
    ]
    lines += _table(sizes, columns, label, cell, lambda r: f"{r['median_s']:.3f} ({r['items_scored']:,})")
    base_name = "CE's" if precisions == ["float32"] else "float32 CE's"
    lines += ["", f"Each step's time relative to {base_name} on the smallest catalogue:", ""]
    lines += _table(sizes, columns, label, cell if base else {}, lambda r: f"{r['median_s'] / base['median_s']:.2f}")
    machine = record["machine"]
    lines += [
        "",
        "## Machine",
        "",
        f"{machine['cpus']} CPUs, {machine['platform']}, torch {machine['torch']}, "
        f"{record['settings']['torch_threads']} torch threads. The machine is shared: absolute times depend on what "
        "else ran; compare the ratios within this run.",
        "",
        f"- load average (1, 5, 15 min) before: {machine['before']['load_average']}, after: "
        f"{machine['after']['load_average']}",
        f"- busiest other processes before: {', '.join(machine['before']['busiest_other_processes']) or 'none seen'}",
        f"- busiest other processes after: {', '.join(machine['after']['busiest_other_processes']) or 'none seen'}",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_m6rec.benchmarks.step_time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--report", required=True, help="folder for report.md and results.json")
    parser.add_argument("--plm", default="smollm2-135m", help="plm_name_or_path (default: M6Rec's default model)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="catalogue sizes")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--batch_size", "--batch-size", type=int, default=32, help="windows per batch")
    parser.add_argument(
        "--max_history", "--max-history", type=int, default=None, help="MAX_ITEM_LIST_LENGTH (default RecBole's)"
    )
    parser.add_argument("--negatives", type=int, default=256, help="softmax_negatives for sampled_softmax")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per setting")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32"],
        choices=PRECISIONS,
        help="float32, and bfloat16 = the step under torch.autocast as RecBole's enable_amp runs it",
    )
    args = parser.parse_args(argv)
    args.argv = argv
    for name in ("batch_size", "negatives", "warmup", "steps"):
        minimum = 0 if name == "warmup" else 1
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum} (got {getattr(args, name)})")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    argv_before, sys.argv = sys.argv, [sys.argv[0]]  # RecBole reads sys.argv; keep this script's flags out of it
    try:
        record = run(args)
    finally:
        sys.argv = argv_before
    folder = Path(args.report)
    atomic_write_text(folder / "results.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(folder / "report.md", report_markdown(record))
    return folder


if __name__ == "__main__":
    main()
