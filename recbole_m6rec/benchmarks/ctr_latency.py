"""Scoring latency of M6RecCTR's late interaction: online upper layers 1, 2, 3 vs every layer online on the joined text;
with ``--serving``, also many candidates for one user with the history's keys and values cached.

    python -m recbole_m6rec.benchmarks.ctr_latency --report=reports/ctr_ml-100k
    python -m recbole_m6rec.benchmarks.ctr_latency --serving --report=reports/ctr_serving_ml-100k

Scores RecBole's labelled test samples of ml-100k (history + candidate) with ``predict`` in eval mode, one job at a
time, and prints milliseconds per 1,000 candidates. Latency does not depend on the weights, so the models are
untrained. With late interaction the lower layers ran once per item text beforehand (cached; reported as the one-time
encoding); "every layer online" runs all layers over every token of the joined history + candidate text for each
candidate, so it is timed on fewer candidates (``--joined_candidates``) and scaled to 1,000.

``--serving`` times, on the same model as each per-candidate row, ``M6RecCTR.score_candidates`` for test users with
the longest histories: the history through the online layers once, then ``--candidates`` items (drawn from the
catalogue) attending to its cached keys and values, ``--serving_batch`` at a time; the time per 1,000 candidates
includes the history's pass. Before timing, it checks that the cached scores equal ``predict`` on each (history,
candidate) pair for ``--check_candidates`` candidates, and reports the largest difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
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


def _build(online_layers: int | None, plm: str, dataset: str, batch_size: int):
    """An untrained M6RecCTR in eval mode, the seconds it took to build, and the labelled test data."""
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
    return model, time.perf_counter() - started, test


def measure(
    online_layers: int | None,
    n_candidates: int,
    plm: str,
    dataset: str = "ml-100k",
    batch_size: int = 64,
    serving: dict | None = None,
) -> dict:
    """``predict`` on ``n_candidates`` labelled test samples, one candidate per (user, history) row; with ``serving``
    (the keyword arguments of :func:`measure_serving`), also the cached-history path on the same model."""
    model, setup_seconds, test = _build(online_layers, plm, dataset, batch_size)
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
    row = {
        "online_layers": model.settings.late_interaction_layers,
        "segment_tokens": str(model.settings.segment_tokens),
        "joined_text": online_layers is None,
        "candidates_timed": scored,
        "ms_per_1000_candidates": round(1000 * seconds / scored * 1000, 1),
        "model_setup_seconds": round(setup_seconds, 1),
        "item_encoding_seconds": round(model.encoding_seconds, 1),
        "encoding_from_cache": model.encoding_from_cache,
    }
    if serving is not None:
        row["serving"] = measure_serving(model, test, **serving)
    return row


def measure_serving(
    model: M6RecCTR,
    test,
    n_candidates: int = 1000,
    n_users: int = 5,
    batch_size: int = 256,
    check_candidates: int = 300,
    seed: int = 0,
    other_threads: tuple[int, ...] = (),
) -> dict:
    """``score_candidates`` for ``n_users`` test users with the longest histories, ``n_candidates`` catalogue items
    each (the history's pass included in the time), after checking ``check_candidates`` of the first user's scores
    against ``predict`` on each (history, candidate) pair; timed again with each of ``other_threads`` torch threads."""
    samples = next(iter(test))[0]  # the first batch of labelled test samples
    lengths = samples[model.ITEM_SEQ_LEN]
    users = torch.argsort(lengths, descending=True, stable=True)[:n_users].tolist()
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.randperm(model.n_items - 1, generator=generator)[:n_candidates] + 1  # never the padding item

    def score(row: int, items: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        sample = samples[row : row + 1]
        n = int(sample[model.ITEM_SEQ_LEN][0])
        labels = sample[model.LABEL_LIST][0, :n] if model.outcome_tokens is not None else None
        # the times: for recency phrases, and to hide the outcomes of the candidate's own second
        times = sample[model.HISTORY_TIMES][0, :n] if model.HISTORY_TIMES is not None else None
        shown = sample[model.TIME_FIELD][0] if model.HISTORY_TIMES is not None else None
        user = int(sample[model.USER_ID][0]) if model.USER_ID in sample else None
        started = time.perf_counter()
        cached = model.cache_history(
            sample[model.ITEM_SEQ][0, :n], user_id=user, history_labels=labels, history_times=times
        )
        history_seconds = time.perf_counter() - started
        scores = model.score_cached(cached, items, candidate_times=shown, batch_size=batch_size)
        return scores, history_seconds, time.perf_counter() - started

    with torch.no_grad():
        checked = candidates[:check_candidates]
        cached_scores = score(users[0], checked)[0]
        pairs = samples[users[0] : users[0] + 1].repeat(len(checked))  # the same history, one candidate per row
        pairs[model.ITEM_ID] = checked
        each = torch.cat([model.predict(pairs[i : i + 64]) for i in range(0, len(checked), 64)])
        max_difference = float((cached_scores - each).abs().max())

        def timed() -> tuple[list[float], list[float]]:
            score(users[0], candidates[:8])  # warm-up
            history_ms, total_ms = [], []
            for row in users:
                _, history_seconds, seconds = score(row, candidates)
                history_ms.append(1000 * history_seconds)
                total_ms.append(1000 * seconds)
            return history_ms, total_ms

        history_ms, total_ms = timed()
        threads = torch.get_num_threads()
        elsewhere = {}
        for n_threads in other_threads:
            torch.set_num_threads(n_threads)
            try:
                elsewhere[n_threads] = round(statistics.median(timed()[1]) * 1000 / len(candidates), 1)
            finally:
                torch.set_num_threads(threads)
    return {
        "users": len(users),
        "history_lengths": [int(lengths[row]) for row in users],
        "candidates_per_user": len(candidates),
        "batch_size": batch_size,
        "ms_per_1000_candidates": round(statistics.median(total_ms) * 1000 / len(candidates), 1),
        "ms_per_1000_candidates_each_user": [round(ms * 1000 / len(candidates), 1) for ms in total_ms],
        "history_pass_ms": round(statistics.median(history_ms), 1),
        "checked_candidates": len(checked),
        "max_abs_difference_to_predict": max_difference,
        "threads": threads,
        "ms_per_1000_candidates_other_threads": elsewhere,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plm_name_or_path", default="smollm2-135m")
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--joined_candidates", type=int, default=50, help="0 = no joined-text row")
    parser.add_argument("--layers", default="1,2,3", help="online upper layers to time besides the joined text")
    parser.add_argument("--serving", action="store_true", help="also time many candidates per user, history cached")
    parser.add_argument("--serving_users", type=int, default=5, help="test users timed with --serving")
    parser.add_argument("--serving_batch", type=int, default=256, help="candidates per chunk with --serving")
    parser.add_argument("--check_candidates", type=int, default=300, help="--serving: candidates checked vs predict")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the whole run (default: torch's)")
    parser.add_argument(
        "--serving_threads", default="", help="--serving: also time the cached path with these thread counts, e.g. 2"
    )
    parser.add_argument("--report", default=None, help="folder to write latency.json and latency.md into")
    args = parser.parse_args(argv)
    for name in ("candidates", "serving_users", "serving_batch", "check_candidates", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1 (got {getattr(args, name)})")
    other_threads = tuple(int(x) for x in args.serving_threads.split(",") if x)
    if any(n < 1 for n in other_threads):
        raise ValueError(f"--serving_threads must list positive thread counts (got {args.serving_threads!r})")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    serving = (
        {
            "n_candidates": args.candidates,
            "n_users": args.serving_users,
            "batch_size": args.serving_batch,
            "check_candidates": args.check_candidates,
            "other_threads": other_threads,
        }
        if args.serving
        else None
    )
    load_before = os.getloadavg()
    rows = []
    for layers in [int(x) for x in args.layers.split(",") if x] + ([None] if args.joined_candidates > 0 else []):
        n = args.joined_candidates if layers is None else args.candidates
        print(
            f"timing {'every layer on the joined text' if layers is None else f'{layers} online layer(s)'} "
            f"on {n} candidates{' and the cached history' if serving and layers else ''} ...",
            flush=True,
        )
        rows.append(measure(layers, n, args.plm_name_or_path, serving=serving if layers is not None else None))
    load_after = os.getloadavg()
    joined = rows[-1]["ms_per_1000_candidates"] if rows and rows[-1]["joined_text"] else None
    lines = [
        "| online layers | tokens per segment | ms per 1,000 candidates | share of the joined model | "
        "candidates timed | one-time item encoding (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = f"all {row['online_layers']} (joined text)" if row["joined_text"] else str(row["online_layers"])
        share = f"{row['ms_per_1000_candidates'] / joined:.3f}" if joined else "-"
        lines.append(
            f"| {name} | {row['segment_tokens']} | {row['ms_per_1000_candidates']:,.0f} | {share} | "
            f"{row['candidates_timed']} | "
            f"{row['item_encoding_seconds']}{' (cache)' if row['encoding_from_cache'] else ''} |"
        )
    if serving:
        lines = [
            *_serving_lines(rows),
            "",
            "Every candidate with its own history (the table above's rows):",
            "",
            *lines,
        ]
    body = "\n".join(
        [
            f"Model: {args.plm_name_or_path}; machine: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}; "
            f"load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end",
            "",
            *lines,
        ]
    )
    publish("recbole_m6rec.benchmarks.ctr_latency", argv, body, rows, args.report, "latency")


def _serving_lines(rows: list[dict]) -> list[str]:
    """The cached-history table: each online-layer setting next to one candidate per user, in the same run."""
    first = next(row["serving"] for row in rows if "serving" in row)
    others = list(first["ms_per_1000_candidates_other_threads"])
    lines = [
        "| online layers | one candidate per user (`predict`), ms per 1,000 | one user, history cached, ms per 1,000 "
        "| speed-up | history pass, ms (once per user) | max abs difference to `predict` (candidates checked) |"
        + "".join(f" history cached, {n} thread(s), ms per 1,000 |" for n in others),
        "|---|---|---|---|---|---|" + "---|" * len(others),
    ]
    for row in rows:
        cached = row.get("serving")
        if cached is None:
            continue
        lines.append(
            f"| {row['online_layers']} | {row['ms_per_1000_candidates']:,.0f} | {cached['ms_per_1000_candidates']:,.0f} "
            f"| {row['ms_per_1000_candidates'] / cached['ms_per_1000_candidates']:.1f}x | "
            f"{cached['history_pass_ms']:,.1f} | {cached['max_abs_difference_to_predict']:.1e} "
            f"({cached['checked_candidates']}) |"
            + "".join(f" {cached['ms_per_1000_candidates_other_threads'][n]:,.0f} |" for n in others)
        )
    lines += [
        "",
        f"Cached: median over {first['users']} test users (history lengths {first['history_lengths']}), "
        f"{first['candidates_per_user']} catalogue items each, {first['batch_size']} per chunk, {first['threads']} "
        "torch thread(s) unless a column says otherwise; the time includes the history's pass. One candidate per user: "
        "RecBole's labelled test samples, each with its own history, same threads.",
    ]
    return lines


if __name__ == "__main__":
    main()
