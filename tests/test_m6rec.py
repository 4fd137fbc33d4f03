"""M6Rec on tiny random-initialised backbones (real tokenizer, real RecBole data): shapes, gradients, caches,
scoring consistency, leakage, bad input."""

import os
import re
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from recbole_m6rec.m6rec_trainer import M6RecTrainer, whole_sequence_indices, whole_sequence_loader
from recbole_m6rec.model.settings import M6RecCTRSettings, M6RecSettings, M6RecZeroShotSettings
from recbole_m6rec.text.recency import RECENCY_PHRASES, recency_buckets

MODEL = "M6Rec"  # the model of conftest's make_config / data / make_model


def first_batch(loader):
    return next(iter(loader))


# --- shapes, loss, gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "plm,segment_tokens",
    [
        ("tiny-random-llama", 1),
        ("tiny-random-llama", 3),
        ("tiny-random-llama", "all"),
        ("tiny-random-bert", 1),
        ("tiny-random-bert", 3),
    ],
)
def test_shapes_and_finite_loss(data, make_model, plm, segment_tokens):
    model = make_model(plm_name_or_path=plm, segment_tokens=segment_tokens)
    batch = first_batch(data[1])
    states = model(batch["item_id_list"], batch["item_length"], batch["user_id"])
    assert states.shape == (len(batch), 21, 32)  # before any item, then after each of the 20 steps
    loss = model.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert 0.5 * np.log(model.n_items) < loss.item() < 3 * np.log(model.n_items)
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(first_batch(data[3])[0])
    assert scores.shape[1] == model.n_items and torch.isfinite(scores).all()


@pytest.mark.parametrize("tuning", ["option_adapter", "prompt", "upper", "full"])
def test_gradients_reach_exactly_the_trainable_parameters(data, make_model, tuning):
    model = make_model(tuning=tuning, use_item_id_embedding=True)
    model.calculate_loss(first_batch(data[1])).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    upper = [f"late.stack.layers.{i}." for i in range(model.late.n_lower, model.stack.num_layers)]
    backbone_trainable = {n for n in trainable if n.startswith("late.stack.") and ".adapter." not in n}
    if tuning in ("option_adapter", "prompt"):
        assert backbone_trainable == set()
    elif tuning == "upper":
        assert backbone_trainable and all(
            n.startswith(tuple(upper)) or n.startswith("late.stack.norm") for n in backbone_trainable
        )
    else:
        assert "late.stack.embed_tokens.weight" in backbone_trainable
    assert any(".adapter." in n for n in trainable) == (tuning == "option_adapter")
    nonzero = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"late.prompt", "user_projection.weight", "item_projection.weight"} <= nonzero


def test_option_adapter_starts_as_the_pretrained_layers(data, make_model):
    text_only = {"use_item_id_embedding": False}  # ID embeddings are drawn at random, after the adapters
    plain = make_model(tuning="prompt", **text_only)
    adapted = make_model(tuning="option_adapter", **text_only)
    batch = first_batch(data[1])
    with torch.no_grad():
        a = plain(batch["item_id_list"], batch["item_length"], batch["user_id"])
        b = adapted(batch["item_id_list"], batch["item_length"], batch["user_id"])
    assert torch.allclose(a, b, atol=1e-5)


# --- caches -------------------------------------------------------------------------------------------------------
def test_cached_segment_states_equal_a_fresh_computation(data, make_model):
    model = make_model()
    ids = torch.tensor([1, 2, 50, model.n_items - 1])
    tokens = model.item_tokens
    length = int(tokens.lengths[ids].max())
    with torch.no_grad():
        fresh, fresh_mask = model.encoder.forward_tokens(
            tokens.input_ids[ids, :length], tokens.attention_mask[ids, :length]
        )
    cached, cached_mask = model._item_segments.lookup(ids)
    assert torch.equal(cached_mask, fresh_mask)
    assert torch.allclose(cached, fresh, atol=1e-5)
    again = make_model()  # loads the disk cache written by the first model
    assert torch.equal(again._item_segments.states, model._item_segments.states)


def test_segment_states_stay_out_of_the_state_dict_and_checkpoint_round_trips(data, make_model):
    model = make_model()
    state = model.state_dict()
    assert not any(k.startswith("late.stack.") and ".adapter." not in k for k in state)  # frozen backbone left out
    other = make_model(learning_rate=0.5)  # same architecture
    with torch.no_grad():
        for p in other.parameters():
            if p.requires_grad:
                p.add_(1.0)
    other.load_state_dict(state)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="does not match"):
        other.load_state_dict({k: v for k, v in state.items() if k != "late.prompt"})
    with pytest.raises(ValueError, match="language model"):
        other.load_other_parameter({"plm_fingerprint": "some-other-model"})


class PluginFloatInputs(TorchFunctionMode):
    """Records the dtype of every floating-point tensor that the plugin's own code hands to a torch operation.

    Other libraries' internals are left out (the language model computes its rotary angles in float32 on purpose),
    and so are ``.to`` conversions (they turn a tensor into what the next operation reads) and reads of a tensor's
    attributes (``.device``, ``.shape``), which compute nothing."""

    def __init__(self):
        super().__init__()
        self.dtypes: dict[torch.dtype, str] = {}  # dtype -> the first operation that read one, and where

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        caller = _plugin_caller(sys._getframe(1))
        if caller and func is not torch.Tensor.to and getattr(func, "__name__", "") != "__get__":
            for value in tree_flatten((args, kwargs))[0]:
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    self.dtypes.setdefault(value.dtype, f"{getattr(func, '__name__', func)} at {caller}")
        return func(*args, **kwargs)


def _plugin_caller(frame) -> str | None:
    """``file:line`` of the code that called an operation when it is the plugin's, else None."""
    while frame is not None and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename:  # torch's Python wrappers
        frame = frame.f_back
    if frame is None or f"{os.sep}recbole_m6rec{os.sep}" not in frame.f_code.co_filename:
        return None
    return f"{frame.f_code.co_filename.rsplit(os.sep + 'recbole_m6rec' + os.sep, 1)[1]}:{frame.f_lineno}"


def as_float64(interaction: Interaction) -> Interaction:
    return Interaction({k: v.double() if v.is_floating_point() else v for k, v in interaction.interaction.items()})


def test_to_reaches_every_tensor_the_model_computes_with(data, make_model):
    """What the model keeps outside its parameters (cached item and profile segment states, the recency-phrase
    table, every item's vector cached for an evaluation) follows ``.to()``: after ``.to(torch.float64)`` the plugin's
    code computes with float64 tensors only, in training and in both scoring paths."""
    model = make_model(recency_words=True, use_item_id_embedding=True, unseen_item_prior="catalogue").eval()
    train, test = as_float64(first_batch(data[1])), as_float64(first_batch(data[3])[0])
    with torch.no_grad():
        model.full_sort_predict(test)  # builds the phrase table and caches every item's vector, in float32
    model.to(torch.float64)
    assert model._item_segments.states.dtype == model._user_segments.states.dtype == torch.float64
    with PluginFloatInputs() as used, torch.no_grad():
        scores = model.full_sort_predict(test)  # still in eval mode: the cache kept before the move is stale
        model.predict(train)
        loss = model.train().calculate_loss(train)
    assert set(used.dtypes) == {torch.float64}, used.dtypes
    assert scores.dtype == loss.dtype == torch.float64 and torch.isfinite(scores).all()


# --- scoring ------------------------------------------------------------------------------------------------------
def test_full_sort_predict_agrees_with_predict(data, make_model):
    model = make_model()
    model.eval()
    interaction = first_batch(data[3])[0]
    with torch.no_grad():
        full = model.full_sort_predict(interaction)
        for item in (1, 7, model.n_items - 1):
            pairs = interaction.copy() if hasattr(interaction, "copy") else interaction
            pairs.interaction["item_id"] = torch.full((len(interaction),), item, dtype=torch.long)
            assert torch.allclose(model.predict(pairs), full[:, item], atol=1e-4)


def _user_vectors_before_and_after(data, make_model, edit):
    """User vectors of a training batch before and after ``edit(batch.interaction)``."""
    model = make_model()
    model.eval()
    batch = first_batch(data[1])
    with torch.no_grad():
        before = model._user_vectors(batch)
        edit(batch.interaction)
        return before, model._user_vectors(batch)


def test_the_target_item_does_not_leak_into_the_user(data, make_model):
    def change_target(fields):
        for field in ("item_id", "rating", "timestamp"):
            fields[field] = torch.flip(fields[field], dims=[0]) + 1

    before, after = _user_vectors_before_and_after(data, make_model, change_target)
    assert torch.equal(before, after)


def test_history_changes_the_user(data, make_model):
    def change_history(fields):
        fields["item_id_list"] = torch.where(fields["item_id_list"] > 0, fields["item_id_list"] % 50 + 1, 0)

    before, after = _user_vectors_before_and_after(data, make_model, change_history)
    assert not torch.allclose(before, after)


def test_empty_history_is_scored_from_the_prompt_and_profile(data, make_model):
    model = make_model()
    model.eval()
    interaction = first_batch(data[3])[0]
    interaction.interaction["item_length"] = torch.zeros_like(interaction["item_length"])
    interaction.interaction["item_id_list"] = torch.zeros_like(interaction["item_id_list"])
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
    assert torch.isfinite(scores).all()
    no_prefix = make_model(n_prompt_tokens=0, use_profile=False)
    no_prefix.eval()
    with pytest.raises(ValueError, match="empty history"):
        no_prefix.full_sort_predict(interaction)


def test_nan_scores_are_an_error(data, make_model):
    model = make_model()
    model.eval()
    with torch.no_grad():
        model.item_projection.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        model.full_sort_predict(first_batch(data[3])[0])


def test_nan_loss_stops_with_a_clear_message(data, make_model):
    model = make_model()
    trainer = M6RecTrainer(data[0], model)
    with pytest.raises(ValueError, match="last good checkpoint"):
        trainer._check_nan(torch.tensor(float("nan")))


# --- recency words ------------------------------------------------------------------------------------------------
def test_recency_buckets_name_the_gap_since_the_previous_item():
    day = 86400.0
    times = torch.tensor([[0, 60, 5 * 3600, 2.5 * day, 12 * day, 500 * day, 0], [7 * day, 0, 0, 0, 0, 0, 0]])
    index, has_phrase = recency_buckets(times, torch.tensor([6, 1]))
    words = [
        [RECENCY_PHRASES[i] if h else None for i, h in zip(row, hrow)]
        for row, hrow in zip(index.tolist(), has_phrase.tolist())
    ]
    assert words[0] == [None, "minutes later", "hours later", "2 days later", "1 week later", "1 year later", None]
    assert words[1] == [None] * 7  # one item: nothing before it; padding never has a phrase
    index, has_phrase = recency_buckets(torch.tensor([[5.0], [9.0]]), torch.tensor([1, 1]))  # a one-step history
    assert index.shape == has_phrase.shape == (2, 1) and not has_phrase.any()


def _recency_user_states(model, batch, timestamps):
    with torch.no_grad():
        return model.forward(batch["item_id_list"], batch["item_length"], batch["user_id"], timestamps)[:, 1:]


def test_recency_words_depend_on_gaps_only_and_reach_later_steps_only(data, make_model):
    model = make_model(recency_words=True).eval()
    batch = first_batch(data[1])
    times = batch["timestamp_list"].double()  # RecBole's min-max scaled times (ml-100k: normalize_all)
    unit = model.seconds_per_time_unit  # seconds per unit of those times, from the raw range the dataset recorded
    assert 1e6 < unit < 1e9  # ml-100k spans about seven months
    base = _recency_user_states(model, batch, times)
    shifted = _recency_user_states(model, batch, times + 12345.0 / unit)
    assert torch.equal(base, shifted)  # a clock shift changes no gap
    later = times.clone()
    later[:, 5:] += 40 * 86400.0 / unit  # a 40-day pause before step 5, in the batch's units
    moved = _recency_user_states(model, batch, later)
    rows = batch["item_length"] > 5
    assert torch.equal(moved[:, :5], base[:, :5])  # earlier steps never see a later time
    assert not torch.allclose(moved[rows, 5], base[rows, 5])
    without = make_model().eval()
    with torch.no_grad():
        plain = without.forward(batch["item_id_list"], batch["item_length"], batch["user_id"])[:, 1:]
    assert not torch.allclose(plain[rows, 5], base[rows, 5])  # the phrase is an input of the upper layers


def test_recency_words_never_read_the_target(data, make_model):
    model = make_model(recency_words=True).eval()
    batch = first_batch(data[1])
    with torch.no_grad():
        before = model._user_vectors(batch)
        for field in ("item_id", "rating", "timestamp"):
            batch.interaction[field] = torch.flip(batch.interaction[field], dims=[0]) + 1
        after = model._user_vectors(batch)
    assert torch.equal(before, after)
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)


def test_recency_words_need_a_time_field(data, make_model):
    with pytest.raises(ValueError, match="time field 'rated_at'|TIME_FIELD 'rated_at'"):  # config or model names it
        make_model(recency_words=True, TIME_FIELD="rated_at")


# --- bad settings -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"tuning": "lora"}, "tuning must be one of option_adapter, prompt, upper, full"),
        ({"loss_type": "hinge"}, "loss_type must be one of CE, inbatch, BPR, sampled_softmax"),
        ({"segment_tokens": 0}, "segment_tokens must be a positive integer or 'all'"),
        ({"segment_tokens": "some"}, "segment_tokens"),
        ({"late_interaction_layers": 5}, "between 1 and 4"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"item_text_fields": ["plot"]}, "plot"),
        ({"n_prompt_tokens": 500}, "n_prompt_tokens=500"),
    ],
)
def test_bad_settings_are_clear_errors(make_model, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_model(**overrides)


def test_a_typo_in_a_plugin_key_names_the_right_key(make_config):
    with pytest.raises(ValueError, match="did you mean 'late_interaction_layers'"):
        make_config(late_interaction_layer=3)


# --- settings and their yaml ---------------------------------------------------------------------------------------
def _recbole_keys() -> set:
    import recbole
    import yaml

    folder = Path(recbole.__file__).parent / "properties"
    keys = set()
    for path in [folder / "overall.yaml", *sorted((folder / "dataset").glob("*.yaml"))]:
        keys |= set(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return keys


@pytest.mark.parametrize("settings_class", [M6RecSettings, M6RecCTRSettings, M6RecZeroShotSettings])
def test_the_yaml_holds_every_default_once_with_a_comment_and_code_holds_none(settings_class):
    """Each settings field declared by a class has a key in that model's yaml, each plugin key of the yaml is a
    field, every key line says its type and meaning, and no comment carries a measured number."""
    import yaml

    from recbole_m6rec.config import PLUGIN_PROPERTIES_DIR

    path = PLUGIN_PROPERTIES_DIR / "model" / settings_class.YAML
    text = path.read_text(encoding="utf-8")
    keys = set(yaml.safe_load(text))
    names = {f.name for f in fields(settings_class)}
    base = settings_class.__mro__[1]
    own = names - {f.name for f in fields(base)} if base is not object else names
    assert own <= keys, f"{sorted(own - keys)} have no default in {path.name}"
    assert keys - _recbole_keys() <= names, f"{sorted(keys - _recbole_keys() - names)} in {path.name} are no setting"
    for line in text.splitlines():
        if re.match(r"^\w+:", line):
            assert re.search(r"# \(\w", line), f"{path.name}: no '# (type) meaning' comment on {line!r}"
        comment = re.sub(r"arXiv \S+", "", line.split("#", 1)[1] if "#" in line else "")  # a paper id is no result
        assert not re.search(r"\d\.\d{3,}|%", comment), f"{path.name}: a measured number in {line!r}"
    with pytest.raises(ValueError, match=f"'{sorted(own)[0]}' is not in the config.*properties/model/{path.name}"):
        settings_class.from_config({name: None for name in names - {sorted(own)[0]}})


# --- whole-sequence training --------------------------------------------------------------------------------------
def _windows_of_users(users, histories, lengths, targets):
    """An Interaction of windows: ``histories`` as lists of item ids, padded to MAX_ITEM_LIST_LENGTH (20)."""
    seq = torch.zeros(len(histories), 20, dtype=torch.long)
    for row, history in enumerate(histories):
        seq[row, : len(history)] = torch.as_tensor(history)
    return Interaction(
        {
            "user_id": torch.as_tensor(users),
            "item_id_list": seq,
            "item_length": torch.as_tensor(lengths),
            "item_id": torch.as_tensor(targets),
        }
    )


def test_whole_window_training_predicts_each_item_from_the_items_before_it(make_model):
    """The loss term of window position t is the loss of predicting item t+1 (the window's target after the last
    position) from items 0..t alone: the per-position terms, read off windows cut after each position, equal
    RecBole's one-sample-per-prefix losses, whose user side never sees its target."""
    whole = make_model().eval()
    prefix = make_model(train_whole_sequences=False).eval()
    items = [int(i) for i in torch.randperm(whole.n_items - 1, generator=torch.Generator().manual_seed(0))[:13] + 1]
    user = 5
    with torch.no_grad():
        # window items[:q] with target items[q]: its loss is the mean of the terms of positions 0..q-1
        sums = [
            q * float(whole.calculate_loss(_windows_of_users([user], [items[:q]], [q], [items[q]])))
            for q in range(1, len(items))
        ]
        terms = [sums[0]] + [b - a for a, b in zip(sums, sums[1:])]
        alone = [
            float(prefix.calculate_loss(_windows_of_users([user], [items[: t + 1]], [t + 1], [items[t + 1]])))
            for t in range(len(items) - 1)
        ]
    assert terms == pytest.approx(alone, rel=1e-4, abs=1e-4)


def test_whole_sequence_windows_give_every_training_target_one_loss_term_with_its_window_history(data, make_model):
    """The trainer's windows tile each user's training samples; ``calculate_loss`` on a batch of windows equals
    RecBole's one-sample-per-prefix loss over exactly the samples they cover, each with the history before it in
    its window."""
    config, train = data[0], data[1]
    feat = train._dataset.inter_feat
    keep = whole_sequence_indices(feat["user_id"].numpy(), config["MAX_ITEM_LIST_LENGTH"])
    assert whole_sequence_indices(np.array([5] * 7 + [3] * 3), 3).tolist() == [0, 3, 6, 9]
    loader = whole_sequence_loader(config, train)
    assert len(loader._dataset) == len(keep) < len(feat)
    covered, samples = [], []  # samples: (user, history inside the window, target) of each covered training sample
    for k in keep.tolist():
        n = int(feat["item_length"][k])
        for j in range(k - n + 1, k + 1):  # a user's samples are consecutive rows, in time order
            assert feat["user_id"][j] == feat["user_id"][k]
            in_window = n - (k - j)  # the window's items before sample j's target
            history = feat["item_id_list"][j][: int(feat["item_length"][j])][-in_window:]
            samples.append((int(feat["user_id"][j]), history.tolist(), int(feat["item_id"][j])))
            covered.append(j)
    assert sorted(covered) == list(range(len(feat)))  # every training sample once

    whole = make_model().eval()
    prefix = make_model(train_whole_sequences=False).eval()
    windows = feat[torch.from_numpy(keep[:24])]
    first = sum(int(n) for n in windows["item_length"])
    users, histories, targets = zip(*samples[:first])
    reference = _windows_of_users(users, histories, [len(h) for h in histories], targets)
    with torch.no_grad():
        assert float(whole.calculate_loss(windows)) == pytest.approx(float(prefix.calculate_loss(reference)), rel=1e-5)


# --- through RecBole's pipeline -----------------------------------------------------------------------------------
def test_plugin_checkpoint_reloads_with_load_data_and_model(make_config, tmp_path, monkeypatch):
    from recbole_m6rec.quick_start import load_data_and_model, run_pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    config = make_config(epochs=1, checkpoint_dir=str(tmp_path / "saved"), state="WARNING")
    outcome = run_pipeline(config, saved=True)
    (checkpoint,) = list((tmp_path / "saved").glob("M6Rec-*[0-9].pth"))  # the best model, not the resume point
    config2, model, _, _, _, test_data = load_data_and_model(str(checkpoint))
    assert type(model).__name__ == "M6Rec" and config2["plm_name_or_path"] == "tiny-random-llama"
    from recbole_m6rec.registry import get_trainer

    trainer = get_trainer(config2["MODEL_TYPE"], "M6Rec")(config2, model)
    again = trainer.evaluate(test_data, load_best_model=False)
    assert dict(again) == dict(outcome.result["test_result"])
