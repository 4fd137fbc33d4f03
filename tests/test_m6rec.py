"""M6Rec on tiny random-initialised backbones (real tokenizer, real RecBole data): shapes, gradients, caches,
scoring consistency, leakage, bad input."""

import sys

import numpy as np
import pytest
import torch
from recbole.utils import init_seed

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.model.m6rec import M6Rec
from recbole_m6rec.text.recency import RECENCY_PHRASES, recency_buckets
from recbole_m6rec.trainer import M6RecTrainer, whole_sequence_indices, whole_sequence_loader

from helpers import prepare_data

# A slice of ml-100k: users with at most 40 interactions keep the tests fast.
SLICE = {"user_inter_num_interval": "[0,40]", "MAX_ITEM_LIST_LENGTH": 20, "show_progress": False}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("text-cache"))


@pytest.fixture(scope="module")
def data(cache_dir):
    return prepare_data(make_config(cache_dir))


def make_config(cache_dir, **overrides):
    settings = {**SLICE, "plm_name_or_path": "tiny-random-llama", "text_cache_dir": cache_dir, **overrides}
    return PluginConfig(model="M6Rec", dataset="ml-100k", config_dict=settings)


def make_model(data, cache_dir, **overrides):
    config = make_config(cache_dir, **overrides) if overrides else data[0]
    init_seed(2020, True)
    return M6Rec(config, data[1]._dataset)


def first_batch(loader):
    return next(iter(loader))


# --- shapes, loss, gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "plm,segment_tokens",
    [("tiny-random-llama", 1), ("tiny-random-llama", 3), ("tiny-random-llama", "all"), ("tiny-random-bert", 1),
     ("tiny-random-bert", 3)],
)
def test_shapes_and_finite_loss(data, cache_dir, plm, segment_tokens):
    model = make_model(data, cache_dir, plm_name_or_path=plm, segment_tokens=segment_tokens)
    batch = first_batch(data[1])
    states = model(batch["item_id_list"], batch["item_length"], batch["user_id"])
    assert states.shape == (len(batch), 20, 32)
    loss = model.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert 0.5 * np.log(model.n_items) < loss.item() < 3 * np.log(model.n_items)
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(first_batch(data[3])[0])
    assert scores.shape[1] == model.n_items and torch.isfinite(scores).all()


@pytest.mark.parametrize("tuning", ["option_adapter", "prompt", "upper", "full"])
def test_gradients_reach_exactly_the_trainable_parameters(data, cache_dir, tuning):
    model = make_model(data, cache_dir, tuning=tuning, use_item_id_embedding=True)
    model.calculate_loss(first_batch(data[1])).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    upper = [f"stack.layers.{i}." for i in range(model.n_lower, model.stack.num_layers)]
    backbone_trainable = {n for n in trainable if n.startswith("stack.") and ".adapter." not in n}
    if tuning in ("option_adapter", "prompt"):
        assert backbone_trainable == set()
    elif tuning == "upper":
        assert backbone_trainable and all(n.startswith(tuple(upper)) or n.startswith("stack.norm") for n in backbone_trainable)
    else:
        assert "stack.embed_tokens.weight" in backbone_trainable
    assert any(".adapter." in n for n in trainable) == (tuning == "option_adapter")
    nonzero = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"prompt", "user_projection.weight", "item_projection.weight"} <= nonzero


def test_option_adapter_starts_as_the_pretrained_layers(data, cache_dir):
    plain = make_model(data, cache_dir, tuning="prompt")
    adapted = make_model(data, cache_dir, tuning="option_adapter")
    batch = first_batch(data[1])
    with torch.no_grad():
        a = plain(batch["item_id_list"], batch["item_length"], batch["user_id"])
        b = adapted(batch["item_id_list"], batch["item_length"], batch["user_id"])
    assert torch.allclose(a, b, atol=1e-5)


# --- caches -------------------------------------------------------------------------------------------------------
def test_cached_segment_states_equal_a_fresh_computation(data, cache_dir):
    model = make_model(data, cache_dir)
    ids = torch.tensor([1, 2, 50, model.n_items - 1])
    tokens = model.item_tokens
    length = int(tokens.lengths[ids].max())
    with torch.no_grad():
        fresh, fresh_mask = model.encoder.forward_tokens(tokens.input_ids[ids, :length], tokens.attention_mask[ids, :length])
    cached, cached_mask = model._segments(ids)
    assert torch.equal(cached_mask, fresh_mask)
    assert torch.allclose(cached, fresh, atol=1e-5)
    again = make_model(data, cache_dir)  # loads the disk cache written by the first model
    assert torch.equal(again._item_segments.states, model._item_segments.states)


def test_segment_states_stay_out_of_the_state_dict_and_checkpoint_round_trips(data, cache_dir):
    model = make_model(data, cache_dir)
    state = model.state_dict()
    assert not any(k.startswith("stack.") and ".adapter." not in k for k in state)  # frozen backbone left out
    other = make_model(data, cache_dir, learning_rate=0.5)  # same architecture
    with torch.no_grad():
        for p in other.parameters():
            if p.requires_grad:
                p.add_(1.0)
    other.load_state_dict(state)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="does not match"):
        other.load_state_dict({k: v for k, v in state.items() if k != "prompt"})
    with pytest.raises(ValueError, match="language model"):
        other.load_other_parameter({"plm_fingerprint": "some-other-model"})


# --- scoring ------------------------------------------------------------------------------------------------------
def test_full_sort_predict_agrees_with_predict(data, cache_dir):
    model = make_model(data, cache_dir)
    model.eval()
    interaction = first_batch(data[3])[0]
    with torch.no_grad():
        full = model.full_sort_predict(interaction)
        for item in (1, 7, model.n_items - 1):
            pairs = interaction.copy() if hasattr(interaction, "copy") else interaction
            pairs.interaction["item_id"] = torch.full((len(interaction),), item, dtype=torch.long)
            assert torch.allclose(model.predict(pairs), full[:, item], atol=1e-4)


def _user_vectors_before_and_after(data, cache_dir, edit):
    """User vectors of a training batch before and after ``edit(batch.interaction)``."""
    model = make_model(data, cache_dir)
    model.eval()
    batch = first_batch(data[1])
    with torch.no_grad():
        before = model._user_vectors(batch)
        edit(batch.interaction)
        return before, model._user_vectors(batch)


def test_the_target_item_does_not_leak_into_the_user(data, cache_dir):
    def change_target(fields):
        for field in ("item_id", "rating", "timestamp"):
            fields[field] = torch.flip(fields[field], dims=[0]) + 1

    before, after = _user_vectors_before_and_after(data, cache_dir, change_target)
    assert torch.equal(before, after)


def test_history_changes_the_user(data, cache_dir):
    def change_history(fields):
        fields["item_id_list"] = torch.where(fields["item_id_list"] > 0, fields["item_id_list"] % 50 + 1, 0)

    before, after = _user_vectors_before_and_after(data, cache_dir, change_history)
    assert not torch.allclose(before, after)


def test_empty_history_is_scored_from_the_prompt_and_profile(data, cache_dir):
    model = make_model(data, cache_dir)
    model.eval()
    interaction = first_batch(data[3])[0]
    interaction.interaction["item_length"] = torch.zeros_like(interaction["item_length"])
    interaction.interaction["item_id_list"] = torch.zeros_like(interaction["item_id_list"])
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
    assert torch.isfinite(scores).all()
    no_prefix = make_model(data, cache_dir, n_prompt_tokens=0, use_profile=False)
    no_prefix.eval()
    with pytest.raises(ValueError, match="empty history"):
        no_prefix.full_sort_predict(interaction)


def test_nan_scores_are_an_error(data, cache_dir):
    model = make_model(data, cache_dir)
    model.eval()
    with torch.no_grad():
        model.item_projection.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        model.full_sort_predict(first_batch(data[3])[0])


def test_nan_loss_stops_with_a_clear_message(data, cache_dir):
    model = make_model(data, cache_dir)
    trainer = M6RecTrainer(data[0], model)
    with pytest.raises(ValueError, match="last good checkpoint"):
        trainer._check_nan(torch.tensor(float("nan")))


# --- recency words ------------------------------------------------------------------------------------------------
def test_recency_buckets_name_the_gap_since_the_previous_item():
    day = 86400.0
    times = torch.tensor([[0, 60, 5 * 3600, 2.5 * day, 12 * day, 500 * day, 0], [7 * day, 0, 0, 0, 0, 0, 0]])
    index, has_phrase = recency_buckets(times, torch.tensor([6, 1]))
    words = [[RECENCY_PHRASES[i] if h else None for i, h in zip(row, hrow)]
             for row, hrow in zip(index.tolist(), has_phrase.tolist())]
    assert words[0] == [None, "minutes later", "hours later", "2 days later", "1 week later", "1 year later", None]
    assert words[1] == [None] * 7  # one item: nothing before it; padding never has a phrase


def _recency_user_states(model, batch, timestamps):
    with torch.no_grad():
        return model.forward(batch["item_id_list"], batch["item_length"], batch["user_id"], timestamps)


def test_recency_words_depend_on_gaps_only_and_reach_later_steps_only(data, cache_dir):
    model = make_model(data, cache_dir, recency_words=True).eval()
    batch = first_batch(data[1])
    times = batch["timestamp_list"].double()
    base = _recency_user_states(model, batch, times)
    assert torch.equal(base, _recency_user_states(model, batch, times + 12345.0))  # a clock shift changes no gap
    later = times.clone()
    later[:, 5:] += 40 * 86400.0  # a 40-day pause before step 5
    moved = _recency_user_states(model, batch, later)
    rows = batch["item_length"] > 5
    assert torch.equal(moved[:, :5], base[:, :5])  # earlier steps never see a later time
    assert not torch.allclose(moved[rows, 5], base[rows, 5])
    without = make_model(data, cache_dir).eval()
    with torch.no_grad():
        plain = without.forward(batch["item_id_list"], batch["item_length"], batch["user_id"])
    assert not torch.allclose(plain[rows, 5], base[rows, 5])  # the phrase is an input of the upper layers


def test_recency_words_never_read_the_target(data, cache_dir):
    model = make_model(data, cache_dir, recency_words=True).eval()
    batch = first_batch(data[1])
    with torch.no_grad():
        before = model._user_vectors(batch)
        for field in ("item_id", "rating", "timestamp"):
            batch.interaction[field] = torch.flip(batch.interaction[field], dims=[0]) + 1
        after = model._user_vectors(batch)
    assert torch.equal(before, after)
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)


def test_recency_words_need_a_time_field(data, cache_dir):
    with pytest.raises(ValueError, match="recency_words needs timestamps.*'rated_at'"):
        make_model(data, cache_dir, recency_words=True, TIME_FIELD="rated_at")


# --- bad settings -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"tuning": "lora"}, "tuning must be one of option_adapter, prompt, upper, full"),
        ({"loss_type": "BPR"}, "loss_type must be one of CE, inbatch"),
        ({"segment_tokens": 0}, "segment_tokens must be a positive integer or 'all'"),
        ({"segment_tokens": "some"}, "segment_tokens"),
        ({"late_interaction_layers": 5}, "between 1 and 4"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"item_text_fields": ["plot"]}, "plot"),
        ({"n_prompt_tokens": 500}, "n_prompt_tokens=500"),
    ],
)
def test_bad_settings_are_clear_errors(data, cache_dir, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_model(data, cache_dir, **overrides)


def test_a_typo_in_a_plugin_key_names_the_right_key(cache_dir):
    with pytest.raises(ValueError, match="did you mean 'late_interaction_layers'"):
        make_config(cache_dir, late_interaction_layer=3)


# --- whole-sequence training --------------------------------------------------------------------------------------
def test_whole_sequence_windows_cover_every_training_target_once(data):
    config, train = data[0], data[1]
    dataset = train._dataset
    keep = whole_sequence_indices(dataset.inter_feat["user_id"].numpy(), config["MAX_ITEM_LIST_LENGTH"])
    lengths = dataset.inter_feat["item_length"][torch.from_numpy(keep)]
    assert int(lengths.sum()) == len(dataset)  # one loss position per RecBole training sample
    loader = whole_sequence_loader(config, train)
    assert len(loader._dataset) == len(keep) < len(dataset)
    assert whole_sequence_indices(np.array([5] * 7 + [3] * 3), 3).tolist() == [0, 3, 6, 9]


# --- through RecBole's pipeline -----------------------------------------------------------------------------------
def test_plugin_checkpoint_reloads_with_load_data_and_model(cache_dir, tmp_path, monkeypatch):
    from recbole_m6rec.quick_start import load_data_and_model, run_pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    config = make_config(cache_dir, epochs=1, checkpoint_dir=str(tmp_path / "saved"), state="WARNING")
    outcome = run_pipeline(config, saved=True)
    (checkpoint,) = list((tmp_path / "saved").glob("M6Rec-*[0-9].pth"))  # the best model, not the resume point
    config2, model, _, _, _, test_data = load_data_and_model(str(checkpoint))
    assert type(model).__name__ == "M6Rec" and config2["plm_name_or_path"] == "tiny-random-llama"
    from recbole_m6rec.registry import get_trainer

    trainer = get_trainer(config2["MODEL_TYPE"], "M6Rec")(config2, model)
    again = trainer.evaluate(test_data, load_best_model=False)
    assert dict(again) == dict(outcome.result["test_result"])
