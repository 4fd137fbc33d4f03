"""Shared settings for tests that run RecBole end to end."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ML100K_YAML = str(REPO / "recbole_m6rec" / "properties" / "dataset" / "ml-100k.yaml")

# Quiet, fast, and writing nothing outside the test's working directory.
QUIET = {"show_progress": False, "state": "WARNING"}

# A SASRec small enough for a test: one layer, 16-d, a filtered slice of ml-100k.
SMALL_SASREC = {
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "MAX_ITEM_LIST_LENGTH": 10,
    "user_inter_num_interval": "[0,40]",
    "train_batch_size": 1024,
    "train_neg_sample_args": "None",  # RecBole 1.2.1 requires it for loss_type CE
}


def prepare_data(config):
    """``(config, train, valid, test)`` from RecBole's own data steps, through the plugin's ``create_dataset`` (as
    ``run_pipeline``: RecBole's dataset plus the raw time range), with pytest's argv out of RecBole's sight."""
    import sys

    from recbole.data import data_preparation

    from recbole_m6rec.data import create_dataset

    argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
    finally:
        sys.argv = argv
    return config, train, valid, test
