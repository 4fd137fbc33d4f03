"""The encoder of a T5- or BART-style encoder–decoder as the backbone of late interaction.

M6Rec reads segments with the **encoder** only: its lower layers encode each item text alone (cacheable), its upper
layers run across the user's segments under the caller's segment-causal mask. The decoder is left out of the
backbone (it is what zero-shot scoring uses, over the encoder's output: ``model/zero_shot.py``).

What differs from a BERT-style encoder:

* **T5** has no absolute positions: layer 0 holds a learned bias per bucket of relative distance (key - query),
  shared by every layer. It is computed here from the caller's ``position_ids`` for whatever sequence the layers
  see: within one segment in the lower layers, across the joined segments in the upper ones. Embeddings carry no
  positions; the encoder ends with an RMS norm (its ``final_layer_norm``).
* **BART** adds learned absolute positions at the input (within a segment, as BERT does), normalises the embeddings
  (``layernorm_embedding``) and has post-norm layers and no final norm (mBART's ``layer_norm`` is kept if present).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ENCODER_DECODER_FAMILIES",
    "ENCODER_DECODER_MODEL_TYPES",
    "EncoderParts",
    "encoder_parts",
    "is_encoder_decoder_config",
    "relative_position_bias",
    "AdaptedBartFFN",
]

ENCODER_DECODER_FAMILIES = "a T5/BART-style encoder–decoder (T5, Flan-T5, BART)"
"""How error messages name the supported encoder–decoders."""

ENCODER_DECODER_MODEL_TYPES = frozenset({"t5", "mt5", "bart", "mbart"})
"""``model_type`` values loaded with ``AutoModelForSeq2SeqLM`` even when config.json lacks ``is_encoder_decoder``."""


def is_encoder_decoder_config(config: dict) -> bool:
    """A config.json (as a dict) of an encoder–decoder model."""
    return bool(config.get("is_encoder_decoder")) or config.get("model_type") in ENCODER_DECODER_MODEL_TYPES


@dataclass
class EncoderParts:
    """The modules of an encoder–decoder's encoder that late interaction drives (each registered once)."""

    family: str  # "t5" or "bart"
    embed_tokens: nn.Embedding
    layers: nn.ModuleList
    norm: nn.Module
    dropout: nn.Dropout  # on the embeddings (and, for T5, after the final norm), in the encoder's train/eval mode
    embed_positions: nn.Module | None = None  # BART
    embed_norm: nn.Module | None = None  # BART


def encoder_parts(hf_model: nn.Module) -> EncoderParts | None:
    """The encoder's parts of a supported encoder–decoder model (``*ForConditionalGeneration``, ``*Model``, T5's
    ``T5EncoderModel``), or None if ``hf_model`` is not one."""
    config = getattr(hf_model, "config", None)
    get_encoder = getattr(hf_model, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else getattr(hf_model, "encoder", None)
    if config is None or encoder is None:
        return None
    blocks = getattr(encoder, "block", None)
    if blocks is not None and hasattr(encoder, "final_layer_norm"):
        attentions = [block.layer[0].SelfAttention for block in blocks]
        # T5 and mT5 keep the relative bias in layer 0 only; umT5-style per-layer biases are not supported
        if not attentions[0].has_relative_attention_bias or any(a.has_relative_attention_bias for a in attentions[1:]):
            return None
        return EncoderParts(
            family="t5",
            embed_tokens=encoder.embed_tokens,
            layers=blocks,
            norm=encoder.final_layer_norm,
            dropout=encoder.dropout,
        )
    if all(hasattr(encoder, name) for name in ("embed_tokens", "embed_positions", "layernorm_embedding", "layers")):
        return EncoderParts(
            family="bart",
            embed_tokens=encoder.embed_tokens,
            layers=encoder.layers,
            norm=encoder.layer_norm if getattr(encoder, "layer_norm", None) is not None else nn.Identity(),
            dropout=nn.Dropout(float(config.dropout)).train(encoder.training),  # BART's is functional
            embed_positions=encoder.embed_positions,
            embed_norm=encoder.layernorm_embedding,
        )
    return None


def relative_position_bias(attention: nn.Module, position_ids: torch.Tensor) -> torch.Tensor:
    """T5's relative position bias ``[B H T T]`` (``[1 H T T]`` when every row has the same positions) for query
    and key positions ``position_ids [B T]``, from ``attention`` (layer 0's self-attention, which holds the table)."""
    if position_ids.shape[0] > 1 and position_ids.stride(0) == 0:  # expanded from one row: compute it once
        position_ids = position_ids[:1]
    relative = position_ids.unsqueeze(1) - position_ids.unsqueeze(2)  # [B Tq Tk]: key position - query position
    buckets = attention._relative_position_bucket(
        relative,
        bidirectional=not attention.is_decoder,
        num_buckets=attention.relative_attention_num_buckets,
        max_distance=attention.relative_attention_max_distance,
    )
    return attention.relative_attention_bias(buckets).permute(0, 3, 1, 2)  # [B H Tq Tk]


class _InputTap(nn.Module):
    """Runs ``linear`` and keeps its input for the adapter (read once by :class:`AdaptedBartFFN`)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.last_input: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_input = x
        return self.linear(x)


class AdaptedBartFFN(nn.Module):
    """BART family: the layer's ``fc2`` returns ``fc2(h) + adapter(Z)``, Z being the FFN's input (what ``fc1`` read),
    so the post-norm block computes ``LayerNorm(Z + FFN(Z) + A(Z))``. BART's layer calls ``fc1`` then ``fc2`` with
    nothing it exposes in between; a tap on ``fc1`` hands Z over (and forgets it once read)."""

    def __init__(self, layer: nn.Module, adapter: nn.Module):
        super().__init__()
        self.fc2 = layer.fc2
        self.adapter = adapter
        tap = _InputTap(layer.fc1)
        layer.fc1 = tap
        # a plain reference: registered here too, fc1's weights would appear twice in state_dict
        self.__dict__["tap"] = tap

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z, self.tap.last_input = self.tap.last_input, None
        if z is None:
            raise RuntimeError("the adapted BART layer's fc2 ran without fc1 before it")
        return self.fc2(h) + self.adapter(z)
