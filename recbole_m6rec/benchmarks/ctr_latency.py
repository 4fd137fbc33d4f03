"""Scoring latency of M6RecCTR's late interaction: online upper layers 1, 2, 3 vs every layer online on the joined text.

    python -m recbole_m6rec.benchmarks.ctr_latency --report=reports/ctr_ml-100k

Scores RecBole's labelled test samples of ml-100k (history + candidate) with ``predict`` in eval mode, one job at a
time, and prints milliseconds per 1,000 candidates. Latency does not depend on the weights, so the models are
untrained. With late interaction the lower layers ran once per item text beforehand (cached; reported as the one-time
encoding); "every layer online" runs all layers over every token of the joined history + candidate text for each
candidate, so it is timed on fewer candidates (``--joined_candidates``) and scaled to 1,000.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_m6rec.benchmarks import publish
from recbole_m6rec.config import PluginConfig
from recbole_m6rec.data import create_dataset
from recbole_m6rec.lm import load_plm
from recbole_m6rec.model.m6rec_ctr import M6RecCTR

__all__ = ["measure", "main"]


def _settings(online_layers: int | None, plm: str) -> dict:
    """``online_layers`` None = every layer online, every token kept (the joined text)."""
    if online_layers is None:
        n_layers = load_plm(plm)[1].config.num_hidden_layers
        return {"late_interaction_layers": n_layers, "segment_tokens": "all"}
    return {"late_interaction_layers": online_layers, "segment_tokens": 1}


def measure(
    online_layers: int | None, n_candidates: int, plm: str, dataset: str = "ml-100k", batch_size: int = 64
) -> dict:
    config = PluginConfig(
        model="M6RecCTR",
        dataset=dataset,
        config_dict={
            "plm_name_or_path": plm,
            "eval_batch_size": batch_size,
            "show_progress": False,
            "state": "WARNING",
            **_settings(online_layers, plm),
        },
    )
    init_seed(2020, True)
    data = create_dataset(config)
    _, _, test = data_preparation(config, data)
    started = time.perf_counter()
    model = M6RecCTR(config, test._dataset).eval()
    setup_seconds = time.perf_counter() - started
    batches, total = [], 0
    for batch in test:  # the labelled test samples, as RecBole's evaluation hands them to predict
        batches.append(batch[0])
        total += len(batch[0])
        if total >= n_candidates:
            break
    with torch.no_grad():
        model.predict(batches[0][:2])  # warm-up
        started = time.perf_counter()
        scored = 0
        for batch in batches:
            take = min(len(batch), n_candidates - scored)
            model.predict(batch[:take])
            scored += take
        seconds = time.perf_counter() - started
    return {
        "online_layers": model.settings.late_interaction_layers,
        "segment_tokens": str(model.settings.segment_tokens),
        "joined_text": online_layers is None,
        "candidates_timed": scored,
        "ms_per_1000_candidates": round(1000 * seconds / scored * 1000, 1),
        "model_setup_seconds": round(setup_seconds, 1),
        "item_encoding_seconds": round(model.encoding_seconds, 1),
        "encoding_from_cache": model.encoding_from_cache,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plm_name_or_path", default="smollm2-135m")
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--joined_candidates", type=int, default=50)
    parser.add_argument("--layers", default="1,2,3", help="online upper layers to time besides the joined text")
    parser.add_argument("--report", default=None, help="folder to write latency.json and latency.md into")
    args = parser.parse_args(argv)
    rows = []
    for layers in [int(x) for x in args.layers.split(",") if x] + [None]:
        n = args.joined_candidates if layers is None else args.candidates
        print(
            f"timing {'every layer on the joined text' if layers is None else f'{layers} online layer(s)'} "
            f"on {n} candidates ...",
            flush=True,
        )
        rows.append(measure(layers, n, args.plm_name_or_path))
    joined = rows[-1]["ms_per_1000_candidates"]
    lines = [
        "| online layers | tokens per segment | ms per 1,000 candidates | share of the joined model | "
        "candidates timed | one-time item encoding (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = f"all {row['online_layers']} (joined text)" if row["joined_text"] else str(row["online_layers"])
        lines.append(
            f"| {name} | {row['segment_tokens']} | {row['ms_per_1000_candidates']:,.0f} | "
            f"{row['ms_per_1000_candidates'] / joined:.3f} | {row['candidates_timed']} | "
            f"{row['item_encoding_seconds']}{' (cache)' if row['encoding_from_cache'] else ''} |"
        )
    body = "\n".join(
        [
            f"Model: {args.plm_name_or_path}; machine: {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}",
            "",
            *lines,
        ]
    )
    publish("recbole_m6rec.benchmarks.ctr_latency", argv, body, rows, args.report, "latency")


if __name__ == "__main__":
    main()
