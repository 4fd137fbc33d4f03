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
   (``--paired_rounds``), so their ratio is measured close in time.
3. **Scoring latency** of M6RecCTR's ``predict`` per 1,000 labelled test candidates (as ``ctr_latency``), fp32 and
   int8 models alternated (``--latency_rounds``), untrained: latency does not depend on the weights.
4. **Accuracy**: M6Rec (NDCG@10, valid and test) and M6RecCTR (AUC) are each trained once in fp32 with the default
   settings for ``--epochs`` epochs (best epoch by validation); the *same trained parameters* are then evaluated with
   int8 (items re-encoded by the int8 layers, online layers int8 too) and with early-exit item states, nothing
   retrained. Early exit changes what the online layers read, so each early-exit setting is also trained afresh for
   ``--retrain_epochs`` epochs and compared with the fp32 model after as many epochs (same seed, same batches).
   ``--accuracy_plm auto`` times two training steps of M6Rec on ``--plm`` and uses ``minilm-l6`` instead when an
   epoch would take over ``--max_epoch_minutes`` on this machine now; the report says which it used.

The machine is shared: the report records the load average and the busiest other processes before and after every
phase; compare the ratios within this run. ``report.md`` and ``report.json`` go into ``--report``; the measurements
are also saved after every phase to ``<work_dir>/record.json``, from which ``--from_record`` rewrites the report.
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
from functools import partial
from pathlib import Path

import torch
from torch import nn

from recbole_m6rec.atomic import atomic_write_text
from recbole_m6rec.benchmarks import publish
from recbole_m6rec.benchmarks.step_time import _machine

__all__ = ["main", "early_exit_layers", "matmul_rates", "encode_items", "scoring_latency", "accuracy"]

FRACTIONS = (1.0, 0.75, 0.5, 0.25)  # early exit: shares of the lower layers that encode items
FALLBACK_PLM = "minilm-l6"


def early_exit_layers(n_lower: int) -> list[int]:
    """``[n_lower, 3/4, 1/2, 1/4 of it]`` (rounded, at least 1, no repeats), largest first."""
    return sorted({max(1, round(n_lower * f)) for f in FRACTIONS}, reverse=True)


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
                block = "attention" if "att" in child_name else "mlp" if child_name in MLP_BLOCKS else None
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


def _batches(tokens, batch_size: int) -> list[torch.Tensor]:
    """The rows of each encoding batch, as ``SegmentEncoder._compute`` forms them (length-sorted)."""
    order = torch.argsort(tokens.lengths, descending=True, stable=True)
    return list(order.split(batch_size))


def _encoder(plm: str, settings: dict, cache_dir: str | None, item_layers: int | None = None, quantize: str = "none"):
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
    encoder = _encoder(plm, settings, cache_dir, item_layers, quantize)
    tokens = encoder.tokenize(texts)
    batches = _batches(tokens, encoder.batch_size)
    k = encoder.item_layers
    d = encoder.stack.hidden_size
    valid = int(tokens.lengths.sum())
    padded = sum(len(rows) * int(tokens.lengths[rows].max()) for rows in batches)
    # attention's two products (scores, weighted sum): 2 x 2 L^2 d per text and layer; the explicit mask makes torch
    # compute every slot of the padded batch
    attention_useful = 4 * d * k * int((tokens.lengths.long() ** 2).sum())
    attention_executed = 4 * d * k * sum(len(rows) * int(tokens.lengths[rows].max()) ** 2 for rows in batches)
    per_token = _layer_flops_per_token(encoder.stack, k)
    timers = _Timers(list(encoder.stack.layers[:k]))
    machine = _machine()
    started = time.perf_counter()
    try:
        encoder.encode(texts, "items")
    finally:
        seconds = time.perf_counter() - started
        timers.close()
    if encoder.cache_misses != 1:
        raise RuntimeError(f"item encoding came from a cache ({cache_dir}); timing needs a fresh computation")
    split = timers.seconds
    useful = per_token * valid + attention_useful
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
    encoders = {quantize: _encoder(plm, settings, None, quantize=quantize) for quantize in ("none", "int8")}
    tokens = encoders["none"].tokenize(texts)
    batches = _batches(tokens, encoders["none"].batch_size)
    chosen = [batches[i * len(batches) // n_batches] for i in range(n_batches)]
    inputs = []
    for rows in chosen:
        length = int(tokens.lengths[rows].max())
        inputs.append((tokens.input_ids[rows, :length], tokens.attention_mask[rows, :length]))
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
                times[quantize].append(round(time.perf_counter() - started, 3))
    ratios = [f / q for f, q in zip(times["none"], times["int8"])]
    return {
        "batches": n_batches,
        "rows": sum(len(rows) for rows in chosen),
        "seconds_fp32": times["none"],
        "seconds_int8": times["int8"],
        "int8_speedup_median": round(statistics.median(ratios), 2),
    }


# ------------------------------------------------------------------------------------------------ scoring latency
def scoring_latency(plm: str, n_candidates: int, rounds: int, cache_dir: str) -> dict:
    """M6RecCTR ``predict`` on RecBole's labelled test samples, fp32 and int8 models alternated ``rounds`` times;
    median milliseconds per 1,000 candidates each."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.model.m6rec_ctr import M6RecCTR

    configs = {q: _config("M6RecCTR", plm, cache_dir, quantize=q, eval_batch_size=64) for q in ("none", "int8")}
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


# ------------------------------------------------------------------------------------------------------ accuracy
def _config(model: str, plm: str, cache_dir: str, **overrides):
    from recbole_m6rec.config import PluginConfig

    settings = {
        "plm_name_or_path": plm,
        "text_cache_dir": cache_dir,
        "checkpoint_dir": str(Path(cache_dir).parent / "saved"),
        "show_progress": False,
        "state": "WARNING",
        **overrides,
    }
    if model == "M6Rec":  # full ranking with every model's history masking rule, as the leaderboard ranks
        settings = {"metrics": ["NDCG", "Recall"], "topk": [10], "valid_metric": "NDCG@10", **settings}
        settings.setdefault("eval_history_mask", "all")
    return PluginConfig(model=model, dataset="ml-100k", config_dict=settings)


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _metric(model: str) -> str:
    return "ndcg@10" if model == "M6Rec" else "auc"


def epoch_estimate(plm: str, cache_dir: str, steps: int = 2) -> dict:
    """Seconds per training epoch of M6Rec on ``plm`` with default settings, from ``steps`` timed steps (after one
    untimed) times the batches of an epoch."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec.compat import anomaly_detection_off
    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.m6rec_trainer import whole_sequence_loader
    from recbole_m6rec.model.m6rec import M6Rec

    config = _config("M6Rec", plm, cache_dir)
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    model = M6Rec(config, train._dataset).train()
    loader = whole_sequence_loader(config, train)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config["learning_rate"])
    times = []
    with anomaly_detection_off():  # as in a run: RecBole's imports may have switched it on
        for index, batch in enumerate(loader):
            started = time.perf_counter()
            optimizer.zero_grad()
            model.calculate_loss(batch).backward()
            optimizer.step()
            if index > 0:
                times.append(time.perf_counter() - started)
            if len(times) == steps:
                break
    per_step = statistics.median(times)
    return {
        "plm": plm,
        "step_s": [round(t, 2) for t in times],
        "batches": len(loader),
        "epoch_s": per_step * len(loader),
    }


def accuracy(model_name: str, plm: str, epochs: int, retrain_epochs: int, cache_dir: str, n_lower: int) -> dict:
    """Train ``model_name`` once in fp32; evaluate the same parameters with int8 and early-exit item states; train
    each early exit afresh for ``retrain_epochs`` epochs next to the fp32 model after as many epochs."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec.compat import anomaly_detection_off
    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.quick_start import load_best_checkpoint
    from recbole_m6rec.registry import get_model
    from recbole_m6rec.trainer import build_trainer

    metric = _metric(model_name)
    config = _config(model_name, plm, cache_dir, epochs=epochs)
    init_seed(config["seed"], config["reproducibility"])
    data = data_preparation(config, create_dataset(config))
    train, valid, test = data

    def build(overrides: dict, state: dict | None = None):
        variant = _config(model_name, plm, cache_dir, **overrides)
        init_seed(variant["seed"], variant["reproducibility"])
        model = get_model(model_name)(variant, train._dataset)
        if state is not None:
            model.load_state_dict(state)
        return model, build_trainer(variant, model, *data)

    def scores(trainer) -> dict:
        with anomaly_detection_off(), torch.no_grad():
            return {
                split: round(float(trainer.evaluate(loader, load_best_model=False, show_progress=False)[metric]), 4)
                for split, loader in (("valid", valid), ("test", test))
            }

    rows, epoch_states, epoch_seconds = [], {}, []
    model, trainer = build({"epochs": epochs})
    marks = [time.perf_counter()]

    def after_epoch(epoch_idx, valid_score):
        epoch_seconds.append(round(time.perf_counter() - marks[-1], 1))  # training and validation of the epoch
        marks.append(time.perf_counter())
        epoch_states[epoch_idx] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    with anomaly_detection_off():
        trainer.fit(train, valid, saved=True, show_progress=False, callback_fn=after_epoch)
    load_best_checkpoint(trainer, trainer.saved_model_file)
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # each row is compared with the fp32 row trained alike: "trained" (the full budget) or "short" (retrain_epochs)
    rows.append(
        {"setting": "fp32", "trained": f"{_epochs(epochs)} (best by valid)", "base": "trained", **scores(trainer)}
    )
    if retrain_epochs:
        model.load_state_dict(epoch_states[retrain_epochs - 1])
        rows.append({"setting": "fp32", "trained": _epochs(retrain_epochs), "base": "short", **scores(trainer)})
    del model, trainer
    for overrides, name in [({"quantize": "int8"}, "int8")] + [
        ({"item_encoder_layers": k}, f"early exit k={k}") for k in early_exit_layers(n_lower)[1:]
    ]:
        model, trainer = build(overrides, best)
        rows.append(
            {"setting": name, "trained": "fp32 parameters, not retrained", "base": "trained", **scores(trainer)}
        )
        del model, trainer
        if retrain_epochs and "item_encoder_layers" in overrides:
            model, trainer = build({**overrides, "epochs": retrain_epochs, "eval_step": retrain_epochs + 1})
            with anomaly_detection_off():
                trainer.fit(train, valid, saved=False, show_progress=False)
            trained = f"{_epochs(retrain_epochs)}, afresh"
            rows.append({"setting": name, "trained": trained, "base": "short", **scores(trainer)})
            del model, trainer
    fp32 = {row["base"]: row for row in rows if row["setting"] == "fp32"}
    for row in rows:
        base = fp32[row["base"]]
        for split in ("valid", "test"):
            row[f"{split}_change"] = round((row[split] - base[split]) / base[split], 4) if base[split] else None
    return {"model": model_name, "plm": plm, "metric": metric, "epoch_seconds": epoch_seconds, "rows": rows}


# ------------------------------------------------------------------------------------------------------- report
def run(args) -> dict:
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.text import build_item_texts

    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="compression-"))
    cache_dir = str(work / "text")  # this run's own cache: every encoding is computed, none read from disk
    settings_record = {k: v for k, v in vars(args).items() if k != "from_record"}
    record = {
        "settings": settings_record,
        "machine": {
            "start": _machine(),
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
        before, started = _machine(), time.perf_counter()
        result = fn(*fn_args)
        record["phases"][name] = {
            "seconds": round(time.perf_counter() - started, 1),
            "before": before,
            "after": _machine(),
        }
        record.setdefault("results", {})[name] = result
        atomic_write_text(work / "record.json", json.dumps(record, indent=2) + "\n")
        return result

    config = _config("M6Rec", args.plm, cache_dir)
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    texts = build_item_texts(train._dataset, config["item_text_fields"], config["item_text_template"])
    encoder_keys = ("late_interaction_layers", "segment_tokens", "text_max_tokens", "encode_batch_size")
    settings = {key: config[key] for key in encoder_keys}

    probe = _encoder(args.plm, settings, None)
    tokens = probe.tokenize(texts)
    batches = _batches(tokens, probe.batch_size)
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
    record["paired_encoding"] = phase(
        "paired fp32 / int8 encoding",
        paired_encoding,
        args.plm,
        settings,
        texts,
        args.paired_batches,
        args.paired_rounds,
    )
    record["latency"] = phase(
        "scoring latency", scoring_latency, args.plm, args.candidates, args.latency_rounds, cache_dir
    )
    # training and evaluation on --accuracy_threads: their numbers do not depend on it, their time under load does
    torch.set_num_threads(args.accuracy_threads)
    accuracy_plm = args.accuracy_plm
    if accuracy_plm == "auto":
        record["epoch_estimate"] = phase("epoch estimate", epoch_estimate, args.plm, cache_dir)
        too_slow = record["epoch_estimate"]["epoch_s"] > 60 * args.max_epoch_minutes
        accuracy_plm = FALLBACK_PLM if too_slow else args.plm
    record["accuracy_plm"] = accuracy_plm
    accuracy_lower = n_lower if accuracy_plm == args.plm else _lower_layers(accuracy_plm, config)
    record["accuracy"] = [
        phase(
            f"accuracy {name}",
            accuracy,
            name,
            accuracy_plm,
            args.epochs,
            args.retrain_epochs,
            cache_dir,
            accuracy_lower,
        )
        for name in ("M6Rec", "M6RecCTR")
    ]
    record.pop("results", None)  # every result has its own key now
    record["machine"]["end"] = _machine()
    atomic_write_text(work / "record.json", json.dumps(record, indent=2) + "\n")  # --from_record reads it back
    print(f"measurements saved to {work / 'record.json'}", flush=True)
    return record


def _lower_layers(plm: str, config) -> int:
    from recbole_m6rec.lm import load_plm

    return load_plm(plm)[1].config.num_hidden_layers - config["late_interaction_layers"]


def _goal(met: bool) -> str:
    return "**met**" if met else "**missed**"


def report_markdown(record: dict) -> str:
    enc = {(r["quantize"], r["item_layers"]): r for r in record["encoding"]}
    n_lower = record["encoding"][0]["lower_layers"]
    fp32, int8 = enc[("none", n_lower)], enc[("int8", n_lower)]
    mix = record["matmul"]["layer_mix_gflops"]
    latency, paired = record["latency"], record["paired_encoding"]
    m6rec = next(a for a in record["accuracy"] if a["model"] == "M6Rec")
    ctr = next(a for a in record["accuracy"] if a["model"] == "M6RecCTR")
    int8_row = next(r for r in m6rec["rows"] if r["setting"] == "int8")
    speedup = int8["items_per_s"] / fp32["items_per_s"]
    lines = [
        "# Compression on a 2-core CPU: int8 and early exit of the item encoding (ml-100k)",
        "",
        f"Language model for speed: `{record['settings']['plm']}` ({n_lower} lower layers encode items, "
        f"{record['settings']['threads']} torch threads). Accuracy: `{record['accuracy_plm']}`"
        + (
            ""
            if record["accuracy_plm"] == record["settings"]["plm"]
            else f" (an M6Rec epoch on `{record['settings']['plm']}` was estimated at "
            f"{record['epoch_estimate']['epoch_s'] / 60:.0f} min under this load, over the "
            f"{record['settings']['max_epoch_minutes']}-minute limit)"
        )
        + ".",
        "",
        "**Other jobs shared this CPU during the run** (a benchmark campaign on both cores; see Machine below). "
        "Absolute times are inflated by them and drift between phases; the ratios within one phase (the paired "
        "fp32 / int8 rounds, the alternated latency rounds) are the firmest numbers.",
        "",
        "## Ratios within this run",
        "",
        "| what | ratio |",
        "|---|---:|",
        f"| fp32 item encoding, useful GFLOP/s / fp32 matmul rate (layer mix) | "
        f"{fp32['useful_gflops'] / mix['fp32']:.2f} |",
        f"| fp32 item encoding, linear layers' own GFLOP/s / fp32 matmul rate | "
        f"{fp32['linear_gflops'] / mix['fp32']:.2f} |",
        f"| int8 / fp32 matmul rate (torch's dynamic int8 linear, layer mix) | {mix['int8_linear'] / mix['fp32']:.2f} |",
    ]
    if "int_mm" in mix:
        lines.append(f"| int8 / fp32 matmul rate (`torch._int_mm`, layer mix) | {mix['int_mm'] / mix['fp32']:.2f} |")
    lines += [
        f"| int8 / fp32 item encoding throughput (whole catalogue, one run each) | {speedup:.2f} |",
        f"| int8 / fp32 item encoding throughput (paired: same {paired['batches']} batches alternated "
        f"{len(paired['seconds_fp32'])}×, median) | {paired['int8_speedup_median']:.2f} |",
        f"| fp32 / int8 scoring latency (M6RecCTR predict, alternated {len(latency['ms_per_1000_fp32'])}×, median) | "
        f"{latency['int8_speedup_median']:.2f} |",
    ]
    for row in record["encoding"][2:]:
        lines.append(
            f"| early exit k={row['item_layers']} / all {n_lower} layers, item encoding throughput | "
            f"{row['items_per_s'] / fp32['items_per_s']:.2f} |"
        )
    lines += [
        "",
        "## Goals",
        "",
        "| goal | result | |",
        "|---|---|---|",
        f"| fp32 encoding at >= 0.8x the measured fp32 matmul rate | {fp32['useful_gflops']} vs {mix['fp32']} GFLOP/s "
        f"({fp32['useful_gflops'] / mix['fp32']:.2f}x) | {_goal(fp32['useful_gflops'] >= 0.8 * mix['fp32'])} |",
        f"| int8 encoding >= 1.5x fp32 throughput | {speedup:.2f}x whole catalogue, {paired['int8_speedup_median']:.2f}x "
        f"paired | {_goal(min(speedup, paired['int8_speedup_median']) >= 1.5)} |",
        f"| int8: < 1% relative change in NDCG@10 ({record['accuracy_plm']}) | valid "
        f"{100 * int8_row['valid_change']:+.2f}%, test {100 * int8_row['test_change']:+.2f}% | "
        f"{_goal(abs(int8_row['valid_change']) < 0.01 and abs(int8_row['test_change']) < 0.01)} |",
        "",
        "## Matrix-multiply rates (GFLOP/s)",
        "",
        f"`[{record['matmul']['shapes'][0]['rows']} x K] x [K x N]`: the rows are the median token slots of an "
        "encoding batch (64 texts, padded to the batch's longest); (K, N) each linear layer of one transformer layer.",
        "",
        "| K | N | fp32 matmul | int8 dynamic linear | torch._int_mm | fp32, 1 thread | int8 linear, 1 thread |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    one = record["matmul_1_thread"]
    for row, single in zip(record["matmul"]["shapes"], one["shapes"]):
        lines.append(
            f"| {row['K']} | {row['N']} | {row['fp32_gflops']} | {row['int8_linear_gflops']} | "
            f"{row.get('int_mm_gflops', row.get('int_mm_error', '–'))} | {single['fp32_gflops']} | "
            f"{single['int8_linear_gflops']} |"
        )
    mix1 = one["layer_mix_gflops"]
    lines.append(
        f"| layer mix | | **{mix['fp32']}** | **{mix['int8_linear']}** | **{mix.get('int_mm', '–')}** | "
        f"{mix1['fp32']} | {mix1['int8_linear']} |"
    )
    lines += [
        "",
        "## Item encoding (every ml-100k item text, once each)",
        "",
        "Useful GFLOP/s count real tokens (2 FLOPs per weight of each linear layer that runs, plus attention's two "
        "products); executed GFLOP/s count every padded slot; linear GFLOP/s is the linear layers' FLOPs over their "
        "own time. Seconds split by forward hooks.",
        "",
        "| setting | layers | s | items/s | useful GFLOP/s | executed GFLOP/s | linear GFLOP/s | padding | "
        "attention linears s | attention core s | MLP linears s | MLP activation s | rest s | load before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in record["encoding"]:
        split = row["split_s"]
        lines.append(
            f"| {'int8' if row['quantize'] == 'int8' else 'fp32'} | {row['item_layers']} | {row['seconds']} | "
            f"{row['items_per_s']} | {row['useful_gflops']} | {row['executed_gflops']} | {row['linear_gflops']} | "
            f"{100 * row['padding_share']:.0f}% | {split['attention_linear']} | {split['attention_core']} | "
            f"{split['mlp_linear']} | {split['mlp_activation']} | {split['rest']} | "
            f"{row['machine']['load_average'][0]} |"
        )
    lines += [
        "",
        f"Paired check: {paired['rows']} texts in {paired['batches']} batches, seconds per round fp32 "
        f"{paired['seconds_fp32']}, int8 {paired['seconds_int8']}.",
        "",
        "## Scoring latency (M6RecCTR predict, ms per 1,000 candidates)",
        "",
        f"{latency['candidates_timed']} labelled test candidates per round, untrained models; rounds alternated.",
        "",
        "| | rounds | median |",
        "|---|---|---:|",
        f"| fp32 | {latency['ms_per_1000_fp32']} | {latency['median_fp32']} |",
        f"| int8 | {latency['ms_per_1000_int8']} | {latency['median_int8']} |",
        "",
    ]
    for result in (m6rec, ctr):
        lines += _accuracy_lines(result, record)
    lines += _machine_lines(record)
    return "\n".join(lines)


def _accuracy_lines(result: dict, record: dict) -> list[str]:
    metric = {"ndcg@10": "NDCG@10", "auc": "AUC"}[result["metric"]]
    settings = record["settings"]
    lines = [
        f"## Accuracy: {result['model']} {metric} ({result['plm']})",
        "",
        f"Trained once in fp32, default settings, {_epochs(settings['epochs'])} (seconds per epoch, training and "
        f"validation, {settings['accuracy_threads']} torch thread(s): {result['epoch_seconds']}). Rows \"not retrained\" evaluate those same trained parameters with "
        "the setting's item states (items re-encoded; with int8 the online layers run int8 as well). Rows "
        f"\"afresh\" train the setting from scratch for {_epochs(settings['retrain_epochs'])}, compared with fp32 "
        "after as many epochs (same seed and batches). Change is relative to the matching fp32 row.",
        "",
        f"| setting | trained | valid {metric} | change | test {metric} | change |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['setting']} | {row['trained']} | {row['valid']:.4f} | {_change(row['valid_change'])} | "
            f"{row['test']:.4f} | {_change(row['test_change'])} |"
        )
    return lines + [""]


def _change(value) -> str:
    return "–" if value is None else f"{100 * value:+.2f}%"


def _machine_lines(record: dict) -> list[str]:
    machine = record["machine"]
    lines = [
        "## Machine",
        "",
        f"{machine['cpus']} CPUs ({machine['processor'] or 'x86_64'}), {machine['platform']}, torch {machine['torch']} "
        f"({machine['threads']} threads, quantized engine {machine['quantized_engine']}). The machine is shared: "
        "load average (1, 5, 15 min) and the busiest other processes before and after each phase.",
        "",
        "| phase | s | load before | load after | busiest other processes before |",
        "|---|---:|---|---|---|",
    ]
    for name, phase in record["phases"].items():
        lines.append(
            f"| {name} | {phase['seconds']} | {phase['before']['load_average']} | {phase['after']['load_average']} | "
            f"{', '.join(phase['before']['busiest_other_processes'][:3]) or 'none seen'} |"
        )
    return lines + [""]


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
        "--retrain_epochs", type=int, default=1, help="epochs of each early exit trained afresh (0: none)"
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
    parser.add_argument("--work_dir", default=None, help="this run's caches and checkpoints (default: a temp folder)")
    parser.add_argument(
        "--from_record", default=None, help="rewrite the report from a saved record.json, measure nothing"
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
    if not 0 <= args.retrain_epochs <= args.epochs:
        parser.error(f"--retrain_epochs must be between 0 and --epochs={args.epochs} (got {args.retrain_epochs})")
    return args


def main(argv: list[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    argv_before, sys.argv = sys.argv, [sys.argv[0]]  # RecBole reads sys.argv; keep this script's flags out of it
    try:
        record = json.loads(Path(args.from_record).read_text()) if args.from_record else run(args)
    finally:
        sys.argv = argv_before
    return publish("recbole_m6rec.benchmarks.compression", argv, report_markdown(record), record, args.report, "report")


if __name__ == "__main__":
    main()
