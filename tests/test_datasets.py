"""Dataset settings (built-in yamls as package data, your own through ``dataset_yaml_dirs``), the early error for a
time-ordered run on an ``.inter`` file without a time field, and ``row_order_time``, which gives such a file one."""

import math
import random
import sys

import pytest

from recbole_m6rec import datasets
from recbole_m6rec.config import PluginConfig
from recbole_m6rec.row_order_time import add_row_order_time
from recbole_m6rec.row_order_time import main as row_order_time_main

QUIET = {"show_progress": False, "state": "WARNING"}
TINY_SASREC = {
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "MAX_ITEM_LIST_LENGTH": 10,
    "epochs": 1,
    "train_batch_size": 256,
    "train_neg_sample_args": None,
    "loss_type": "CE",
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """RecBole writes log/ and saved/ into the working directory, and its Config reads sys.argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    return tmp_path


def write_untimed(data_path, name="toy", users=20, per_user=8, items=40, seed=0):
    """``<data_path>/<name>/<name>.inter`` with user, item and rating but no time column, rows of all users shuffled
    together, and a ``.item`` file. Returns each user's items in file order."""
    rng = random.Random(seed)
    rows = [(f"u{u}", f"i{i}") for u in range(users) for i in rng.sample(range(items), per_user)]
    rng.shuffle(rows)
    folder = data_path / name
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\trating:float"] + [f"{u}\t{i}\t{rng.randint(1, 5)}" for u, i in rows]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    item_lines = ["item_id:token\ttitle:token_seq"] + [f"i{i}\tthing number {i}" for i in range(items)]
    (folder / f"{name}.item").write_text("\n".join(item_lines) + "\n", encoding="utf-8")
    order: dict[str, list[str]] = {}
    for user, item in rows:
        order.setdefault(user, []).append(item)
    return order


# --- where dataset yamls come from -----------------------------------------------------------------------------


def test_builtin_dataset_yamls_are_package_data():
    assert datasets.DATASETS_DIR.parent.parent.name == "recbole_m6rec"
    assert datasets.dataset_yaml("ml-100k") == datasets.DATASETS_DIR / "ml-100k.yaml"
    assert {"ml-100k", "ml-1m"} <= set(datasets.known_datasets())


def test_own_dataset_yaml_comes_from_dataset_yaml_dirs(workdir):
    write_untimed(workdir / "data")
    (workdir / "settings").mkdir()
    (workdir / "settings" / "toy.yaml").write_text(
        "load_col:\n  inter: [user_id, item_id]\n  item: [item_id, title]\nitem_text_fields: [title]\n",
        encoding="utf-8",
    )
    config = PluginConfig(model="BPR", dataset="toy", cmd_args=["--data_path=data", "--dataset_yaml_dirs=settings"])
    assert config["item_text_fields"] == ["title"]
    assert config["load_col"]["inter"] == ["user_id", "item_id"]
    without = PluginConfig(model="BPR", dataset="toy", config_dict={"data_path": "data"})
    assert without["item_text_fields"] is None


def test_missing_dataset_yaml_dir_is_named(workdir):
    with pytest.raises(FileNotFoundError, match="dataset_yaml_dirs names 'nowhere'"):
        PluginConfig(model="BPR", dataset="ml-100k", config_dict={"dataset_yaml_dirs": ["nowhere"]})


# --- no time field ----------------------------------------------------------------------------------------------


def test_sequential_model_without_time_field_is_a_clear_error(workdir):
    write_untimed(workdir / "data")
    with pytest.raises(ValueError) as info:
        PluginConfig(model="SASRec", dataset="toy", config_dict={"data_path": "data", **TINY_SASREC})
    message = str(info.value)
    assert str(workdir / "data" / "toy" / "toy.inter") in message or "data/toy/toy.inter" in message
    assert "no time field 'timestamp'" in message and "user_id, item_id, rating" in message
    assert "SASRec is a sequential model" in message
    assert "python -m recbole_m6rec.row_order_time" in message


def test_time_ordered_split_without_time_field_is_a_clear_error(workdir):
    write_untimed(workdir / "data")
    with pytest.raises(ValueError, match="eval_args.order is 'TO'"):
        PluginConfig(
            model="BPR",
            dataset="toy",
            config_dict={"data_path": "data", "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO"}},
        )
    config = PluginConfig(model="BPR", dataset="toy", config_dict={"data_path": "data"})  # RO: needs no time
    assert config["eval_args"]["order"] == "RO"


def test_load_col_leaving_out_the_time_field_is_a_clear_error(workdir):
    with pytest.raises(ValueError, match=r"leaves out the time field 'timestamp'"):
        PluginConfig(
            model="SASRec",
            dataset="ml-100k",
            config_dict={**TINY_SASREC, "load_col": {"inter": ["user_id", "item_id"]}},
        )


# --- row_order_time -----------------------------------------------------------------------------------------------


def test_row_order_time_numbers_the_rows(tmp_path, capsys):
    source = tmp_path / "raw" / "shop"
    source.mkdir(parents=True)
    (source / "shop.inter").write_text("user_id:token\titem_id:token\r\nb\tx\r\n\r\na\ty\r\nb\tz\r\n", encoding="utf-8")
    (source / "shop.item").write_text("item_id:token\ttitle:token_seq\nx\tan x\n", encoding="utf-8")
    row_order_time_main([str(source / "shop.inter"), str(tmp_path / "ordered")])
    written = tmp_path / "ordered" / "shop" / "shop.inter"
    assert written.read_text(encoding="utf-8") == (
        "user_id:token\titem_id:token\ttimestamp:float\nb\tx\t1\na\ty\t2\nb\tz\t3\n"
    )
    assert (tmp_path / "ordered" / "shop" / "shop.item").read_text(encoding="utf-8") == (
        source / "shop.item"
    ).read_text(encoding="utf-8")
    assert "--dataset=shop" in capsys.readouterr().out
    with pytest.raises(ValueError, match="already has a 'timestamp' column"):
        add_row_order_time(written, tmp_path / "again")
    with pytest.raises(ValueError, match="input's own folder"):
        add_row_order_time(source / "shop.inter", tmp_path / "raw")


def test_row_order_time_refuses_a_ragged_row(tmp_path):
    (tmp_path / "bad.inter").write_text("user_id:token\titem_id:token\trating:float\na\tx\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 has 2 fields, the header 3"):
        add_row_order_time(tmp_path / "bad.inter", tmp_path / "out")


@pytest.mark.slow
def test_sasrec_runs_on_row_order_data_and_histories_follow_the_file(workdir):
    from recbole.data import create_dataset, data_preparation

    from recbole_m6rec.quick_start import run

    order = write_untimed(workdir / "raw")
    add_row_order_time(workdir / "raw" / "toy" / "toy.inter", workdir / "data")
    (workdir / "settings").mkdir()
    (workdir / "settings" / "toy.yaml").write_text(
        "load_col:\n  inter: [user_id, item_id, rating, timestamp]\n", encoding="utf-8"
    )
    settings = {"data_path": "data", "dataset_yaml_dirs": "settings", **TINY_SASREC, **QUIET}

    # leave-one-out on the converted file: each user's test example is that user's rows in file order
    config = PluginConfig(model="SASRec", dataset="toy", config_dict=settings)
    _, _, test = data_preparation(config, create_dataset(config))
    feat, tokens = test._dataset.inter_feat, test._dataset.field2id_token
    users = tokens["user_id"][feat["user_id"].numpy()]
    for row, user in enumerate(users):
        length = int(feat["item_length"][row])
        history = tokens["item_id"][feat["item_id_list"][row, :length].numpy()].tolist()
        target = tokens["item_id"][int(feat["item_id"][row])]
        assert history + [target] == order[user][-(length + 1) :], user
    assert len(users) == len(order)

    result = run("SASRec", "toy", config_dict=settings, saved=False)
    assert all(math.isfinite(value) for value in result["test_result"].values())
    assert set(result["test_result"]) >= {"recall@10", "ndcg@10"}
