"""The accuracy half of the compression benchmark (:mod:`recbole_m6rec.benchmarks.compression`): M6Rec and
M6RecCTR trained once in fp32, then the same parameters evaluated with int8 and early-exit item states, and each
setting (int8, each early exit) trained afresh next to fp32 after as many epochs."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

__all__ = ["early_exit_layers", "plugin_config", "epochs_text", "epoch_estimate", "accuracy"]

FRACTIONS = (1.0, 0.75, 0.5, 0.25)  # early exit: shares of the lower layers that encode items


def early_exit_layers(n_lower: int) -> list[int]:
    """``[n_lower, 3/4, 1/2, 1/4 of it]`` (rounded, at least 1, no repeats), largest first."""
    return sorted({max(1, round(n_lower * f)) for f in FRACTIONS}, reverse=True)


def plugin_config(model: str, plm: str, cache_dir: str, **overrides):
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


def epochs_text(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _progress(line: str) -> None:
    """One line per step of the hour-long accuracy part (RecBole's own logging is kept at warnings)."""
    print(f"[{time.strftime('%H:%M:%S')}]   {line}", flush=True)


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

    config = plugin_config("M6Rec", plm, cache_dir)
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
    each setting afresh for ``retrain_epochs`` epochs next to the fp32 model after as many epochs."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec.compat import anomaly_detection_off
    from recbole_m6rec.data import create_dataset
    from recbole_m6rec.quick_start import load_best_checkpoint
    from recbole_m6rec.registry import get_model
    from recbole_m6rec.trainer import build_trainer

    metric = _metric(model_name)
    config = plugin_config(model_name, plm, cache_dir, epochs=epochs)
    init_seed(config["seed"], config["reproducibility"])
    data = data_preparation(config, create_dataset(config))
    train, valid, test = data

    def build(overrides: dict, state: dict | None = None):
        variant = plugin_config(model_name, plm, cache_dir, **overrides)
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
        _progress(
            f"{model_name} fp32 epoch {epoch_idx + 1}/{epochs}: valid {metric} {valid_score:.4f}, "
            f"{epoch_seconds[-1]} s"
        )

    with anomaly_detection_off():
        trainer.fit(train, valid, saved=True, show_progress=False, callback_fn=after_epoch)
    load_best_checkpoint(trainer, trainer.saved_model_file)
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # each row is compared with the fp32 row trained alike: "trained" (the full budget) or "short" (retrain_epochs)
    rows.append(
        {"setting": "fp32", "trained": f"{epochs_text(epochs)} (best by valid)", "base": "trained", **scores(trainer)}
    )
    if retrain_epochs:
        model.load_state_dict(epoch_states[retrain_epochs - 1])
        rows.append({"setting": "fp32", "trained": epochs_text(retrain_epochs), "base": "short", **scores(trainer)})
    del model, trainer
    for overrides, name in [({"quantize": "int8"}, "int8")] + [
        ({"item_encoder_layers": k}, f"early exit k={k}") for k in early_exit_layers(n_lower)[1:]
    ]:
        _progress(f"{model_name} {name}: evaluating the fp32 parameters")
        model, trainer = build(overrides, best)
        rows.append(
            {"setting": name, "trained": "fp32 parameters, not retrained", "base": "trained", **scores(trainer)}
        )
        del model, trainer
        if retrain_epochs:  # trained with the setting: the adapters learn on the states it gives
            _progress(f"{model_name} {name}: training afresh for {epochs_text(retrain_epochs)}")
            model, trainer = build({**overrides, "epochs": retrain_epochs, "eval_step": retrain_epochs + 1})
            with anomaly_detection_off():
                trainer.fit(train, valid, saved=False, show_progress=False)
            trained = f"{epochs_text(retrain_epochs)}, afresh"
            rows.append({"setting": name, "trained": trained, "base": "short", **scores(trainer)})
            del model, trainer
    fp32 = {row["base"]: row for row in rows if row["setting"] == "fp32"}
    for row in rows:
        base = fp32[row["base"]]
        for split in ("valid", "test"):
            row[f"{split}_change"] = round((row[split] - base[split]) / base[split], 4) if base[split] else None
    return {"model": model_name, "plm": plm, "metric": metric, "epoch_seconds": epoch_seconds, "rows": rows}
