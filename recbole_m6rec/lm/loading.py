"""Pretrained language models and their tokenizers, loaded offline.

Names and folders are resolved by :mod:`.resolve` (the model hub is never contacted); every load here passes
``local_files_only=True`` and ``trust_remote_code`` is never set. The ``tiny-random-*`` models are built in memory
from a config with fixed random weights, for tests.

Decoders load as ``*ForCausalLM``, encoder–decoders (T5, Flan-T5, BART) as ``*ForConditionalGeneration`` (through
``AutoModelForSeq2SeqLM``: M6Rec uses their encoder, zero-shot scoring their decoder too), encoders as the bare model.

Models come back in float32, in ``eval()`` mode, with ``attn_implementation="sdpa"``: with an explicit additive 4D
float mask ``[B, 1, T, T]`` passed straight to the decoder layers, SDPA adds the mask and does not apply its own
causal mask (it only does that when the mask is ``None``), so callers fully control who attends to whom.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

# DEFAULT_PLM and plm_fingerprint are re-exported: they have always been importable from this module.
from .fingerprint import plm_fingerprint
from .resolve import DEFAULT_PLM, KNOWN_PLMS, TOKENIZER_FILES, is_tiny_plm, resolve_plm_path
from .seq2seq import is_encoder_decoder_config

__all__ = [
    "DEFAULT_PLM",
    "KNOWN_PLMS",
    "resolve_plm_path",
    "load_tokenizer",
    "load_plm",
    "plm_fingerprint",
    "is_generative",
    "is_encoder_decoder",
]

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "sdpa"

_TINY_SEED = 0
_TINY_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4)
# the same sizes in the encoder–decoders' own terms, for the encoder and for the decoder
_TINY_T5_SIZES = dict(d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=4, num_heads=4)
_TINY_BART_SIZES = dict(
    d_model=32,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
)

# model_type values of decoder-only architectures, for folders whose config.json names no *ForCausalLM class
_DECODER_MODEL_TYPES = frozenset(
    "llama mistral mixtral qwen2 qwen2_moe qwen3 qwen3_moe gemma gemma2 gemma3_text phi phi3 gpt2 gpt_neo gpt_neox "
    "gptj opt falcon olmo olmo2 smollm3 stablelm starcoder2 bloom granite cohere".split()
)


# ------------------------------------------------------------------------------------------------------- tokenizer
def _finish_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of '{source}' has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token  # decoders: pad with eos (it is masked out anyway)
    tokenizer.padding_side = "right"
    return tokenizer


def _load_tokenizer_from(folder: Path, source: str) -> PreTrainedTokenizerBase:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"folder '{folder}' (from '{source}') has no tokenizer files; expected one of {list(TOKENIZER_FILES)}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"could not load a tokenizer from folder '{folder}' (from '{source}'): {err}") from err
    if tokenizer is None or isinstance(tokenizer, bool):
        raise ValueError(f"could not load a tokenizer from folder '{folder}' (from '{source}')")
    return _finish_tokenizer(tokenizer, source)


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Tokenizer of a known name or local folder, with a pad token and ``padding_side="right"``.

    ``tiny-random-*`` use the real ``minilm-l6`` WordPiece tokenizer.
    """
    name_or_path = str(name_or_path)
    if is_tiny_plm(name_or_path):
        return _load_tokenizer_from(resolve_plm_path("minilm-l6"), name_or_path)
    return _load_tokenizer_from(resolve_plm_path(name_or_path), name_or_path)


# ----------------------------------------------------------------------------------------------------------- model
def _is_decoder_config(config: dict) -> bool:
    architectures = config.get("architectures") or []
    return (
        bool(config.get("is_decoder"))
        or any(str(arch).endswith(("ForCausalLM", "LMHeadModel")) for arch in architectures)
        or config.get("model_type") in _DECODER_MODEL_TYPES
    )


def _build_tiny(name: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    if name == "tiny-random-llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            **_TINY_SIZES,
        )
        model_class = LlamaForCausalLM
    elif name == "tiny-random-bert":
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **_TINY_SIZES)
        model_class = BertModel
    elif name == "tiny-random-t5":
        # Flan-T5's layout (gated-GELU FFN, untied LM head); T5 starts decoding from the pad token; the WordPiece
        # tokenizer has no eos token, so its [SEP] (which ends every encoded text) plays that part
        config = T5Config(
            vocab_size=len(tokenizer),
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.sep_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            **_TINY_T5_SIZES,
        )
        model_class = T5ForConditionalGeneration
    elif name == "tiny-random-bart":
        # BART starts decoding from its eos token; here the tokenizer's [CLS] / [SEP] stand for <s> / </s>
        config = BartConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            decoder_start_token_id=tokenizer.sep_token_id,
            forced_eos_token_id=tokenizer.sep_token_id,
            **_TINY_BART_SIZES,
        )
        model_class = BartForConditionalGeneration
    else:
        raise ValueError(f"unknown tiny model '{name}'; valid: {[n for n in KNOWN_PLMS if n.startswith('tiny-')]}")
    config._attn_implementation = ATTN_IMPLEMENTATION
    with torch.random.fork_rng(devices=[]):  # deterministic weights, caller's global RNG untouched
        torch.manual_seed(_TINY_SEED)
        model = model_class(config)
    return model


def load_plm(name_or_path: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and float32 ``eval()`` model: ``*ForCausalLM`` for decoders, ``*ForConditionalGeneration`` for
    encoder–decoders (T5, BART), the bare encoder for encoders."""
    name_or_path = str(name_or_path)
    if is_tiny_plm(name_or_path):
        tokenizer = load_tokenizer(name_or_path)
        model = _build_tiny(name_or_path, tokenizer)
    else:
        folder = resolve_plm_path(name_or_path)
        tokenizer = _load_tokenizer_from(folder, name_or_path)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if is_encoder_decoder_config(config):  # checked first: an encoder–decoder's config may say is_decoder
            auto_class = AutoModelForSeq2SeqLM
        elif _is_decoder_config(config):
            auto_class = AutoModelForCausalLM
        else:
            auto_class = AutoModel
        started = time.perf_counter()
        try:
            model = auto_class.from_pretrained(
                folder,
                local_files_only=True,
                trust_remote_code=False,
                dtype=torch.float32,
                attn_implementation=ATTN_IMPLEMENTATION,
            )
        except ValueError as err:
            if auto_class is not AutoModelForSeq2SeqLM:
                raise
            raise ValueError(
                f"could not load the encoder–decoder in '{folder}' (from '{name_or_path}', model_type "
                f"{config.get('model_type')!r}): {err}. Supported encoder–decoders: T5, Flan-T5, mT5, BART"
            ) from err
        logger.info(
            "Loaded %s (%s) from %s in %.1f s",
            name_or_path,
            type(model).__name__,
            folder,
            time.perf_counter() - started,
        )
    model.to(torch.float32)
    model.eval()
    return tokenizer, model


def is_encoder_decoder(model: PreTrainedModel) -> bool:
    """True for encoder–decoder models (T5, BART): their decoder reads the encoder's output."""
    return bool(getattr(model.config, "is_encoder_decoder", False))


def is_generative(model: PreTrainedModel) -> bool:
    """True for models with a language-model head that can generate text (decoders), False for encoders."""
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate) and not can_generate():
        return False
    get_output = getattr(model, "get_output_embeddings", None)
    return callable(get_output) and get_output() is not None
