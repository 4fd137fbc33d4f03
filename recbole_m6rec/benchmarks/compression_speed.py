"""The speed half of the compression benchmark (:mod:`recbole_m6rec.benchmarks.compression`): this CPU's
matrix-multiply rates on the encoder's shapes, item-encoding throughput with its time split, a paired fp32 / int8
encoding check, and M6RecCTR's scoring latency per 1,000 candidates."""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch
from torch import nn

from recbole_m6rec.benchmarks.compression_accuracy import plugin_config
from recbole_m6rec.benchmarks.machine import machine_load
from recbole_m6rec.lm.batch_encoding import length_sorted_batches

__all__ = [
    "matmul_rates",
    "segment_encoder",
    "encode_items",
    "batch_inputs",
    "useful_flops",
    "paired_encoding",
    "activation_ranges",
    "state_separation",
    "scoring_latency",
]


def _gflops(flops: float, seconds: float) -> float:
    """GFLOP/s to 3 significant digits (tiny test models run at well under 1)."""
    return float(f"{flops / max(seconds, 1e-12) / 1e9:.3g}")


def _median_seconds(fn, repeats: int, min_seconds: float = 0.2) -> float:
    """Median over ``repeats`` timings of ``fn``, each averaged over enough calls to last ``min_seconds``."""
    fn()  # warm-up (allocations, packing)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        fn()
        calls += 1
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - started) / calls)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------------ matmul
def matmul_rates(rows: int, shapes: list[tuple[int, int]], repeats: int) -> dict:
    """GFLOP/s of ``[rows K] x [K N]`` for each ``(K, N)``: fp32, torch's dynamic int8 linear, ``torch._int_mm``;
    and over all the shapes together (total FLOPs / total time: the layer's mix)."""
    torch.manual_seed(0)
    per_shape, totals = [], {"fp32": [0.0, 0.0], "int8_linear": [0.0, 0.0], "int_mm": [0.0, 0.0]}
    has_int_mm = hasattr(torch, "_int_mm")
    for k, n in shapes:
        flops = 2 * rows * k * n
        x, w = torch.randn(rows, k), torch.randn(k, n)
        linear = nn.Sequential(nn.Linear(k, n, bias=False)).requires_grad_(False)
        _quantize_linear(linear)
        row = {"K": k, "N": n, "rows": rows}
        with torch.no_grad():
            timings = {
                "fp32": _median_seconds(partial(torch.matmul, x, w), repeats),
                "int8_linear": _median_seconds(partial(linear, x), repeats),
            }
            if has_int_mm:
                a = torch.randint(-128, 127, (rows, k), dtype=torch.int8)
                b = torch.randint(-128, 127, (k, n), dtype=torch.int8)
                try:
                    timings["int_mm"] = _median_seconds(partial(torch._int_mm, a, b), repeats)
                except RuntimeError as error:  # not every build has a CPU kernel for every shape
                    row["int_mm_error"] = str(error).splitlines()[0]
        for name, seconds in timings.items():
            row[f"{name}_gflops"] = _gflops(flops, seconds)
            totals[name][0] += flops
            totals[name][1] += seconds
        per_shape.append(row)
    mix = {name: _gflops(f, s) for name, (f, s) in totals.items() if s > 0}
    return {"shapes": per_shape, "layer_mix_gflops": mix, "has_int_mm": has_int_mm}


def _quantize_linear(sequential: nn.Sequential) -> None:
    """Module 0 of ``sequential`` -> torch's dynamic int8 linear, as ``quantize: int8`` makes it."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    from recbole_m6rec.lm.quantize import Int8Linear

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(sequential, {"0"}, dtype=torch.qint8, mapping={nn.Linear: Int8Linear}, inplace=True)


# ------------------------------------------------------------------------------------------------ item encoding
class _Timers:
    """Inclusive wall time of each layer's attention block, MLP block and linear layers, by forward hooks."""

    def __init__(self, layers: list[nn.Module]):
        self.seconds = {"attention": 0.0, "attention_linear": 0.0, "mlp": 0.0, "mlp_linear": 0.0}
        self._handles, self._open = [], {}
        for layer in layers:
            for child_name, child in layer.named_children():
                block = "attention" if child_name in ATTENTION_BLOCKS else "mlp" if child_name in MLP_BLOCKS else None
                if block is None:  # norms: counted in the rest
                    continue
                self._watch(child, block)
                for name, module in child.named_modules():
                    if _is_linear(module) and "adapter" not in name.split("."):
                        self._watch(module, f"{block}_linear")

    def _watch(self, module: nn.Module, key: str) -> None:
        def before(mod, args):
            self._open[id(mod)] = time.perf_counter()

        def after(mod, args, out):
            self.seconds[key] += time.perf_counter() - self._open.pop(id(mod))

        self._handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


ATTENTION_BLOCKS = ("self_attn", "attention")  # Llama's, BERT's (not Llama's post_attention_layernorm: a norm)
MLP_BLOCKS = ("mlp", "intermediate", "output")  # Llama's MLP; BERT's two FFN halves


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Int8Linear"


def _layer_flops_per_token(stack, n_layers: int) -> int:
    """2 FLOPs per weight of every linear layer of the first ``n_layers`` layers (adapters have none there)."""
    total = 0
    for layer in stack.layers[:n_layers]:
        for module in layer.modules():
            if _is_linear(module):
                total += 2 * module.in_features * module.out_features
    return total


def _attention_flops(encoder, lengths: list[int]) -> int:
    """Attention's two products (scores, weighted sum), 2 x 2 L^2 d per text of length L and layer."""
    return 4 * encoder.stack.hidden_size * encoder.item_layers * sum(length**2 for length in lengths)


def useful_flops(encoder, tokens) -> int:
    """The FLOPs of encoding ``tokens`` through ``encoder``'s item layers, counting real tokens only."""
    lengths = [int(length) for length in tokens.lengths]
    return _layer_flops_per_token(encoder.stack, encoder.item_layers) * sum(lengths) + _attention_flops(
        encoder, lengths
    )


def batch_inputs(tokens, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each batch's token ids and attention mask, cut to its longest text (as M6Rec's encoding pads them)."""
    inputs = []
    for rows in batches:
        length = int(tokens.lengths[rows].max())
        inputs.append((tokens.input_ids[rows, :length], tokens.attention_mask[rows, :length]))
    return inputs


def segment_encoder(
    plm: str, settings: dict, cache_dir: str | None, item_layers: int | None = None, quantize: str = "none"
):
    """A segment encoder as M6Rec builds it from ``settings`` (its config's encoder keys)."""
    from recbole_m6rec.lm import SegmentEncoder

    return SegmentEncoder.load(
        plm,
        upper_layers=settings["late_interaction_layers"],
        segment_tokens=settings["segment_tokens"],
        max_tokens=settings["text_max_tokens"],
        cache_dir=cache_dir,
        batch_size=settings["encode_batch_size"],
        item_layers=item_layers,
        quantize=quantize,
    )


def encode_items(
    plm: str, settings: dict, texts: list[str], item_layers: int | None, quantize: str, cache_dir: str
) -> dict:
    """Encode every text through a fresh encoder of this setting (a cache miss: ``cache_dir`` is this run's), timed,
    with the time split of :class:`_Timers` and the token and FLOP counts. The states stay in ``cache_dir`` for the
    models built later in the run."""
    encoder = segment_encoder(plm, settings, cache_dir, item_layers, quantize)
    tokens = encoder.tokenize(texts)
    batches = length_sorted_batches(tokens, encoder.batch_size)
    k = encoder.item_layers
    valid = int(tokens.lengths.sum())
    padded = sum(len(rows) * int(tokens.lengths[rows].max()) for rows in batches)
    # the explicit mask makes torch compute every slot of the padded batch
    attention_executed = _attention_flops(encoder, [int(tokens.lengths[rows].max()) for rows in batches for _ in rows])
    per_token = _layer_flops_per_token(encoder.stack, k)
    timers = _Timers(list(encoder.stack.layers[:k]))
    machine = machine_load()
    started = time.perf_counter()
    try:
        encoder.encode(texts, "items")
    finally:
        seconds = time.perf_counter() - started
        timers.close()
    if encoder.cache_misses != 1:
        raise RuntimeError(f"item encoding came from a cache ({cache_dir}); timing needs a fresh computation")
    split = timers.seconds
    useful = useful_flops(encoder, tokens)
    return {
        "quantize": quantize,
        "item_layers": k,
        "lower_layers": encoder.n_lower_layers,
        "items": len(texts) - 1,  # row 0 is the padding text
        "seconds": round(seconds, 2),
        "items_per_s": round((len(texts) - 1) / seconds, 1),
        "valid_tokens": valid,
        "padded_tokens": padded,
        "padding_share": round(1 - valid / padded, 3),
        "linear_flops_per_token": per_token,
        "useful_gflops": _gflops(useful, seconds),
        "executed_gflops": _gflops(per_token * padded + attention_executed, seconds),
        "linear_gflops": _gflops(per_token * padded, split["attention_linear"] + split["mlp_linear"]),
        "split_s": {
            "attention_linear": round(split["attention_linear"], 2),
            "attention_core": round(split["attention"] - split["attention_linear"], 2),
            "mlp_linear": round(split["mlp_linear"], 2),
            "mlp_activation": round(split["mlp"] - split["mlp_linear"], 2),
            "rest": round(seconds - split["attention"] - split["mlp"], 2),
        },
        "machine": machine,
    }


def paired_encoding(plm: str, settings: dict, texts: list[str], n_batches: int, rounds: int) -> dict:
    """fp32 and int8 lower layers alternated on the same ``n_batches`` batches (spread over the length order),
    ``rounds`` times each: seconds per round and the median ratio."""
    encoders = {quantize: segment_encoder(plm, settings, None, quantize=quantize) for quantize in ("none", "int8")}
    tokens = encoders["none"].tokenize(texts)
    batches = length_sorted_batches(tokens, encoders["none"].batch_size)
    chosen = [batches[i * len(batches) // n_batches] for i in range(n_batches)]
    inputs = batch_inputs(tokens, chosen)
    times = {"none": [], "int8": []}
    with torch.no_grad():
        for encoder in encoders.values():
            encoder.stack.eval()
            encoder.forward_tokens(*inputs[-1])  # warm-up
        for _ in range(rounds):
            for quantize, encoder in encoders.items():
                started = time.perf_counter()
                for ids, mask in inputs:
                    encoder.forward_tokens(ids, mask)
                times[quantize].append(time.perf_counter() - started)
    ratios = [f / q for f, q in zip(times["none"], times["int8"])]  # from unrounded times: a tiny model's round
    times = {quantize: [round(t, 3) for t in rounds] for quantize, rounds in times.items()}  # can round to 0
    return {
        "batches": n_batches,
        "rows": sum(len(rows) for rows in chosen),
        "seconds_fp32": times["none"],
        "seconds_int8": times["int8"],
        "int8_speedup_median": round(statistics.median(ratios), 2),
    }


def activation_ranges(plm: str, settings: dict, texts: list[str], n_texts: int = 64) -> dict:
    """What int8 has to represent: for each kind of linear layer of the lower layers (``q_proj``, ``down_proj``,
    ...), the largest and the median magnitude of its input over ``n_texts`` item texts (one padded batch).

    Dynamic quantisation gives a whole input tensor one scale, so an input whose largest value is r times its median
    rounds its typical values to steps of about r/127 of their size (8-bit, 7 for activations on x86): past r ~ 127
    the typical value is below one step."""
    encoder = segment_encoder(plm, settings, None)
    tokens = encoder.tokenize(texts[1 : n_texts + 1])
    length = int(tokens.lengths.max())
    ids, mask = tokens.input_ids[:, :length], tokens.attention_mask[:, :length]
    seen: dict[str, list[torch.Tensor]] = {}

    def record(kind: str, module: nn.Module, args: tuple) -> None:
        real = args[0][mask.bool()] if args[0].shape[:2] == mask.shape else args[0]  # real tokens only
        seen.setdefault(kind, []).append(real.detach().abs().flatten())

    handles = []
    for index in range(encoder.item_layers):
        for name, module in encoder.stack.layers[index].named_modules():
            if _is_linear(module) and "adapter" not in name.split("."):
                handles.append(module.register_forward_pre_hook(partial(record, name.split(".")[-1])))
    try:
        with torch.no_grad():
            encoder.stack.eval()
            encoder.forward_tokens(ids, mask)
    finally:
        for handle in handles:
            handle.remove()
    kinds = {}
    for kind, values in seen.items():
        largest = max(float(v.max()) for v in values)
        median = float(torch.cat(values).median())
        kinds[kind] = {
            "max_abs": round(largest, 3),
            "median_abs": round(median, 4),
            "max_over_median": round(largest / max(median, 1e-12), 1),
        }
    return {"texts": len(tokens), "tokens": int(mask.sum()), "kinds": kinds}


def state_separation(plm: str, settings: dict, texts: list[str], n_texts: int = 256) -> dict:
    """Whether int8 item states still tell items apart: for ``n_texts`` item texts, the mean cosine between two
    different items' fp32 states (how close items already are), the mean cosine between an item's int8 and fp32
    states (how far int8 moves it), and the share of items whose int8 state is nearest (cosine) to their own fp32
    state among all ``n_texts``. States are the pooled segment states M6Rec caches, flattened per item."""
    states = {}
    for quantize in ("none", "int8"):
        encoder = segment_encoder(plm, settings, None, quantize=quantize)
        tokens = encoder.tokenize(texts[1 : n_texts + 1])
        rows = []
        with torch.no_grad():
            encoder.stack.eval()
            for batch in length_sorted_batches(tokens, encoder.batch_size):
                length = int(tokens.lengths[batch].max())
                pooled, _ = encoder.forward_tokens(
                    tokens.input_ids[batch, :length], tokens.attention_mask[batch, :length]
                )
                rows.append((batch, pooled.flatten(1)))
        flat = torch.empty(len(tokens), rows[0][1].shape[1])
        for batch, pooled in rows:
            flat[batch] = pooled
        states[quantize] = torch.nn.functional.normalize(flat, dim=1)
    fp32, int8 = states["none"], states["int8"]
    n = len(fp32)
    between = (fp32 @ fp32.T).masked_select(~torch.eye(n, dtype=torch.bool))
    own = (fp32 * int8).sum(1)
    nearest = (int8 @ fp32.T).argmax(1)
    return {
        "items": n,
        "fp32_between_items_cosine": round(float(between.mean()), 4),
        "int8_to_fp32_same_item_cosine": round(float(own.mean()), 4),
        "int8_nearest_is_own_share": round(float((nearest == torch.arange(n)).float().mean()), 3),
    }


# ------------------------------------------------------------------------------------------------ scoring latency
def scoring_latency(plm: str, n_candidates: int, rounds: int, cache_dir: str) -> dict:
    """M6RecCTR ``predict`` on RecBole's labelled test samples, fp32 and int8 models alternated ``rounds`` times;
    median milliseconds per 1,000 candidates each."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.model.m6rec_ctr import M6RecCTR

    configs = {q: plugin_config("M6RecCTR", plm, cache_dir, quantize=q, eval_batch_size=64) for q in ("none", "int8")}
    init_seed(2020, True)
    _, _, test = data_preparation(configs["none"], create_dataset(configs["none"]))
    models = {}
    for quantize, config in configs.items():
        init_seed(2020, True)
        models[quantize] = M6RecCTR(config, test._dataset).eval()
    batches, total = [], 0
    for batch in test:
        batches.append(batch[0])
        total += len(batch[0])
        if total >= n_candidates:
            break
    times = {q: [] for q in models}
    with torch.no_grad():
        for model in models.values():
            model.predict(batches[0][:2])  # warm-up
        for _ in range(rounds):
            for quantize, model in models.items():
                started, scored = time.perf_counter(), 0
                for batch in batches:
                    take = min(len(batch), n_candidates - scored)
                    model.predict(batch[:take])
                    scored += take
                times[quantize].append(1e6 * (time.perf_counter() - started) / scored)
    return {
        "candidates_timed": scored,
        "ms_per_1000_fp32": [round(t, 1) for t in times["none"]],
        "ms_per_1000_int8": [round(t, 1) for t in times["int8"]],
        "median_fp32": round(statistics.median(times["none"]), 1),
        "median_int8": round(statistics.median(times["int8"]), 1),
        "int8_speedup_median": round(statistics.median([f / q for f, q in zip(times["none"], times["int8"])]), 2),
    }
