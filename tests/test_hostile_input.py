"""Hostile input, table-driven: bad atomic files, bad texts, bad configs, untrusted model folders.

Each case either fails with a clear error (one that names the file, field or key and what would be valid) or takes
a documented fallback; the good dataset is built the same way for comparison.
"""

import json
import logging
import pickle
import shutil
import sys
from pathlib import Path

import pytest
from recbole.data import create_dataset

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.model.m6rec import M6Rec

LOAD_COL = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title", "year"]}
ITEM_HEADER = "item_id:token\ttitle:token_seq\tyear:token\n"
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def good_item_rows() -> list[str]:
    return [f"{i}\tMovie number {i}\t{1990 + i}\n" for i in range(1, 9)]


def good_inter() -> str:
    return INTER_HEADER + "".join(f"u{u}\t{i}\t{u * 100 + i}\n" for u in range(1, 7) for i in range(1, 9))


def write_dataset(root: Path, item: bytes | None = None, inter: str | None = None, user: bytes | None = None) -> str:
    folder = root / "toy"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "toy.inter").write_text(good_inter() if inter is None else inter, encoding="utf-8")
    (folder / "toy.item").write_bytes((ITEM_HEADER + "".join(good_item_rows())).encode() if item is None else item)
    if user is not None:
        (folder / "toy.user").write_bytes(user)
    return str(root)


def config_for(root: str, cache: Path, **overrides) -> PluginConfig:
    settings = {
        "data_path": root,
        "load_col": LOAD_COL,
        "item_text_fields": ["title", "year"],
        "plm_name_or_path": "tiny-random-llama",
        "text_cache_dir": str(cache),
        "MAX_ITEM_LIST_LENGTH": 5,
        "state": "ERROR",
        "show_progress": False,
        **overrides,
    }
    return PluginConfig(model="M6Rec", dataset="toy", config_dict=settings)


def build_model(root: str, cache: Path, **overrides) -> M6Rec:
    config = config_for(root, cache, **overrides)
    return M6Rec(config, create_dataset(config))


@pytest.fixture(autouse=True)
def _no_foreign_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])


# --- bad atomic files: each is an error naming the file and the fix --------------------------------------------------
BAD_FILES = {
    "broken encoding": (
        {"item": (ITEM_HEADER + "3\tMovie \udcff title\t1993\n").encode("utf-8", "surrogateescape")},
        r"toy.item' is not valid utf-8: byte b'\\xff' at line 2 .*set `encoding: <the file's encoding>`",
    ),
    "empty file": ({"item": b""}, r"toy.item' is empty: an atomic file needs a header line"),
    "header but no rows": ({"inter": INTER_HEADER}, r"toy.inter' has a header but no rows"),
    "unknown column type": (
        {"item": b"item_id:token\ttitle:text\n1\tA\n"},
        r"header column 'title:text' is not `name:type` with a type in token, token_seq",
    ),
    "missing column": (
        {"item": ("item_id:token\tyear:token\n" + "1\t1991\n").encode()},
        r"load_col asks for \['title'\] from '.*toy.item', whose columns are \['item_id', 'year'\]",
    ),
    "field over the reader's limit": (
        {"item": (ITEM_HEADER + "1\t" + "x" * 200_000 + "\t1991\n").encode()},
        r"toy.item' line 2 has a field of 200,000 characters; RecBole's reader accepts " r"at most 131,072",
    ),
    "duplicate item ids": (
        {"item": (ITEM_HEADER + "".join(good_item_rows()) + "4\tAnother title\t2000\n").encode()},
        r"toy.item' lists 1 item_id value\(s\) more than once \('4' ×2\)",
    ),
    "duplicate user ids": (
        {"user": b"user_id:token\tage:token\nu1\t20\nu1\t30\n"},
        r"toy.user' lists 1 user_id value\(s\) more than once \('u1' ×2\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_atomic_file_is_a_clear_error(case, tmp_path):
    files, message = BAD_FILES[case]
    root = write_dataset(tmp_path, **files)
    with pytest.raises(ValueError, match=message):
        config_for(root, tmp_path / "cache")


def test_bad_file_error_comes_before_any_recbole_parsing_for_baselines_too(tmp_path):
    root = write_dataset(tmp_path, inter=INTER_HEADER)
    with pytest.raises(ValueError, match="has a header but no rows"):
        PluginConfig(model="BPR", dataset="toy", config_dict={"data_path": root, "load_col": LOAD_COL})


# --- texts: documented fallbacks ------------------------------------------------------------------------------------
def test_extra_columns_are_ignored(tmp_path):
    base = build_model(write_dataset(tmp_path / "a"), tmp_path / "cache")
    wide_item = (
        "item_id:token\tjunk:float\ttitle:token_seq\tyear:token\tnotes:token_seq\n"
        + "".join(f"{i}\t{i * 0.5}\tMovie number {i}\t{1990 + i}\tignored words\n" for i in range(1, 9))
    ).encode()
    wide_inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"u{u}\t{i}\t3\t{u * 100 + i}\n" for u in range(1, 7) for i in range(1, 9)
    )
    wide = build_model(write_dataset(tmp_path / "b", item=wide_item, inter=wide_inter), tmp_path / "cache")
    assert wide.item_texts == base.item_texts and wide.item_texts[1] == "Movie number 1. 1991"


def test_empty_texts_fall_back_to_the_item_id_with_one_warning(tmp_path, caplog):
    item = (
        ITEM_HEADER + "".join(f"{i}\t \t \n" if i in (2, 5) else f"{i}\tMovie {i}\t{1990 + i}\n" for i in range(1, 9))
    ).encode()
    caplog.set_level(logging.WARNING)
    model = build_model(write_dataset(tmp_path, item=item), tmp_path / "cache")
    raw = model.item_texts
    assert "item 2" in raw and "item 5" in raw and "Movie 3. 1993" in raw
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "fallback" in r.getMessage()]
    assert len(warnings) == 1 and "2 item" in warnings[0]


def test_huge_text_is_truncated_at_text_max_tokens(tmp_path):
    huge = " ".join(f"word{k}" for k in range(12_000))  # ~110 KB in one title, under the reader's limit
    item = (ITEM_HEADER + f"1\t{huge}\t1991\n" + "".join(good_item_rows()[1:])).encode()
    model = build_model(write_dataset(tmp_path, item=item), tmp_path / "cache", text_max_tokens=16)
    assert model.item_texts[1].startswith("word0 word1")
    assert int(model.item_tokens.lengths.max()) <= 16 + 1  # + the BOS a decoder segment gets


def test_text_field_that_is_not_loaded_lists_the_loaded_ones(tmp_path):
    root = write_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"\['plot'\].*'title', 'year'"):
        build_model(root, tmp_path / "cache", item_text_fields=["title", "plot"])


# --- configs ----------------------------------------------------------------------------------------------------------
BAD_CONFIGS = {
    "typo in a plugin key": (
        {"late_interaction_layer": 2},
        r"unknown config key 'late_interaction_layer' .*did you " r"mean 'late_interaction_layers'",
    ),
    "unknown tuning": ({"tuning": "lora"}, r"tuning must be one of option_adapter, prompt, upper, full \(got 'lora'\)"),
    "unknown loss": ({"loss_type": "hinge"}, r"loss_type must be one of .*\(got 'hinge'\)"),
    "bad segment_tokens": ({"segment_tokens": 0}, r"segment_tokens must be a positive integer or 'all' \(got 0\)"),
    "too many upper layers": ({"late_interaction_layers": 99}, r"late_interaction_layers.*99"),
    "unknown history mask": ({"eval_history_mask": "some"}, None),  # checked when the trainer is built
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_a_clear_error(case, tmp_path):
    overrides, message = BAD_CONFIGS[case]
    root = write_dataset(tmp_path)
    if message is None:
        from recbole_m6rec.evaluation import check_history_mask_rule

        with pytest.raises(ValueError, match=r"eval_history_mask must be one of recbole, all, none \(got 'some'\)"):
            check_history_mask_rule(config_for(root, tmp_path / "cache", **overrides)["eval_history_mask"])
        return
    with pytest.raises(ValueError, match=message):
        build_model(root, tmp_path / "cache", **overrides)


def test_model_folder_that_needs_remote_code_is_refused(tmp_path):
    folder = tmp_path / "custom-model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "my-arch", "auto_map": {"AutoModel": "modeling_my_arch.MyModel"}})
    )
    (folder / "modeling_my_arch.py").write_text("raise SystemExit('remote code ran')\n")
    root = write_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match=r"needs its own Python code .*trust_remote_code stays off"):
        build_model(root, tmp_path / "cache", plm_name_or_path=str(folder))


# --- checkpoints: RecBole's pickled format goes through an allow-list; each hostile file is refused -------------------
def torch_file(path: Path, pickle_bytes: bytes) -> Path:
    """A file in torch.save's zip layout whose pickle is exactly ``pickle_bytes``."""
    import torch

    writer = torch._C.PyTorchFileWriter(str(path))
    writer.write_record("data.pkl", pickle_bytes, len(pickle_bytes))
    writer.write_record(".format_version", b"1", 1)
    writer.write_record("version", b"3\n", 2)
    writer.write_end_of_file()
    return path


def _unicode(text: str) -> bytes:  # BINUNICODE
    return b"X" + len(text).to_bytes(4, "little") + text.encode()


CONFIG = b"crecbole.config.configurator\nConfig\n"  # GLOBAL: an allow-listed class
HOSTILE_CHECKPOINTS = {
    # (None, {"_load_cmd_line": None}) BUILD on the class: Config._load_cmd_line = None for the whole process
    "BUILD on an allowed class": (
        CONFIG + b"N}" + _unicode("_load_cmd_line") + b"Ns\x86b.",
        r"refusing BUILD on the class recbole.config.configurator.Config",
    ),
    # {"_load_cmd_line": None} as the class's __dict__ update (the other form of BUILD)
    "BUILD with a dict state on an allowed class": (
        CONFIG + b"}" + _unicode("_load_cmd_line") + b"Nsb.",
        r"refusing BUILD on the class recbole.config.configurator.Config",
    ),
    "SETITEM on an allowed class": (
        CONFIG + _unicode("_load_cmd_line") + b"Ns.",
        r"refusing SETITEM on the class recbole.config.configurator.Config",
    ),
    "foreign global": (b"cos\nsystem\n" + _unicode("echo pwned") + b"\x85R.", r"refusing to load global 'os.system'"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CHECKPOINTS))
def test_hostile_checkpoint_is_refused_and_changes_nothing(case, tmp_path):
    import torch
    from recbole.config.configurator import Config

    from recbole_m6rec.checkpoint import UnsafeCheckpointError, load_recbole_checkpoint

    payload, message = HOSTILE_CHECKPOINTS[case]
    path = torch_file(tmp_path / "hostile.pth", b"\x80\x02" + payload)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # torch's own weights-only loader refuses it too
    original = Config.__dict__["_load_cmd_line"]
    try:
        with pytest.raises(UnsafeCheckpointError, match=message):
            load_recbole_checkpoint(path)
        assert Config.__dict__["_load_cmd_line"] is original  # the class is untouched
    finally:
        Config._load_cmd_line = original  # keep the rest of the test run sane even if the loader let it through
