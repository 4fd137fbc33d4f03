"""Make the repository root importable, so tests run against the working tree without installing it; shared
fixtures for tests of the plugin's models on tiny random-initialised backbones (real tokenizer, real RecBole data).

A test module that uses ``make_config``, ``data`` or ``make_model`` names its model in a module-level ``MODEL``.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# A slice of ml-100k: users with at most 40 interactions keep the tests fast.
TINY_SLICE = {
    "user_inter_num_interval": "[0,40]",
    "MAX_ITEM_LIST_LENGTH": 20,
    "show_progress": False,
    "plm_name_or_path": "tiny-random-llama",
}


# handed out first under pytest-xdist with --no-loadscope-reorder (make test; without it xdist starts the files with
# the most tests first): each is minutes long, so the other processes share the rest beside them
SLOWEST_FILES = ("test_m6rec_end_to_end.py", "test_leaderboard.py", "test_gpu_campaign.py", "test_reliability.py")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on, as `nproc` counts
    except AttributeError:
        return os.cpu_count() or 1


def pytest_configure(config) -> None:
    """Under pytest-xdist each test process takes its share of the cores, for its torch and for the jobs it
    starts: processes that each spin up every core slow one another down (a whole-number OMP_NUM_THREADS wins)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        if config.pluginmanager.hasplugin("xdist") and getattr(config.option, "numprocesses", None):
            for folder in ("saved", "log", "log_tensorboard"):  # RecBole creates them unguarded in each process
                os.makedirs(folder, exist_ok=True)
        return
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if not threads.isdigit() or int(threads) < 1:
        threads = str(max(1, _usable_cores() // int(workers)))
        os.environ["OMP_NUM_THREADS"] = threads
    import torch

    torch.set_num_threads(int(threads))


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture
def no_foreign_argv(monkeypatch):
    """RecBole reads ``sys.argv``: keep pytest's flags out of its config."""
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("text-cache"))


@pytest.fixture(scope="module")
def make_config(request, cache_dir):
    """``make_config(**overrides)``: the module's ``MODEL`` on :data:`TINY_SLICE`, caching under ``cache_dir``."""
    from recbole_m6rec.config import PluginConfig

    def make(**overrides):
        settings = {**TINY_SLICE, "text_cache_dir": cache_dir, **overrides}
        return PluginConfig(model=request.module.MODEL, dataset="ml-100k", config_dict=settings)

    return make


@pytest.fixture(scope="module")
def data(make_config):
    """``(config, train, valid, test)`` of the default config, from RecBole's own data steps."""
    from helpers import prepare_data

    return prepare_data(make_config())


@pytest.fixture(scope="module")
def make_model(data, make_config):
    """``make_model(**overrides)``: the module's model on ``data``'s training set, built after ``init_seed(2020)``."""
    from recbole.utils import init_seed

    from recbole_m6rec.registry import get_model

    def make(**overrides):
        config = make_config(**overrides) if overrides else data[0]
        init_seed(2020, True)
        return get_model(config["model"])(config, data[1]._dataset)

    return make
