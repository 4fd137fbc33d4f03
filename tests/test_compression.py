"""Compression for a CPU on tiny random-initialised backbones (real tokenizer, real RecBole data): int8 dynamic
quantisation of the frozen layers (``quantize``), early exit of the item encoding (``item_encoder_layers``), the
segment cache key, and the errors for bad values. The tiny Llama has 4 layers: 2 lower, 2 online by default."""

import pytest
import torch
from conftest import TINY_SLICE
from torch import nn
from torch.nn import functional as F

from recbole_m6rec.config import PluginConfig
from recbole_m6rec.lm import SegmentEncoder, load_plm
from recbole_m6rec.lm.quantize import Int8Linear
from recbole_m6rec.model.settings import M6RecZeroShotSettings

MODEL = "M6Rec"  # the model of conftest's make_config / data / make_model
N_LAYERS, N_LOWER = 4, 2


def first_batch(loader):
    return next(iter(loader))


def linears(model: nn.Module, kind: type) -> set[str]:
    return {name for name, module in model.named_modules() if type(module) is kind}


def expected_int8(model: nn.Module, quantized_layers: list[int]) -> set[str]:
    """Every linear of the listed backbone layers except the adapters'."""
    return {
        f"late.stack.layers.{i}.{name}"
        for i in quantized_layers
        for name, module in model.stack.layers[i].named_modules()
        if isinstance(module, (nn.Linear, Int8Linear)) and "adapter" not in name.split(".")
    }


# --- int8: what is quantised, what trains -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tuning,item_layers,quantized_layers",
    [
        ("option_adapter", None, [0, 1, 2, 3]),  # the lower layers and the frozen online ones
        ("prompt", None, [0, 1, 2, 3]),
        ("upper", None, [0, 1]),  # the online layers train: they stay float
        ("option_adapter", 1, [0, 2, 3]),  # early exit: layer 1 is skipped, so left as it is
    ],
)
def test_int8_quantises_exactly_the_frozen_layers_and_what_trains_gets_gradients(
    data, make_model, tuning, item_layers, quantized_layers
):
    model = make_model(quantize="int8", tuning=tuning, item_encoder_layers=item_layers)
    assert linears(model, Int8Linear) == expected_int8(model, quantized_layers)
    assert all(not list(model.get_submodule(name).parameters()) for name in linears(model, Int8Linear))
    float_linears = linears(model, nn.Linear)
    assert {"user_projection", "item_projection"} <= float_linears  # the heads stay float
    if tuning == "option_adapter":
        assert {f"late.stack.layers.{i}.mlp.adapter.{p}" for i in (2, 3) for p in ("down", "up")} <= float_linears
    model.calculate_loss(first_batch(data[1])).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable
    if tuning == "upper":
        assert any(n.startswith("late.stack.layers.2.") for n in trainable)  # the online layers' own weights train
    else:
        assert not any(n.startswith("late.stack.") and ".adapter." not in n for n in trainable)


def test_gradients_pass_through_quantised_online_layers_as_through_float_ones(data, make_model):
    """torch's int8 linear has no backward of its own: without Int8Linear's the soft prompt, under the two quantised
    online layers, would get no gradient at all. With it, the gradient is the float model's, up to int8 rounding."""
    batch = first_batch(data[1])
    grads = {}
    for quantize in ("none", "int8"):
        model = make_model(quantize=quantize, tuning="prompt")
        model.calculate_loss(batch).backward()
        assert model.late.prompt.grad is not None and model.late.prompt.grad.abs().sum() > 0
        grads[quantize] = model.late.prompt.grad.flatten()
    assert F.cosine_similarity(grads["none"], grads["int8"], dim=0) > 0.95


def test_int8_item_states_are_near_the_float_ones_and_checkpoints_move_between_them(data, make_model):
    plain, quantized = make_model(), make_model(quantize="int8")
    a, b = plain._item_segments.states, quantized._item_segments.states
    assert not torch.equal(a, b)
    assert ((a - b).norm(dim=-1) / a.norm(dim=-1).clamp(min=1e-6)).median() < 0.1
    # a checkpoint holds what trains, never the packed int8 weights: float-trained adapters load into int8 and back
    assert not [k for k in quantized.state_dict() if k.startswith("late.stack.") and ".adapter." not in k]
    with torch.no_grad():
        plain.late.adapters[0].up.weight.normal_()
    quantized.load_state_dict(plain.state_dict())
    assert torch.equal(quantized.late.adapters[0].up.weight, plain.late.adapters[0].up.weight)
    plain.load_state_dict(quantized.state_dict())
    quantized.eval()
    batch = first_batch(data[2])[0]
    with torch.no_grad():
        assert torch.isfinite(quantized.full_sort_predict(batch)).all()


def test_m6rec_ctr_int8_keeps_its_option_tokens_float_and_trainable(cache_dir, no_foreign_argv):
    from helpers import prepare_data
    from recbole.utils import init_seed

    from recbole_m6rec.model.m6rec_ctr import M6RecCTR

    config = PluginConfig(
        model="M6RecCTR",
        dataset="ml-100k",
        config_dict={**TINY_SLICE, "text_cache_dir": cache_dir, "quantize": "int8", "tuning": "option"},
    )
    _, train, _, _ = prepare_data(config)
    init_seed(2020, True)
    model = M6RecCTR(config, train._dataset)
    assert linears(model, Int8Linear) == expected_int8(model, [0, 1, 2, 3])
    model.calculate_loss(first_batch(train)).backward()
    assert model.options.grad is not None and model.options.grad.abs().sum() > 0
    assert model.late.prompt.grad is not None and model.late.prompt.grad.abs().sum() > 0


# --- early exit ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("item_layers", [None, 1])
def test_early_exit_states_are_the_first_k_layers_run_directly(data, make_model, item_layers):
    """Each item's cached state is the mean (past the first token, a decoder's sink) of the language model's own hidden
    states after its first k layers, run by transformers on that text alone; k = the lower layers by default."""
    model = make_model(item_encoder_layers=item_layers)
    hf_model = load_plm("tiny-random-llama")[1].eval()
    tokens = model.item_tokens
    k = N_LOWER if item_layers is None else item_layers
    for item in (1, 2, 50, model.n_items - 1):
        ids = tokens.input_ids[item : item + 1, : int(tokens.lengths[item])]
        with torch.no_grad():
            hidden = hf_model.model(input_ids=ids, output_hidden_states=True).hidden_states[k]  # [1 L d]
            other = hf_model.model(input_ids=ids, output_hidden_states=True).hidden_states[3 - k]
        state = model._item_segments.states[item, 0]
        assert torch.allclose(state, hidden[0, 1:].mean(0), atol=1e-5)
        assert not torch.allclose(state, other[0, 1:].mean(0), atol=1e-3)  # the depth matters


def test_early_exit_feeds_the_online_layers_from_depth_k_and_trains(data, make_model):
    model = make_model(item_encoder_layers=1)
    assert model.encoder.item_layers == 1 and model.late.n_lower == N_LOWER  # layer 1 skipped, online layers 2, 3
    loss = model.calculate_loss(first_batch(data[1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.late.adapters[0].up.weight.grad.abs().sum() > 0


# --- the segment cache key ----------------------------------------------------------------------------------------
def _encoder(tmp_path, **settings) -> SegmentEncoder:
    return SegmentEncoder.load(
        "tiny-random-llama",
        upper_layers=N_LAYERS - N_LOWER,
        segment_tokens=1,
        max_tokens=16,
        cache_dir=str(tmp_path),
        batch_size=8,
        **settings,
    )


def test_the_cache_key_covers_quantize_early_exit_and_the_device_type(tmp_path):
    base = _encoder(tmp_path)
    tokens = base.tokenize(["[PAD]", "Toy Story (1995). Genres: Animation.", "Heat (1995). Genres: Action."])
    key = base.cache_key(tokens)
    assert _encoder(tmp_path).cache_key(tokens) == key  # same settings, same key
    assert _encoder(tmp_path, item_layers=N_LOWER).cache_key(tokens) == key  # every lower layer, named: the default
    assert _encoder(tmp_path, item_layers=1).cache_key(tokens) != key
    assert _encoder(tmp_path, quantize="int8").cache_key(tokens) != key
    assert _encoder(tmp_path, quantize="int8", item_layers=1).cache_key(tokens) not in (
        key,
        _encoder(tmp_path, quantize="int8").cache_key(tokens),
    )
    moved = _encoder(tmp_path)
    moved.stack.to("meta")  # another device type (no GPU needed to see that the key names it)
    assert moved.device.type == "meta"
    assert moved.cache_key(tokens) != key


def test_item_states_are_encoded_where_the_model_is_and_kept_on_the_cpu(data, make_model):
    model = make_model()
    assert model.encoder.device.type == "cpu" and model._item_segments.states.device.type == "cpu"
    assert model.stack.word_embeddings.weight.device.type == "cpu"  # the stack went back after encoding


# --- bad values -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"quantize": "int4"}, r"quantize must be one of none, int8 \(got 'int4'\)"),
        ({"quantize": 8}, r"quantize must be one of none, int8 \(got 8\)"),
        ({"quantize": "int8", "tuning": "full"}, r"tuning full trains every layer.*valid with int8: option_adapter"),
        ({"item_encoder_layers": 0}, r"item_encoder_layers must be a positive integer.*\(got 0\)"),
        ({"item_encoder_layers": "half"}, r"item_encoder_layers must be a positive integer.*\(got 'half'\)"),
        ({"item_encoder_layers": 3}, r"item_encoder_layers must be between 1 and 2.*\(got 3\)"),
        ({"item_encoder_layers": 2, "late_interaction_layers": 3}, r"between 1 and 1.*\(got 2\)"),
    ],
)
def test_bad_compression_settings_are_clear_errors(make_model, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_model(**overrides)


def test_int8_on_a_gpu_is_a_clear_error(data, make_config):
    from recbole_m6rec.model.m6rec import M6Rec

    config = make_config(quantize="int8")
    config["device"] = torch.device("cuda")  # checked before anything is loaded: no GPU needed
    with pytest.raises(ValueError, match="quantize int8 runs on the CPU only.*valid on cuda: quantize none"):
        M6Rec(config, data[1]._dataset)


@pytest.mark.parametrize("overrides", [{"quantize": "int8"}, {"item_encoder_layers": 1}])
def test_zero_shot_refuses_compression_settings(overrides):
    config = PluginConfig(
        model="M6RecZeroShot", dataset="ml-100k", config_dict={**TINY_SLICE, "text_cache_dir": None, **overrides}
    )
    with pytest.raises(ValueError, match=f"{next(iter(overrides))} .*M6RecZeroShot scores with the whole float"):
        M6RecZeroShotSettings.from_config(config)
