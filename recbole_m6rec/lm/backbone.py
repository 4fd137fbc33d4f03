"""A pretrained transformer split into lower layers (run per segment, cacheable) and upper layers (run across
segments): the multi-segment late interaction of M6-Rec.

``LayerStack`` hides the three architecture families we support behind one interface:

* Llama-style decoders (Llama, SmolLM2, Qwen2, Mistral): ``model.model.{embed_tokens, layers, norm, rotary_emb}``,
  rotary positions passed to every layer;
* BERT-style encoders (BERT, MiniLM): ``embeddings`` (absolute positions at the input) and ``encoder.layer``;
* T5/BART-style encoder–decoders (T5, Flan-T5, BART): the **encoder** only (:mod:`.seq2seq`). T5's relative position
  bias is computed for whatever sequence the layers run on (one segment, or the joined segments); BART, like BERT,
  adds absolute positions at the input. The decoder is not part of the stack.

Masks are additive float tensors ``[B, 1, T, T]`` (0 = attend, -inf = blocked), which every family accepts with the
``sdpa`` attention implementation; with an explicit mask no implicit causal mask is applied, so the caller decides
who attends to whom.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .seq2seq import ENCODER_DECODER_FAMILIES, AdaptedBartFFN, encoder_parts, relative_position_bias

__all__ = [
    "LayerStack",
    "FFNAdapter",
    "LoRALinear",
    "attach_attention_lora",
    "attach_ffn_adapters",
    "additive_mask",
    "segment_causal_mask",
]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean ``[B, T, T]`` (True = query may attend key) -> additive ``[B, 1, T, T]``."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def segment_causal_mask(segment_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Query token i may attend key token j iff j is valid and ``segment_ids[j] <= segment_ids[i]``.

    segment_ids: ``[B, T]`` non-decreasing ids (prompt/profile tokens share the lowest ids); valid: ``[B, T]`` bool.
    Every query attends at least itself-or-earlier valid keys as long as the first token is valid, so no attention
    row is fully masked (a fully masked row would make softmax produce NaN).
    """
    allowed = segment_ids.unsqueeze(2) >= segment_ids.unsqueeze(1)  # [B, Tq, Tk]
    return allowed & valid.unsqueeze(1)


class FFNAdapter(nn.Module):
    """Option-adapter: ``FFN(Z) + lambda * (act(Z W1 + b1) W2 + b2)`` with a trainable per-layer scale lambda.

    W2 starts at zero, so a freshly attached adapter leaves the pretrained layer's output unchanged.
    """

    def __init__(self, hidden_size: int, rank: int):
        super().__init__()
        self.down = nn.Linear(hidden_size, rank)
        self.up = nn.Linear(rank, hidden_size)
        self.scale = nn.Parameter(torch.ones(1))
        nn.init.normal_(self.down.weight, std=hidden_size**-0.5)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(nn.functional.gelu(self.down(z)))


class _AdaptedMLP(nn.Module):
    """Llama and T5 families: ``mlp(x) + adapter(x)`` where x is the normed input to the FFN."""

    def __init__(self, mlp: nn.Module, adapter: FFNAdapter):
        super().__init__()
        self.mlp = mlp
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + self.adapter(x)


class _AdaptedBertOutput(nn.Module):
    """BERT family: the FFN's output block ``LayerNorm(dense(h) + Z)`` becomes ``LayerNorm(dense(h) + A(Z) + Z)``."""

    def __init__(self, output: nn.Module, adapter: FFNAdapter):
        super().__init__()
        self.output = output
        self.adapter = adapter

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.output.dropout(self.output.dense(hidden_states))
        return self.output.LayerNorm(h + self.adapter(input_tensor) + input_tensor)


@dataclass(frozen=True)
class _Family:
    name: str  # "llama", "bert", "t5" or "bart"


class LayerStack(nn.Module):
    """Uniform access to embeddings, layers and final norm of a supported HF model."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        inner = getattr(hf_model, "model", None)
        if inner is not None and hasattr(inner, "layers") and hasattr(inner, "embed_tokens"):
            self.family = _Family("llama")
            self.embed_tokens = inner.embed_tokens
            self.layers = inner.layers
            self.norm = inner.norm
            self.rotary_emb = inner.rotary_emb
        elif hasattr(hf_model, "embeddings") and hasattr(hf_model, "encoder") and hasattr(hf_model.encoder, "layer"):
            self.family = _Family("bert")
            self.embeddings = hf_model.embeddings
            self.layers = hf_model.encoder.layer
            self.norm = nn.Identity()
        elif (parts := encoder_parts(hf_model)) is not None:
            self.family = _Family(parts.family)
            self.embed_tokens = parts.embed_tokens
            self.layers = parts.layers
            self.norm = parts.norm
            self.dropout = parts.dropout
            if parts.family == "bart":
                self.embed_positions = parts.embed_positions
                self.embed_norm = parts.embed_norm
        else:
            raise ValueError(
                f"unsupported language-model architecture '{type(hf_model).__name__}': M6Rec needs a Llama-style "
                f"decoder (Llama, SmolLM2, Qwen2, Mistral), a BERT-style encoder (BERT, MiniLM) or "
                f"{ENCODER_DECODER_FAMILIES}"
            )
        self.hidden_size = int(hf_model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The input word-embedding table (for a tied LM head, also the output one)."""
        return self.embeddings.word_embeddings if self.family.name == "bert" else self.embed_tokens

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B L]`` token ids -> ``[B L d]`` layer-0 input (absolute positions 0..L-1 for BERT and BART)."""
        if self.family.name == "llama":
            return self.embed_tokens(input_ids)
        if self.family.name == "bert":
            return self.embeddings(input_ids=input_ids)
        hidden = self.embed_tokens(input_ids)  # BART's table scales by sqrt(d) itself when configured to
        if self.family.name == "bart":
            hidden = self.embed_norm(hidden + self.embed_positions(input_ids))
        return self.dropout(hidden)

    def run_layers(
        self, hidden: torch.Tensor, start: int, stop: int, mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        """Run layers ``[start, stop)`` on ``hidden [B, T, d]`` with an additive mask ``[B, 1, T, T]``."""
        if start >= stop:
            return hidden
        position_embeddings = self.rotary_emb(hidden, position_ids) if self.family.name == "llama" else None
        # T5: one relative-position bias for every layer, from the positions of this very sequence
        position_bias = (
            relative_position_bias(self.layers[0].layer[0].SelfAttention, position_ids)
            if self.family.name == "t5"
            else None
        )
        for layer in self.layers[start:stop]:
            if self.family.name == "llama":
                out = layer(
                    hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=position_embeddings
                )
            elif self.family.name == "t5":
                out = layer(hidden, attention_mask=mask, position_bias=position_bias)
            else:
                out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.family.name == "t5":  # T5's encoder drops out after its final norm as well
            return self.dropout(self.norm(hidden))
        return self.norm(hidden)

    def encode_segments(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_layers: int) -> torch.Tensor:
        """Token states of independent segments after the first ``n_layers`` layers: ``[N, L] -> [N, L, d]``.

        Decoders see a causal mask within a segment (as in pretraining), encoders a bidirectional one.
        """
        valid = attention_mask.bool()
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0).expand_as(input_ids)
        if self.family.name == "llama":
            allowed = torch.tril(torch.ones(length, length, dtype=torch.bool, device=input_ids.device))
            allowed = allowed.unsqueeze(0) & valid.unsqueeze(1)
        else:
            allowed = valid.unsqueeze(1).expand(-1, length, -1)
        # Padding queries attend the first token only: keeps their rows finite (they are ignored later).
        allowed = allowed | (~valid).unsqueeze(2) & (positions == 0).unsqueeze(1)
        hidden = self.embed(input_ids)
        return self.run_layers(hidden, 0, n_layers, additive_mask(allowed, hidden.dtype), positions)


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * up(down(x))``: a low-rank update of a frozen linear layer (LoRA). ``up`` starts at
    zero, so a fresh one leaves the layer's output unchanged."""

    def __init__(self, base: nn.Module, in_features: int, out_features: int, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        self.scaling = (alpha or rank) / rank
        nn.init.normal_(self.down.weight, std=in_features**-0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.up(self.down(x))


# the attention projections LoRA adapts (query and value, as in the LoRA paper), per family: (module path, names)
_ATTENTION_PROJECTIONS = {
    "llama": ("self_attn", ("q_proj", "v_proj")),
    "bart": ("self_attn", ("q_proj", "v_proj")),
    "t5": ("layer.0.SelfAttention", ("q", "v")),
    "bert": ("attention.self", ("query", "value")),
}


def attach_attention_lora(stack: LayerStack, layer_indices: list[int], rank: int) -> nn.ModuleList:
    """Wrap the query and value projections of each listed layer's self-attention with a fresh
    :class:`LoRALinear`; returns the LoRA modules (their ``down`` / ``up`` are the trainable part)."""
    holder_path, names = _ATTENTION_PROJECTIONS[stack.family.name]
    modules = nn.ModuleList()
    for index in layer_indices:
        holder = stack.layers[index].get_submodule(holder_path)
        for name in names:
            base = getattr(holder, name)
            if isinstance(base, LoRALinear):
                raise ValueError(f"layer {index}'s {name} already has a LoRA update")
            weight = base.weight() if callable(getattr(base, "weight", None)) else base.weight  # int8 keeps a method
            lora = LoRALinear(base, weight.shape[1], weight.shape[0], rank).to(stack.word_embeddings.weight.device)
            setattr(holder, name, lora)
            modules.append(lora)
    return modules


def attach_ffn_adapters(stack: LayerStack, layer_indices: list[int], rank: int) -> nn.ModuleList:
    """Wrap the FFN of each listed layer with a fresh :class:`FFNAdapter`; returns the adapters."""
    adapters = nn.ModuleList()
    for index in layer_indices:
        layer = stack.layers[index]
        adapter = FFNAdapter(stack.hidden_size, rank)
        if stack.family.name == "llama":
            if isinstance(layer.mlp, _AdaptedMLP):
                raise ValueError(f"layer {index} already has an adapter")
            layer.mlp = _AdaptedMLP(layer.mlp, adapter)
        elif stack.family.name == "t5":  # T5LayerFF: x + FFN(norm(x)); the adapter reads norm(x) as Llama's does
            ff = layer.layer[-1]
            if isinstance(ff.DenseReluDense, _AdaptedMLP):
                raise ValueError(f"layer {index} already has an adapter")
            ff.DenseReluDense = _AdaptedMLP(ff.DenseReluDense, adapter)
        elif stack.family.name == "bart":
            if isinstance(layer.fc2, AdaptedBartFFN):
                raise ValueError(f"layer {index} already has an adapter")
            layer.fc2 = AdaptedBartFFN(layer, adapter)
        else:
            if isinstance(layer.output, _AdaptedBertOutput):
                raise ValueError(f"layer {index} already has an adapter")
            layer.output = _AdaptedBertOutput(layer.output, adapter)
        adapters.append(adapter)
    return adapters
