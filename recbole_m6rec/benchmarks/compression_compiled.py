"""How far compilation takes fp32 item encoding towards this CPU's matrix-multiply rate (part of
:mod:`recbole_m6rec.benchmarks.compression`).

Eager fp32 encoding runs its linear layers near the matmul rate, but the elementwise work between them (the MLP's
activation and product, norms, residuals, attention's core on short texts) runs as separate memory-bound kernels.
``torch.compile`` fuses them. This phase compiles the lower layers M6Rec encodes items with, checks that the compiled
states match eager ones, and alternates full eager and compiled passes over every item text, so their ratio is
measured close in time. Compilation is timed too: it is paid once per process, against an encoding that M6Rec caches
after its first run.
"""

from __future__ import annotations

import statistics
import time

import torch

from recbole_m6rec.benchmarks.compression_speed import batch_inputs, segment_encoder, useful_flops
from recbole_m6rec.lm.batch_encoding import length_sorted_batches

__all__ = ["compiled_encoding"]


def compiled_encoding(plm: str, settings: dict, texts: list[str], rounds: int) -> dict:
    """Eager and ``torch.compile``-d fp32 lower layers (with pooling, as M6Rec encodes items) over every text:
    one compiling pass (timed as such), then ``rounds`` full passes of each, alternated."""
    encoder = segment_encoder(plm, settings, None)
    encoder.stack.eval()
    tokens = encoder.tokenize(texts)
    inputs = batch_inputs(tokens, length_sorted_batches(tokens, encoder.batch_size))
    eager = encoder.forward_tokens
    # one graph for every batch shape: texts are padded to each batch's longest, so lengths vary
    compiled = torch.compile(encoder.forward_tokens, dynamic=True)
    with torch.no_grad():
        started = time.perf_counter()
        for ids, mask in inputs:
            compiled(ids, mask)
        compile_s = time.perf_counter() - started
        reference, _ = eager(*inputs[0])
        states, _ = compiled(*inputs[0])
        relative_diff = float((states - reference).abs().max() / reference.abs().max())
        times = {"eager": [], "compiled": []}
        for _ in range(rounds):
            for name, fn in (("eager", eager), ("compiled", compiled)):
                started = time.perf_counter()
                for ids, mask in inputs:
                    fn(ids, mask)
                times[name].append(time.perf_counter() - started)
    flops = useful_flops(encoder, tokens)
    ratios = [e / c for e, c in zip(times["eager"], times["compiled"])]
    items = len(texts) - 1  # row 0 is the padding text
    return {
        "items": items,
        "batches": len(inputs),
        "compile_and_first_pass_s": round(compile_s, 1),
        "seconds_eager": [round(t, 2) for t in times["eager"]],
        "seconds_compiled": [round(t, 2) for t in times["compiled"]],
        "compiled_speedup_median": round(statistics.median(ratios), 3),
        "eager_useful_gflops": round(flops / statistics.median(times["eager"]) / 1e9, 1),
        "compiled_useful_gflops": round(flops / statistics.median(times["compiled"]) / 1e9, 1),
        "compiled_items_per_s": round(items / statistics.median(times["compiled"]), 1),
        "max_state_diff_over_max_state": relative_diff,
    }
