"""Encoder–decoder backbones (T5, BART) on tiny random models with a real tokenizer: the encoder split into lower and
upper layers is the HF encoder, T5's relative positions follow the joined sequence, adapters start as identity,
M6Rec and M6RecCTR train through RecBole, and zero-shot likelihoods are the model's own, with the encoder run once per
user."""

import json
import sys

import pytest
import torch
from torch import nn

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.lm import (
    LayerStack,
    SegmentEncoder,
    additive_mask,
    attach_ffn_adapters,
    is_encoder_decoder,
    is_generative,
    load_plm,
    plm_fingerprint,
    segment_causal_mask,
)
from recbole_m6rec.model.zero_shot import EncoderDecoderScorer

FAMILIES = [
    ("tiny-random-t5", "t5", "T5ForConditionalGeneration"),
    ("tiny-random-bart", "bart", "BartForConditionalGeneration"),
]
NAMES = [name for name, _, _ in FAMILIES]
TEXTS = ["Toy Story (1995). Genres: Animation Children's Comedy", "Heat (1995)"]

pytestmark = pytest.mark.usefixtures("no_foreign_argv")  # conftest: RecBole never sees pytest's flags


@pytest.fixture(scope="module", params=NAMES)
def tiny(request):
    tokenizer, model = load_plm(request.param)
    return request.param, tokenizer, model


def _batch(tokenizer, texts=TEXTS):
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def _upper(stack: LayerStack, hidden, start, allowed, positions):
    return stack.final_norm(stack.run_layers(hidden, start, stack.num_layers, additive_mask(allowed), positions))


# ------------------------------------------------------------------------------------------------------ the stack
@pytest.mark.parametrize("name,family,model_class", FAMILIES)
def test_tiny_encoder_decoders_load_and_the_stack_holds_their_encoder_only(name, family, model_class):
    tokenizer, model = load_plm(name)
    assert type(model).__name__ == model_class and is_encoder_decoder(model) and is_generative(model)
    assert not model.training and model.config._attn_implementation == "sdpa"
    stack = LayerStack(model)
    assert stack.family.name == family and stack.num_layers == 4 and stack.hidden_size == 32
    assert stack.word_embeddings.weight is model.get_input_embeddings().weight
    # every encoder parameter, no decoder parameter, none registered twice (checkpoints drop frozen keys by name)
    encoder = {id(p) for p in model.get_encoder().parameters()}
    assert {id(p) for p in stack.parameters()} == encoder
    assert len(stack.state_dict()) == len(dict(stack.named_parameters())) + len(dict(stack.named_buffers()))
    ids, mask = _batch(tokenizer)
    assert stack.embed(ids).shape == (2, ids.shape[1], 32)
    assert stack.encode_segments(ids, mask, 2).shape == (2, ids.shape[1], 32)


@pytest.mark.parametrize("n_lower", [0, 1, 3, 4])
def test_lower_then_upper_layers_equal_the_hf_encoder(tiny, n_lower):
    """One text per row (padded batch): encode_segments through the first n layers, the rest through run_layers and
    final_norm, is the HF encoder's own output at every real token."""
    _, tokenizer, model = tiny
    stack = LayerStack(model)
    ids, mask = _batch(tokenizer)
    length = ids.shape[1]
    allowed = mask.bool().unsqueeze(1).expand(-1, length, -1)
    positions = torch.arange(length).unsqueeze(0).expand_as(ids)
    with torch.no_grad():
        expected = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        got = _upper(stack, stack.encode_segments(ids, mask, n_lower), n_lower, allowed, positions)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-5, atol=1e-5)


def _random(config_class, model_class, **sizes):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model_class(config_class(vocab_size=100, attn_implementation="sdpa", **sizes)).eval()


def test_mt5_and_mbart_take_the_same_path_and_umt5_is_refused():
    """mT5 is T5's structure and mBART is BART's with a final encoder norm: the split equals their encoders too. umT5
    keeps a relative bias in every layer, which the stack does not model: it is refused, naming what is supported."""
    from transformers import (
        MBartConfig,
        MBartForConditionalGeneration,
        MT5Config,
        MT5ForConditionalGeneration,
        UMT5Config,
        UMT5ForConditionalGeneration,
    )

    t5_sizes = dict(d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4, decoder_start_token_id=0)
    bart_sizes = dict(d_model=32, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4)
    bart_sizes.update(decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64)
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    allowed = mask.bool().unsqueeze(1).expand(-1, 9, -1)
    positions = torch.arange(9).unsqueeze(0).expand_as(ids)
    for model, family in [
        (_random(MT5Config, MT5ForConditionalGeneration, **t5_sizes), "t5"),
        (_random(MBartConfig, MBartForConditionalGeneration, **bart_sizes), "bart"),
    ]:
        stack = LayerStack(model)
        assert stack.family.name == family
        with torch.no_grad():
            expected = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            got = _upper(stack, stack.encode_segments(ids, mask, 1), 1, allowed, positions)
        torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="UMT5ForConditionalGeneration.*T5/BART-style"):
        LayerStack(_random(UMT5Config, UMT5ForConditionalGeneration, **t5_sizes))


def test_t5_upper_layers_take_the_relative_positions_of_the_joined_sequence():
    """Two segments joined and attending each other in every layer equal T5's encoder on the joined text (T5 has no
    absolute positions at the input), so the relative-position bias covers the joined sequence, not each segment;
    under a segment-causal mask the first segment still reads as it does alone."""
    tokenizer, model = load_plm("tiny-random-t5")
    stack = LayerStack(model)
    first = tokenizer(TEXTS[0])["input_ids"]
    second = tokenizer(TEXTS[1])["input_ids"]
    joined = torch.tensor([first + second])
    length = joined.shape[1]
    positions = torch.arange(length).unsqueeze(0)
    segments = torch.tensor([[0] * len(first) + [1] * len(second)])
    valid = torch.ones(1, length, dtype=torch.bool)
    with torch.no_grad():
        hidden = stack.embed(joined)
        both_ways = _upper(stack, hidden, 0, valid.unsqueeze(1).expand(-1, length, -1), positions)
        torch.testing.assert_close(both_ways, model.get_encoder()(input_ids=joined).last_hidden_state)

        n_lower = 2
        lower = torch.cat(
            [
                stack.encode_segments(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long), n_lower)
                for s in (first, second)
            ],
            dim=1,
        )
        causal = _upper(stack, lower, n_lower, segment_causal_mask(segments, valid), positions)
        alone = model.get_encoder()(input_ids=torch.tensor([first])).last_hidden_state
        second_alone = model.get_encoder()(input_ids=torch.tensor([second])).last_hidden_state
    torch.testing.assert_close(causal[:, : len(first)], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(causal[:, len(first) :], second_alone, atol=1e-3)  # the second one reads the first


def test_adapters_start_as_identity_then_act_and_train(tiny):
    name, tokenizer, _ = tiny
    plain, adapted = LayerStack(load_plm(name)[1]), LayerStack(load_plm(name)[1])  # the shared fixture stays as it is
    adapters = attach_ffn_adapters(adapted, [2, 3], rank=8)
    assert len(adapters) == 2 and all(
        any(a is m for m in adapted.layers[i].modules()) for i, a in zip([2, 3], adapters)
    )
    with pytest.raises(ValueError, match="layer 2 already has an adapter"):
        attach_ffn_adapters(adapted, [2], rank=8)
    # each weight under one name: checkpoints drop the frozen backbone's keys by their parameter names
    assert set(adapted.state_dict()) == set(dict(adapted.named_parameters())) | set(dict(adapted.named_buffers()))
    ids, mask = _batch(tokenizer)
    length = ids.shape[1]
    allowed = mask.bool().unsqueeze(1).expand(-1, length, -1)
    positions = torch.arange(length).unsqueeze(0).expand_as(ids)

    def run(stack):
        return _upper(stack, stack.encode_segments(ids, mask, 2), 2, allowed, positions)

    with torch.no_grad():
        before = run(plain)
        torch.testing.assert_close(run(adapted), before, rtol=0, atol=0)  # zero up-projection: exactly the layer
    out = run(adapted)
    out.pow(2).sum().backward()
    assert all(a.up.weight.grad is not None and a.up.weight.grad.abs().sum() > 0 for a in adapters)
    with torch.no_grad():
        for adapter in adapters:
            nn.init.normal_(adapter.up.weight, std=0.5)
        assert not torch.allclose(run(adapted), before, atol=1e-3)  # the adapter is in the layer's path


def test_unsupported_architectures_name_the_supported_families():
    _, bert = load_plm("tiny-random-bert")
    with pytest.raises(ValueError) as info:
        LayerStack(bert.encoder)  # an encoder stack without its embeddings: no family
    message = str(info.value)
    assert "BertEncoder" in message
    assert "Llama-style decoder" in message and "BERT-style encoder" in message and "T5/BART-style" in message


def test_a_local_t5_folder_loads_as_a_seq2seq_model(tmp_path):
    """A T5 saved as a plain Hugging Face folder loads through AutoModelForSeq2SeqLM, offline, with its weights."""
    tokenizer, model = load_plm("tiny-random-t5")
    folder = tmp_path / "t5"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["is_encoder_decoder"] is True
    _, loaded = load_plm(str(folder))
    assert type(loaded).__name__ == "T5ForConditionalGeneration" and not loaded.training
    reference = model.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in loaded.state_dict().items())
    assert plm_fingerprint(str(folder)).startswith("t5-")
    encoder = SegmentEncoder.load(
        str(folder), upper_layers=2, segment_tokens=2, max_tokens=16, cache_dir=None, batch_size=2
    )
    assert encoder.stack.family.name == "t5" and not encoder.is_decoder and encoder.bos_id is None
    encoder.cache_dir = None
    segments = encoder.encode(["[PAD]", *TEXTS], "items")
    assert segments.states.shape == (3, 2, 32) and torch.isfinite(segments.states).all()


# ----------------------------------------------------------------------------------------- M6Rec through RecBole
SLICE = {
    "user_inter_num_interval": "[0,25]",
    "MAX_ITEM_LIST_LENGTH": 10,
    "epochs": 1,
    "show_progress": False,
    "state": "ERROR",
}


@pytest.mark.parametrize(
    "model,plm,extra",
    [
        ("M6Rec", "tiny-random-t5", {"segment_tokens": 2}),
        ("M6RecCTR", "tiny-random-t5", {}),
    ],
)
def test_one_epoch_through_recbole(model, plm, extra, tmp_path, monkeypatch):
    from recbole_m6rec.checkpoint import load_recbole_checkpoint
    from recbole_m6rec.quick_start import run_pipeline

    monkeypatch.chdir(tmp_path)
    config = PluginConfig(
        model=model,
        dataset="ml-100k",
        config_dict={
            **SLICE,
            **extra,
            "plm_name_or_path": plm,
            "checkpoint_dir": str(tmp_path / "saved"),
            "text_cache_dir": str(tmp_path / "cache"),
        },
    )
    outcome = run_pipeline(config, saved=True)
    assert outcome.extra["epochs_run"] == 1
    test = outcome.result["test_result"]
    metric = "auc" if model == "M6RecCTR" else "ndcg@10"
    assert 0 <= test[metric] <= 1
    state = load_recbole_checkpoint(outcome.checkpoint_file)["state_dict"]
    ups = [value for key, value in state.items() if key.startswith("late.adapters.") and key.endswith("up.weight")]
    assert len(ups) == 2  # option-adapters on the encoder's two upper layers
    assert all(torch.isfinite(up).all() and up.abs().sum() > 0 for up in ups)  # they trained, from zero
    assert not any(key.startswith("late.stack.") and ".adapter." not in key for key in state)  # frozen encoder left out


# ------------------------------------------------------------------------------------------------------ zero-shot
def test_zero_shot_scores_are_the_decoders_mean_log_probability(tiny):
    name, tokenizer, model = tiny
    prefix = tokenizer("A user watched Toy Story and Heat.")["input_ids"]
    candidates = [
        tokenizer(text, add_special_tokens=False)["input_ids"]
        for text in [" Fargo (1996)", " Star Wars (1977). Genres: Action Sci-Fi", " Casino", " a"]
    ]
    with torch.no_grad():  # the model's own loss: mean cross-entropy of the labels, decoder input shifted by the model
        direct = torch.stack(
            [-model(input_ids=torch.tensor([prefix]), labels=torch.tensor([c])).loss for c in candidates]
        )
    scorer = EncoderDecoderScorer(model, batch_size=3)  # two chunks, the second padded differently
    shared, uncached = scorer.score(prefix, candidates), scorer.score(prefix, candidates, use_cache=False)
    torch.testing.assert_close(shared, direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(uncached, direct, rtol=1e-5, atol=1e-5)
    assert len(set(shared.tolist())) == 4


def test_zero_shot_runs_the_encoder_once_per_prefix():
    tokenizer, model = load_plm("tiny-random-t5")
    calls = []
    model.get_encoder().register_forward_hook(lambda module, args, out: calls.append(1))
    prefix = tokenizer("A user watched Heat.")["input_ids"]
    candidates = [tokenizer(f" item {i}", add_special_tokens=False)["input_ids"] for i in range(7)]
    EncoderDecoderScorer(model, batch_size=3).score(prefix, candidates)  # three chunks
    assert len(calls) == 1


def test_zero_shot_with_t5_runs_through_recbole_evaluation(tmp_path, monkeypatch):
    from recbole.data import create_dataset, data_preparation

    from recbole_m6rec.model.zero_shot import M6RecZeroShot
    from recbole_m6rec.quick_start import run_pipeline

    monkeypatch.chdir(tmp_path)
    settings = {
        **SLICE,
        "user_inter_num_interval": "[0,20]",  # 32 users: one encoder pass and one decoder pass per user
        "plm_name_or_path": "tiny-random-t5",
        "checkpoint_dir": str(tmp_path),
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni20", "group_by": "user"},
    }
    config = PluginConfig(model="M6RecZeroShot", dataset="ml-100k", config_dict=settings)
    argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        train, _, _ = data_preparation(config, create_dataset(config))
        zero_shot = M6RecZeroShot(config, train._dataset)
    finally:
        sys.argv = argv
    assert isinstance(zero_shot.scorer, EncoderDecoderScorer) and zero_shot.bos == []
    prefix = zero_shot.prefix_for(torch.tensor([1, 2, 3]), 3)
    sep, cls = zero_shot.tokenizer.sep_token_id, zero_shot.tokenizer.cls_token_id
    assert prefix[0] == cls and prefix[-1] == sep  # the encoder reads the tokenizer's special tokens
    outcome = run_pipeline(PluginConfig(model="M6RecZeroShot", dataset="ml-100k", config_dict=settings))
    assert outcome.extra["epochs_run"] == 0
    assert 0 <= outcome.result["test_result"]["ndcg@10"] <= 1
