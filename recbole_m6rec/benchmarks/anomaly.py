"""Seconds per SASRec training epoch on ml-100k with RecBole's import-time anomaly detection on (stock RecBole
1.2.1 once any sequential model is imported) and off (what ``run_recbole.py`` does), in one process.

    python -m recbole_m6rec.benchmarks.anomaly [--epochs=1] [--model=SASRec]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def time_epochs(model_name: str, anomaly: bool, epochs: int) -> list[float]:
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_m6rec import registry
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.data import create_dataset

    config = PluginConfig(
        model=model_name,
        dataset="ml-100k",
        config_dict={"train_neg_sample_args": None, "show_progress": False, "state": "WARNING"},
    )
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = registry.get_model(model_name)(config, train_data._dataset)
    trainer = registry.get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    seconds = []
    previous = torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(anomaly)
    try:
        for epoch in range(epochs):
            started = time.perf_counter()
            trainer._train_epoch(train_data, epoch)
            seconds.append(time.perf_counter() - started)
    finally:
        torch.autograd.set_detect_anomaly(previous)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    import recbole.model.sequential_recommender  # noqa: F401  (what turns anomaly detection on)

    rows = []
    for anomaly in (False, True):
        seconds = time_epochs(args.model, anomaly, args.epochs)
        rows.append((anomaly, sum(seconds) / len(seconds)))
        print(
            f"{args.model} anomaly detection {'on ' if anomaly else 'off'}: "
            f"{rows[-1][1]:.1f} s/epoch ({', '.join(f'{s:.1f}' for s in seconds)})",
            flush=True,
        )
    off, on = rows[0][1], rows[1][1]
    print(
        f"\n| {args.model}, ml-100k, 1 process | s/epoch |\n|---|---|\n| anomaly detection on (stock) | {on:.1f} |\n"
        f"| anomaly detection off (fixed) | {off:.1f} |\n| slowdown | {on / off:.2f}x |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
