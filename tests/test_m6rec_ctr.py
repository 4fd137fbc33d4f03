"""M6RecCTR on tiny random-initialised backbones (real tokenizer, real RecBole labelled data): the option classifier,
what the score depends on, exact whole-sequence training, late interaction vs the full model, tuning modes."""

import pytest
import torch
from conftest import TINY_SLICE
from recbole.data import create_dataset

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.lm import additive_mask, load_plm, pool_mask, segment_causal_mask
from recbole_m6rec.model.m6rec import M6Rec
from recbole_m6rec.model.m6rec_ctr import M6RecCTR

MODEL = "M6RecCTR"  # the model of conftest's make_config / data / make_model


def train_batch(data):
    return next(iter(data[1]))


def eval_batch(data):
    return next(iter(data[2]))[0]


def test_the_split_is_labelled_and_the_model_is_point_wise(data):
    batch = eval_batch(data)
    assert set(batch["label"].unique().tolist()) == {0.0, 1.0}  # threshold {rating: 4} from M6RecCTR.yaml
    assert data[0]["eval_args"]["mode"] == {"valid": "labeled", "test": "labeled"}


# --- the option classifier --------------------------------------------------------------------------------------
def test_option_logits_are_the_dot_product_with_the_option_tokens(data, make_model):
    model = make_model().eval()
    tokenizer = load_plm("tiny-random-llama")[0]
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" no", " yes")]
    assert torch.equal(model.options, model.stack.word_embeddings.weight[ids])  # starts as the LM's word vectors
    with torch.no_grad():
        model.options.add_(torch.randn_like(model.options))  # any option vectors, not just the initial ones
        batch = eval_batch(data)
        seq, length, item = batch["item_id_list"], batch["item_length"], batch["item_id"]
        users, labels, times = model._user_ids(batch), batch["label_list"], model._times(batch)
        states = model._candidate_states(seq, length, item, users, labels, times)
        final = states[torch.arange(len(seq)), length]
        expected = torch.einsum("bd,cd->bc", final, model.options)
        logits = model(seq, length, item, users, labels, times)
        scores = model.predict(batch)
    assert logits.shape == (len(seq), 2)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores, torch.softmax(expected, -1)[:, 1], rtol=1e-5, atol=1e-6)
    assert not any(name.startswith(("user_projection", "item_projection")) for name, _ in model.named_parameters())


def test_the_candidate_and_the_history_both_change_the_score(data, make_model):
    model = make_model().eval()
    batch = eval_batch(data)
    seq, length, item = batch["item_id_list"][:8], batch["item_length"][:8], batch["item_id"][:8]
    users = batch["user_id"][:8] if model.user_texts is not None else None
    labels, times = batch["label_list"][:8], (batch["timestamp_list"][:8], batch["timestamp"][:8])
    forward = lambda s, n, i: model(s, n, i, users, labels, times)  # noqa: E731
    with torch.no_grad():
        base = forward(seq, length, item)
        other_candidate = forward(seq, length, (item % (model.n_items - 1)) + 1)
        other_history = seq.clone()
        other_history[:, 0] = (seq[:, 0] % (model.n_items - 1)) + 1
        changed_history = forward(other_history, length, item)
        padding_changed = seq.clone()
        padding_changed[torch.arange(8), length.clamp(max=seq.shape[1] - 1)] = 7  # beyond the history: ignored
        same = forward(padding_changed, length, item)
    differs = lambda a, b: (a - b).abs().amax(dim=1) > 1e-6  # noqa: E731
    assert bool(differs(base, other_candidate).all())
    assert bool(differs(base, changed_history)[length > 0].all())
    full = length == seq.shape[1]
    torch.testing.assert_close(same[~full], base[~full])


@pytest.mark.parametrize("recency_words", [False, True])
def test_whole_sequence_loss_equals_scoring_each_prefix(data, make_model, recency_words):
    """One segment-causal pass over a window gives exactly the logits of every (prefix, next item) sample; with
    recency words each candidate's phrase is the gap from the item before it to its own time."""
    model = make_model(recency_words=recency_words).eval()
    batch = train_batch(data)
    row = int(torch.argmax(batch["item_length"]))
    seq, length = batch["item_id_list"][row : row + 1], batch["item_length"][row : row + 1]
    users = batch["user_id"][row : row + 1] if model.user_texts is not None else None
    labels = batch["label_list"][row : row + 1]
    times = batch["timestamp_list"][row : row + 1]
    window_times = (times, batch["timestamp"][row : row + 1])
    with torch.no_grad():
        states = model._candidate_states(seq, length, batch["item_id"][row : row + 1], users, labels, window_times)
        whole = model.option_logits(states[0])  # [n+1 C]
        for t in (1, int(length) // 2, int(length) - 1):
            prefix, prefix_labels, prefix_times = (
                torch.zeros_like(seq),
                torch.zeros_like(labels),
                torch.zeros_like(times),
            )
            prefix[0, :t], prefix_labels[0, :t], prefix_times[0, :t] = seq[0, :t], labels[0, :t], times[0, :t]
            shown = (prefix_times, times[0, t : t + 1])
            alone = model(prefix, torch.tensor([t]), seq[0, t : t + 1], users, prefix_labels, shown)
            torch.testing.assert_close(alone[0], whole[t], rtol=1e-4, atol=1e-5)
    if recency_words:  # the time the candidate is shown is an input
        later = (times, batch["timestamp"][row : row + 1] + 90 * 86400.0 / model.seconds_per_time_unit)  # 90 days
        with torch.no_grad():
            moved = model(seq, length, batch["item_id"][row : row + 1], users, labels, later)
        assert not torch.allclose(moved, whole[int(length)].unsqueeze(0))
        assert torch.isfinite(model.calculate_loss(batch))


def test_history_labels_reach_strictly_later_steps_only(data, make_model):
    """The outcome of item t changes the scores of the candidates entered after its second, never its own nor those
    of its second (no label leakage, and no outcome entered together with the candidate)."""
    model = make_model().eval()
    assert model.outcome_tokens is not None
    batch = train_batch(data)
    times_all, lengths = batch["timestamp_list"], batch["item_length"]
    # a window with two or more steps in one second, followed by later steps
    same = (times_all[:, 1:] == times_all[:, :-1]) & (torch.arange(1, times_all.shape[1]) < lengths.unsqueeze(1) - 1)
    row = int(torch.argmax(same.sum(dim=1)))
    t = int(torch.nonzero(same[row])[0])  # steps t and t + 1 share a second
    end = t
    while end + 1 < int(lengths[row]) and times_all[row, end + 1] == times_all[row, t]:
        end += 1
    seq, length = batch["item_id_list"][row : row + 1], lengths[row : row + 1]
    users = batch["user_id"][row : row + 1] if model.user_texts is not None else None
    labels, times = batch["label_list"][row : row + 1], (times_all[row : row + 1], batch["timestamp"][row : row + 1])
    candidate = batch["item_id"][row : row + 1]
    flipped = labels.clone()
    flipped[0, t] = 1 - flipped[0, t]
    with torch.no_grad():
        before = model.option_logits(model._candidate_states(seq, length, candidate, users, labels, times)[0])
        after = model.option_logits(model._candidate_states(seq, length, candidate, users, flipped, times)[0])
    assert end > t and end + 1 <= int(length)  # a real same-second group, and a later step
    torch.testing.assert_close(after[: end + 1], before[: end + 1])  # t itself and the rest of its second
    assert bool(((after[end + 1 :] - before[end + 1 :]).abs().amax(dim=1) > 1e-6).all())


def test_late_interaction_equals_the_full_model_when_every_layer_is_online(data, make_model):
    """All layers online, every token kept: the score is the HF model's own forward over the joined segments."""
    model = make_model(
        late_interaction_layers=4,
        segment_tokens="all",
        n_prompt_tokens=0,
        use_profile=False,
        tuning="option",
        history_labels=False,
    ).eval()
    assert model.late.n_lower == 0
    _, hf = load_plm("tiny-random-llama")
    wanted = hf.model.state_dict()
    hf.model.load_state_dict({k: v for k, v in model.stack.state_dict().items() if k in wanted})
    batch = eval_batch(data)
    with torch.no_grad():
        scores = model.predict(batch)[:4]
        for b in range(4):
            n = int(batch["item_length"][b])
            items = torch.cat([batch["item_id_list"][b, :n], batch["item_id"][b : b + 1]])
            ids = model.item_tokens.input_ids[items]  # [n+1 L]
            valid = pool_mask(model.item_tokens.attention_mask[items], skip_first=True)  # M6Rec keeps BOS out
            width = model._item_segments.width
            ids = torch.nn.functional.pad(ids, (0, width - ids.shape[1]))
            valid = torch.nn.functional.pad(valid, (0, width - valid.shape[1]))
            segments = torch.arange(1, n + 2).repeat_interleave(ids.shape[1]).unsqueeze(0)
            mask = additive_mask(segment_causal_mask(segments, valid.reshape(1, -1)))
            out = hf.model(
                inputs_embeds=hf.model.embed_tokens(ids.reshape(1, -1)),
                attention_mask=mask,
                position_ids=torch.arange(ids.numel()).unsqueeze(0),
            ).last_hidden_state
            expected = torch.softmax(out[0, -1] @ model.options.t(), -1)[1]
            torch.testing.assert_close(scores[b], expected, rtol=1e-4, atol=1e-5)


# --- tuning modes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tuning,adapters,options_trained",
    [
        ("option_adapter", True, True),
        ("option", False, True),
        ("prompt", False, False),
        ("upper", False, True),
    ],
)
def test_gradients_reach_exactly_the_trainable_parameters(data, make_model, tuning, adapters, options_trained):
    model = make_model(tuning=tuning)
    model.calculate_loss(train_batch(data)).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.grad is not None}
    assert any(".adapter." in n for n in trainable) == adapters
    assert ("options" in trainable) == options_trained
    assert "late.prompt" in trainable
    assert any(n.startswith("late.stack.layers") and ".adapter." not in n for n in trainable) == (tuning == "upper")


def test_a_training_step_lowers_the_loss(data, make_model):
    model = make_model()
    batch = train_batch(data)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]


# --- bad input --------------------------------------------------------------------------------------------------
def test_without_labels_it_names_the_threshold_setting(make_config):
    config = make_config(
        threshold=None,
        **{
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
            "metrics": ["NDCG"],
            "valid_metric": "NDCG@10",
        },
    )
    dataset = create_dataset(config)
    with pytest.raises(ValueError, match="threshold"):
        M6RecCTR(config, dataset)


def test_option_tuning_is_refused_for_the_retrieval_model(cache_dir):
    config = PluginConfig(
        model="M6Rec", dataset="ml-100k", config_dict={**TINY_SLICE, "text_cache_dir": cache_dir, "tuning": "option"}
    )
    dataset = create_dataset(config)
    with pytest.raises(
        ValueError, match="tuning must be one of option_adapter, prompt, upper, full \\(got 'option'\\)"
    ):
        M6Rec(config, dataset)


def test_history_labels_without_a_time_field_name_the_fix_before_the_backbone_loads(data):
    config, train = data[0], data[1]
    saved = config["TIME_FIELD"]
    config["TIME_FIELD"] = "rated_at"  # a name the dataset does not hold (RecBole's own Config does not check it)
    try:
        with pytest.raises(
            ValueError, match="history_labels needs timestamps.*TIME_FIELD 'rated_at'.*history_labels: F"
        ):
            M6RecCTR(config, train._dataset)
    finally:
        config["TIME_FIELD"] = saved


def test_option_words_must_be_distinct(data, make_model):
    with pytest.raises(ValueError, match="share their first token"):
        make_model(option_words=[" yes", " yes"])


def test_unseen_item_prior_is_refused_by_the_point_wise_model(data, make_model):
    with pytest.raises(ValueError, match="unseen_item_prior \\(got 'catalogue'\\) re-weights M6Rec's softmax"):
        make_model(unseen_item_prior="catalogue")


def test_full_ranking_is_refused_with_the_modes_that_work(data, make_model):
    model = make_model()
    with pytest.raises(NotImplementedError, match="labeled"):
        model.full_sort_predict(eval_batch(data))
