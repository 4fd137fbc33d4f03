"""M6Rec's accuracy levers on tiny random-initialised backbones (real tokenizer, real RecBole data): the adapter on
the cached item states, ID dropout for the text+ID hybrid, and overlapping training windows."""

import itertools

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_m6rec.m6rec_trainer import whole_sequence_indices, whole_sequence_loader
from recbole_m6rec.model.losses import WINDOW_SKIP_FIELD

MODEL = "M6Rec"  # the model of conftest's make_config / data / make_model


def first_batch(loader):
    return next(iter(loader))


# --- the adapter on the cached item states ------------------------------------------------------------------------
def test_item_adapter_starts_as_the_identity_and_feeds_both_towers(data, make_model):
    model = make_model(item_adapter_rank=16).eval()
    batch = first_batch(data[1])
    with torch.no_grad():
        with_adapter = (model(batch["item_id_list"], batch["item_length"]), model.item_vectors())
        adapter, model.item_adapter = model.item_adapter, None
        without = (model(batch["item_id_list"], batch["item_length"]), model.item_vectors())
        model.item_adapter = adapter
    for a, b in zip(with_adapter, without):
        assert torch.allclose(a, b, atol=1e-5)


def test_item_adapter_gets_gradients_and_the_cached_states_stay_fixed(data, make_model):
    model = make_model(item_adapter_rank=16)
    cached = model._item_segments.states.clone()
    model.calculate_loss(first_batch(data[1])).backward()
    adapter = {n: p for n, p in model.named_parameters() if n.startswith("item_adapter.")}
    assert set(adapter) == {
        f"item_adapter.{n}"
        for n in ("norm.weight", "norm.bias", "bottleneck.down.weight", "bottleneck.down.bias")
        + ("bottleneck.up.weight", "bottleneck.up.bias", "bottleneck.scale")
    }
    assert adapter["item_adapter.bottleneck.up.weight"].grad.abs().sum() > 0  # starts at zero, so only `up` moves first
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable
    assert not any(n.startswith("late.stack.") and ".adapter." not in n for n in trainable)
    assert torch.equal(model._item_segments.states, cached)
    with torch.no_grad():  # a trained adapter changes what both towers read
        adapter["item_adapter.bottleneck.up.weight"].normal_()
        ids = torch.tensor([1, 2, 3])
        states, _ = model._item_states(ids)
        assert not torch.allclose(states, model._item_segments.lookup(ids)[0])
        model.eval()
        batch = first_batch(data[1])
        adapted = (model(batch["item_id_list"], batch["item_length"]), model.item_vectors(ids))
        adapter, model.item_adapter = model.item_adapter, None
        plain = (model(batch["item_id_list"], batch["item_length"]), model.item_vectors(ids))
        model.item_adapter = adapter
        assert not torch.allclose(adapted[0], plain[0]) and not torch.allclose(adapted[1], plain[1])


def test_item_adapter_rank_must_be_a_whole_number(make_model):
    with pytest.raises(ValueError, match="item_adapter_rank must be an integer >= 0"):
        make_model(item_adapter_rank=-1)


# --- ID dropout ---------------------------------------------------------------------------------------------------
def test_id_dropout_drops_whole_id_vectors_in_training_only(make_model):
    model = make_model(use_item_id_embedding=True, item_id_dropout=0.5)
    ids = torch.randint(1, model.n_items, (4000,))
    plain = model.item_id_embedding(ids) * model.cold.keep_seen(ids)
    model.train()
    torch.manual_seed(0)
    dropped = model._id_embedding(ids)
    zero = dropped.abs().sum(-1) == 0
    seen = plain.abs().sum(-1) > 0  # cold items (no training interaction) have no ID vector to drop
    assert 0.45 < float(zero[seen].float().mean()) < 0.55
    assert torch.allclose(dropped[~zero], 2 * plain[~zero])  # kept vectors scaled by 1 / (1 - p)
    model.eval()
    assert torch.equal(model._id_embedding(ids), plain)


@pytest.mark.parametrize("bad", [1.0, -0.1, "half"])
def test_id_dropout_must_be_a_probability(make_model, bad):
    with pytest.raises(ValueError, match="item_id_dropout must be a number in"):
        make_model(use_item_id_embedding=True, item_id_dropout=bad)


# --- popularity bias ----------------------------------------------------------------------------------------------
def test_popularity_bias_counts_the_training_split_and_starts_at_zero(data, make_model):
    from recbole_m6rec.model.most_pop import training_item_counts

    model = make_model(popularity_bias=True).eval()
    counts = torch.as_tensor(training_item_counts(data[1]._dataset), dtype=torch.float32)
    expected = torch.log1p(counts)
    expected[0] = 0.0
    assert torch.equal(model.popularity.log_counts, expected)
    assert model.popularity.log_counts[model.cold.seen == 0].abs().sum() == 0  # no training interaction: no bias
    batch = first_batch(data[2])[0]  # a full-ranking evaluation batch
    plain = make_model().eval()
    with torch.no_grad():  # w = 0 at first: the model ranks as without it
        assert torch.allclose(model.full_sort_predict(batch), plain.full_sort_predict(batch), atol=1e-5)


def test_popularity_bias_is_learned_and_shifts_every_items_score_by_its_log_popularity(data, make_model):
    model = make_model(popularity_bias=True)
    model.calculate_loss(first_batch(data[1])).backward()
    assert model.popularity.weight.requires_grad and model.popularity.weight.grad.abs() > 0
    assert "popularity.weight" in {n for n, p in model.named_parameters() if p.requires_grad}
    assert "popularity.log_counts" not in model.state_dict()  # rebuilt from the training data, not checkpointed
    model.eval()
    batch = first_batch(data[2])[0]
    pairs = Interaction({**{k: batch[k] for k in ("item_id_list", "item_length")}, "item_id": batch["item_id"]})
    with torch.no_grad():
        model.popularity.weight.zero_()
        before = model.full_sort_predict(batch).view(-1, model.n_items), model.predict(pairs)
        model.popularity.weight.fill_(0.5)
        after = model.full_sort_predict(batch).view(-1, model.n_items), model.predict(pairs)
    log_counts = model.popularity.log_counts
    assert torch.allclose(after[0] - before[0], 0.5 * log_counts.expand_as(after[0]), atol=1e-4)
    assert torch.allclose(after[1] - before[1], 0.5 * log_counts[batch["item_id"]], atol=1e-4)  # the pair-wise path


def test_popularity_bias_needs_the_softmax_loss_and_a_split_dataset(data, make_model, make_config):
    from recbole.data import create_dataset

    from recbole_m6rec.model.popularity import PopularityBias

    negatives = {"distribution": "uniform", "sample_num": 1}
    with pytest.raises(ValueError, match="popularity_bias adds a learned popularity term .* with loss_type BPR"):
        make_model(popularity_bias=True, loss_type="BPR", train_neg_sample_args=negatives)
    with pytest.raises(ValueError, match="popularity_bias must be True or False"):
        make_model(popularity_bias="yes")
    unsplit = create_dataset(make_config())  # every interaction, validation and test targets included
    with pytest.raises(ValueError, match="popularity_bias counts the training split"):
        PopularityBias(unsplit, unsplit.item_num)


def test_predict_agrees_with_full_ranking_when_the_bias_passes_through_the_unseen_item_mixture(data, make_model):
    model = make_model(popularity_bias=True, unseen_item_prior="catalogue").eval()
    assert model.cold.prior is not None  # the slice has items without a training interaction
    batch = first_batch(data[2])[0]  # its item_id is each user's target: predict scores those
    with torch.no_grad():
        model.popularity.weight.fill_(0.5)
        full = model.full_sort_predict(batch).view(-1, model.n_items)
        targets = full[torch.arange(len(batch["item_id"])), batch["item_id"]]
        assert torch.allclose(model.predict(batch), targets, atol=1e-5)


@pytest.mark.parametrize(
    "model, message",
    [("M6RecCTR", "M6RecCTR scores each candidate alone"), ("M6RecZeroShot", "M6RecZeroShot trains nothing")],
)
def test_popularity_bias_is_refused_by_the_models_that_do_not_rank_with_the_softmax(model, message, no_foreign_argv):
    from conftest import TINY_SLICE

    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.model import settings as model_settings

    settings = {**TINY_SLICE, "popularity_bias": True, "threshold": {"rating": 4}}
    config = PluginConfig(model=model, dataset="ml-100k", config_dict=settings)
    with pytest.raises(ValueError, match=f"popularity_bias \\(got True\\).*{message}"):
        getattr(model_settings, f"{model}Settings").from_config(config)


# --- overlapping windows ------------------------------------------------------------------------------------------
def _padded(histories, width):
    seq = torch.zeros(len(histories), width, dtype=torch.long)
    for row, history in enumerate(histories):
        seq[row, : len(history)] = torch.as_tensor(history)
    return seq


@pytest.mark.parametrize("stride", [5, 10])
def test_overlapping_windows_score_every_training_target_once_with_the_longest_history(data, make_model, stride):
    """With ``window_stride`` S, the windows end every S samples and each scores only the targets no later window
    scores; ``calculate_loss`` over them equals RecBole's one-sample-per-prefix loss over exactly those samples,
    each with its history inside the window."""
    config, train = data[0], data[1]
    length = config["MAX_ITEM_LIST_LENGTH"]
    feat = train._dataset.inter_feat
    ends = whole_sequence_indices(feat["user_id"].numpy(), length, stride).tolist()
    windows = whole_sequence_loader(config, train, stride)._dataset.inter_feat
    assert torch.equal(windows["item_id"], feat["item_id"][ends])
    assert WINDOW_SKIP_FIELD not in whole_sequence_loader(config, train)._dataset.inter_feat  # tiling: no column
    scored, history = [], {}  # the samples each window scores; the items of its window before each one's target
    for end, n, skip in zip(ends, windows["item_length"].tolist(), windows[WINDOW_SKIP_FIELD].tolist()):
        for p in range(skip, n):  # position p predicts the target of sample end - (n - 1 - p)
            j = end - (n - 1 - p)
            assert feat["user_id"][j] == feat["user_id"][end]  # a user's samples are consecutive rows
            scored.append(j)
            history[j] = p + 1
    assert sorted(scored) == list(range(len(feat)))  # every training target exactly once
    tiled = whole_sequence_indices(feat["user_id"].numpy(), length)
    tiled_mean = sum(n * (n + 1) / 2 for n in feat["item_length"][tiled].tolist()) / len(feat)
    assert sum(history.values()) / len(feat) > tiled_mean  # longer histories than tiled windows give

    whole = make_model(window_stride=stride).eval()
    prefix = make_model(train_whole_sequences=False).eval()
    batch = windows[torch.arange(12)]
    chosen = scored[: int((batch["item_length"] - batch[WINDOW_SKIP_FIELD]).sum())]
    reference = Interaction(
        {
            "user_id": feat["user_id"][chosen],
            "item_id_list": _padded(
                [feat["item_id_list"][j][: int(feat["item_length"][j])][-history[j] :].tolist() for j in chosen],
                length,
            ),
            "item_length": torch.tensor([history[j] for j in chosen]),
            "item_id": feat["item_id"][chosen],
        }
    )
    with torch.no_grad():
        assert float(whole.calculate_loss(batch)) == pytest.approx(float(prefix.calculate_loss(reference)), rel=1e-5)


def test_a_stride_longer_than_a_window_tiles_the_history_instead_of_skipping_targets(data):
    """The default stride (25) is longer than a window when MAX_ITEM_LIST_LENGTH is set below it: the windows then
    tile the history, as without a stride, instead of leaving the targets between them unscored."""
    config, train = data[0], data[1]
    length = config["MAX_ITEM_LIST_LENGTH"]
    users = train._dataset.inter_feat["user_id"].numpy()
    tiled = whole_sequence_indices(users, length)
    assert whole_sequence_indices(users, length, 3 * length).tolist() == tiled.tolist()
    windows = whole_sequence_loader(config, train, 3 * length)._dataset.inter_feat
    assert WINDOW_SKIP_FIELD not in windows and int(windows["item_length"].sum()) == len(users)


def test_m6recctr_refuses_overlapping_windows(make_config):
    from recbole_m6rec.config import PluginConfig
    from recbole_m6rec.model.settings import M6RecCTRSettings

    config = PluginConfig(
        model="M6RecCTR",
        dataset="ml-100k",
        config_dict={"plm_name_or_path": "tiny-random-llama", "window_stride": 10, "show_progress": False},
    )
    with pytest.raises(ValueError, match="window_stride"):
        M6RecCTRSettings.from_config(config)


# --- LoRA on the online layers' attention ---------------------------------------------------------------------------
def test_attention_lora_starts_as_the_identity_and_trains_only_its_low_rank_parts(data, make_model):
    plain = make_model().eval()
    model = make_model(attention_lora_rank=4).eval()
    model.load_state_dict(plain.state_dict(), strict=False)  # the same adapters, prompt and heads as `plain`
    batch = first_batch(data[1])
    with torch.no_grad():
        assert torch.allclose(
            model(batch["item_id_list"], batch["item_length"]), plain(batch["item_id_list"], batch["item_length"])
        )
    model.train()
    model.calculate_loss(batch).backward()
    lora = {n for n, p in model.named_parameters() if ".q_proj." in n or ".v_proj." in n}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    n_online = model.settings.late_interaction_layers
    # per online layer: down and up of the query and of the value projection; the projections' own weights frozen
    assert {n for n in lora if n in trainable} == {n for n in lora if n.endswith((".down.weight", ".up.weight"))}
    assert len(lora & trainable) == 4 * n_online
    assert all(model.get_parameter(n).grad is not None for n in lora & trainable)
    up = next(n for n in lora & trainable if n.endswith(".up.weight"))
    assert model.get_parameter(up).grad.abs().sum() > 0  # up starts at zero, so it is what moves first
    with torch.no_grad():  # a non-zero update changes the user states
        for name in lora & trainable:
            if name.endswith(".up.weight"):
                model.get_parameter(name).normal_()
        model.eval()
        assert not torch.allclose(
            model(batch["item_id_list"], batch["item_length"]), plain(batch["item_id_list"], batch["item_length"])
        )


@pytest.mark.parametrize("value", [-1, 1.5, "four"])
def test_attention_lora_rank_must_be_a_whole_number(make_model, value):
    with pytest.raises(ValueError, match=f"attention_lora_rank must be an integer >= 0 \\(got {value!r}\\)"):
        make_model(attention_lora_rank=value)


def test_attention_lora_is_refused_where_the_attention_trains_itself(make_model):
    with pytest.raises(ValueError, match="attention_lora_rank .* tuning upper trains the attention itself"):
        make_model(attention_lora_rank=4, tuning="upper")


# --- the learning-rate schedule --------------------------------------------------------------------------------------
def test_step_size_warms_up_linearly_then_decays_with_the_inverse_square_root():
    from recbole_m6rec.m6rec_trainer import step_size_factor

    assert [step_size_factor(t, 4, "none") for t in (1, 2, 4, 5, 100)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert [step_size_factor(t, 4, "inverse_sqrt") for t in (2, 4, 16)] == [0.5, 1.0, 0.5]
    assert step_size_factor(9, 0, "inverse_sqrt") == pytest.approx(1 / 3)
    assert step_size_factor(7, 0, "none") == 1.0


def test_trainer_applies_the_schedule_and_its_step_count_survives_a_resume(data, make_model, make_config):
    from recbole_m6rec.trainer import build_trainer

    config = make_config(warmup_steps=4, learning_rate=0.01)
    model = make_model(warmup_steps=4, learning_rate=0.01)
    _, train, valid, test = data
    trainer = build_trainer(config, model, train, valid, test)
    rates = []
    for batch in itertools.islice(train, 3):
        trainer.optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        trainer.optimizer.step()
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.0025, 0.005, 0.0075])
    saved = trainer.optimizer.state_dict()
    again = build_trainer(config, make_model(warmup_steps=4, learning_rate=0.01), train, valid, test)
    again.optimizer.load_state_dict(saved)
    batch = next(iter(train))
    again.optimizer.zero_grad()
    again.model.calculate_loss(batch).backward()
    again.optimizer.step()
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # step 4 of 4: the warm-up is over


@pytest.mark.parametrize(("key", "value"), [("warmup_steps", -1), ("lr_decay", "cosine")])
def test_schedule_settings_are_checked(make_model, key, value):
    with pytest.raises(ValueError, match=f"{key}"):
        make_model(**{key: value})


def test_attention_lora_stays_float_and_trainable_under_int8(data, make_model):
    model = make_model(attention_lora_rank=4, quantize="int8")
    lora = [m for m in model.late.attention_lora]
    assert lora and all(isinstance(m.down, torch.nn.Linear) and m.down.weight.requires_grad for m in lora)
    assert all(type(m.base).__name__ == "Int8Linear" for m in lora)  # the frozen projection itself is quantised
    model.calculate_loss(first_batch(data[1])).backward()
    assert all(m.up.weight.grad is not None and m.up.weight.grad.abs().sum() > 0 for m in lora)
