"""Recency words read raw time gaps, whatever RecBole's normalisation did to the timestamps.

RecBole's ml-100k settings (``normalize_all: True``) min-max scale the timestamp to [0, 1] before a model sees it;
read as seconds, every gap would be "minutes later". The plugin's ``create_dataset`` records the raw range of the
time field, and M6Rec converts gaps with it; every model still sees the same normalised times and the same split."""

import pickle
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import TINY_SLICE
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation
from recbole.utils import FeatureType

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.data import create_dataset, time_field_is_normalised
from recbole_m6rec.evaluation import split_fingerprint
from recbole_m6rec.model import m6rec as m6rec_module
from recbole_m6rec.text.recency import RECENCY_PHRASES, recency_buckets, seconds_per_time_unit

pytestmark = pytest.mark.usefixtures("no_foreign_argv")  # conftest: RecBole never sees pytest's flags

DAY = 86400.0
BOUNDS = (
    [3600.0, DAY]
    + [d * DAY for d in range(2, 8)]
    + [w * 7 * DAY for w in range(2, 5)]
    + [30 * DAY]
    + [m * 30 * DAY for m in range(2, 13)]
    + [730 * DAY, 1095 * DAY]
)  # recency.py's bucket edges


def _config(**overrides) -> PluginConfig:
    return PluginConfig(model="M6Rec", dataset="ml-100k", config_dict={**TINY_SLICE, "state": "ERROR", **overrides})


def _raw_inter(config) -> pd.DataFrame:
    path = Path(config["data_path"]) / "ml-100k.inter"
    raw = pd.read_csv(path, sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    return raw.rename(columns=lambda c: c.split(":")[0])


# --- the conversion -----------------------------------------------------------------------------------------------
def test_normalised_gaps_times_the_raw_range_are_the_raw_gaps():
    raw = torch.tensor(
        [[1000.0, 1060.0, 1000 + 5 * 3600, 1000 + 2.5 * DAY, 1000 + 12 * DAY, 1000 + 500 * DAY]], dtype=torch.float64
    )
    low, high = 500.0, 1000 + 600 * DAY
    normalised = ((raw - low) / (high - low)).float()  # as RecBole's batches carry them
    lengths = torch.tensor([6])
    expected, has_phrase = recency_buckets(raw, lengths)
    words = [RECENCY_PHRASES[i] for i in expected[0, 1:].tolist()]
    assert words == ["minutes later", "hours later", "2 days later", "1 week later", "1 year later"]
    converted, converted_has = recency_buckets(normalised, lengths, high - low)
    assert torch.equal(converted, expected) and torch.equal(converted_has, has_phrase)
    unconverted, _ = recency_buckets(normalised, lengths)
    assert set(unconverted[0, 1:].tolist()) == {RECENCY_PHRASES.index("minutes later")}  # what the bug showed


@pytest.mark.parametrize(
    "settings,ftype,normalised",
    [
        ({"normalize_all": True, "normalize_field": None}, FeatureType.FLOAT, True),
        ({"normalize_all": False, "normalize_field": None}, FeatureType.FLOAT, False),
        ({"normalize_all": False, "normalize_field": ["rating"]}, FeatureType.FLOAT, False),
        ({"normalize_all": False, "normalize_field": ["timestamp"]}, FeatureType.FLOAT, True),
        ({"normalize_all": True, "normalize_field": None}, FeatureType.TOKEN, False),  # RecBole scales floats only
    ],
)
def test_which_settings_normalise_the_time_field(settings, ftype, normalised):
    config = {"TIME_FIELD": "timestamp", **settings}
    assert time_field_is_normalised(config, {"timestamp": ftype}) is normalised


def test_seconds_per_time_unit_comes_from_the_recorded_range_or_is_an_error():
    config = {"TIME_FIELD": "timestamp", "normalize_all": True, "normalize_field": None}
    floats = {"timestamp": FeatureType.FLOAT}
    assert seconds_per_time_unit(config, SimpleNamespace(raw_time_range=(10.0, 110.0), field2type=floats)) == 100.0
    assert seconds_per_time_unit(config, SimpleNamespace(raw_time_range=None, field2type=floats)) == 1.0
    with pytest.raises(
        ValueError,
        match=r"normalize_all scaled the time field 'timestamp'.*"
        r"recbole_m6rec\.data\.create_dataset.*normalize_field",
    ):
        seconds_per_time_unit(config, SimpleNamespace(field2type=floats))
    raw_seconds = {**config, "normalize_all": False}
    assert seconds_per_time_unit(raw_seconds, SimpleNamespace(field2type=floats)) == 1.0


# --- the dataset --------------------------------------------------------------------------------------------------
def test_the_plugin_dataset_is_recboles_plus_the_raw_time_range():
    config = _config()
    ours, theirs = create_dataset(config), recbole_create_dataset(config)
    assert isinstance(ours, type(theirs)) and type(ours).__name__ == type(theirs).__name__
    # every model sees the same normalised times, so the same float32 ties and the same split
    times = torch.tensor(ours.inter_feat["timestamp"].to_numpy())
    assert torch.equal(times, torch.tensor(theirs.inter_feat["timestamp"].to_numpy()))
    assert float(times.min()) == 0.0 and float(times.max()) == 1.0

    # the range: the raw file's times of the interactions RecBole kept (after its filters), before it scaled them
    raw = _raw_inter(config).set_index(["user_id", "item_id"])["timestamp"]
    users = ours.id2token(ours.uid_field, ours.inter_feat[ours.uid_field])
    items = ours.id2token(ours.iid_field, ours.inter_feat[ours.iid_field])
    kept = torch.tensor(raw.loc[list(zip(users, items, strict=True))].to_numpy(), dtype=torch.float64)
    low, high = ours.raw_time_range
    assert (low, high) == (float(kept.min()), float(kept.max()))
    assert len(kept) < len(raw) and (low, high) != (float(raw.min()), float(raw.max()))  # filtered rows left out
    torch.testing.assert_close(times.double(), (kept - low) / (high - low), rtol=0, atol=1e-12)

    ours_split, theirs_split = data_preparation(config, ours), data_preparation(config, theirs)
    assert split_fingerprint(*ours_split) == split_fingerprint(*theirs_split)
    train, valid, test = ours_split  # the copies RecBole makes (build, split) keep it, and so does a pickle
    assert train._dataset.raw_time_range == valid._dataset.raw_time_range == test._dataset.raw_time_range == (low, high)
    assert pickle.loads(pickle.dumps(ours)).raw_time_range == (low, high)
    assert create_dataset(_config(normalize_all=False)).raw_time_range is None  # raw seconds: nothing to convert


def test_a_normalised_dataset_without_the_range_is_a_clear_error(tmp_path):
    config = _config(recency_words=True, text_cache_dir=str(tmp_path))
    with pytest.raises(
        ValueError,
        match=r"normalize_all scaled the time field 'timestamp' to \[0, 1\].*"
        r"recbole_m6rec\.data\.create_dataset.*normalize_field",
    ):
        m6rec_module.M6Rec(config, recbole_create_dataset(config))
    raw_seconds = _config(recency_words=True, text_cache_dir=str(tmp_path), normalize_all=False)
    assert m6rec_module.M6Rec(raw_seconds, recbole_create_dataset(raw_seconds)).seconds_per_time_unit == 1.0


# --- through the pipeline -----------------------------------------------------------------------------------------
def test_recency_phrases_through_the_pipeline_vary_and_match_the_raw_gaps(tmp_path, monkeypatch):
    """Train through ``run_pipeline``, reload with ``load_data_and_model``, and read the phrases M6Rec puts in front
    of each test user's history items: many different ones, and a user's gaps are the raw file's gaps."""
    from recbole_m6rec.quick_start import load_data_and_model, run_pipeline

    monkeypatch.chdir(tmp_path)
    config = _config(
        recency_words=True, epochs=1, text_cache_dir=str(tmp_path / "cache"), checkpoint_dir=str(tmp_path / "saved")
    )
    outcome = run_pipeline(config)
    _, model, dataset, _, _, test = load_data_and_model(outcome.checkpoint_file)
    assert model.seconds_per_time_unit == dataset.raw_time_range[1] - dataset.raw_time_range[0] > 100 * DAY

    seen = []  # (timestamps, lengths, phrase index, has phrase) of every call M6Rec makes
    real = m6rec_module.recency_buckets

    def recording(timestamps, lengths, *args):
        index, has_phrase = real(timestamps, lengths, *args)
        seen.append((timestamps, lengths, index, has_phrase))
        return index, has_phrase

    monkeypatch.setattr(m6rec_module, "recency_buckets", recording)
    model.eval()
    batch = next(iter(test))[0]
    with torch.no_grad():
        model.full_sort_predict(batch)
    ((times, lengths, index, has_phrase),) = seen
    assert torch.equal(times, batch["timestamp_list"])

    phrases = {RECENCY_PHRASES[i] for i in index[has_phrase].tolist()}
    assert len(phrases) >= 8, phrases  # minutes to months apart, not one constant
    per_user = [len(set(index[row, has_phrase[row]].tolist())) for row in range(len(batch))]
    assert sum(n >= 3 for n in per_user) >= 5  # most of these users rated in one or two sittings; some did not

    # the user with the most different phrases: each gap against the raw file's times of the same two ratings
    row = max(range(len(batch)), key=per_user.__getitem__)
    n = int(lengths[row])
    user = dataset.id2token(dataset.uid_field, int(batch["user_id"][row]))
    items = dataset.id2token(dataset.iid_field, batch["item_id_list"][row, :n])
    raw = _raw_inter(config).set_index(["user_id", "item_id"])["timestamp"]
    raw_times = torch.tensor([float(raw.loc[(user, item)]) for item in items], dtype=torch.float64)
    raw_gaps = raw_times[1:] - raw_times[:-1]
    model_gaps = (times[row, 1:n].double() - times[row, : n - 1].double()) * model.seconds_per_time_unit
    torch.testing.assert_close(model_gaps, raw_gaps.clamp(min=0), rtol=0, atol=5.0)  # float32 [0, 1]: ~2 s
    expected, _ = recency_buckets(raw_times.unsqueeze(0), torch.tensor([n]))
    clear = torch.tensor([min(abs(g - b) for b in BOUNDS) > 5.0 for g in raw_gaps.tolist()])  # not at an edge
    assert torch.equal(index[row, 1:n][clear], expected[0, 1:][clear]) and int(clear.sum()) >= n - 3
    assert len(set(index[row, 1:n].tolist())) >= 4
