"""The language-model side, one owner: find a pretrained model offline (:mod:`.resolve`, converting the SmolLM2 GGUF
with :mod:`.convert`), load it (:mod:`.loading`), know it by its contents (:mod:`.fingerprint`), split it into lower
and upper layers (:mod:`.backbone`; an encoder–decoder's encoder: :mod:`.seq2seq`), turn texts into the token ids it
reads (:mod:`.tokenize`) and id-aligned texts into cached lower-layer segment states (:mod:`.segments`, pooled by
:mod:`.pooling`, computed in batches by :mod:`.batch_encoding`)."""

from .backbone import LayerStack, additive_mask, attach_attention_lora, attach_ffn_adapters, segment_causal_mask
from .fingerprint import plm_fingerprint
from .loading import is_encoder_decoder, is_generative, load_plm, load_tokenizer
from .pooling import chunk_pool, masked_mean, pool_mask
from .resolve import DEFAULT_PLM, KNOWN_PLMS, resolve_plm_path
from .segments import ALL_TOKENS, PhraseTable, SegmentEncoder, TextSegments
from .tokenize import TokenizedTexts, continuation_ids, tokenize_phrases, tokenize_texts

__all__ = [
    "LayerStack",
    "additive_mask",
    "attach_attention_lora",
    "attach_ffn_adapters",
    "segment_causal_mask",
    "DEFAULT_PLM",
    "KNOWN_PLMS",
    "is_encoder_decoder",
    "is_generative",
    "load_plm",
    "load_tokenizer",
    "plm_fingerprint",
    "resolve_plm_path",
    "ALL_TOKENS",
    "PhraseTable",
    "SegmentEncoder",
    "TextSegments",
    "chunk_pool",
    "masked_mean",
    "pool_mask",
    "TokenizedTexts",
    "continuation_ids",
    "tokenize_phrases",
    "tokenize_texts",
]
