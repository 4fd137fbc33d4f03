"""Texts -> lower-layer segment states: each item (or user profile) text runs through the language model's first
layers on its own, once, under ``no_grad``; the result is pooled to ``segment_tokens`` vectors and cached in memory
and on disk. :meth:`SegmentEncoder.encode` is the one call from id-aligned texts to the states the upper layers read.

Two settings trade accuracy for CPU time (``docs/compression.md``): ``item_layers`` (early exit) encodes segments
with only the first k lower layers, and the layers from k up to the online ones are skipped, so the online layers
read depth-k states; ``quantize: int8`` runs those k layers with int8 weights (:mod:`.quantize`). Segments are encoded
where the language model is (a GPU if the model was put there) and their states kept on the CPU; the cache key covers
both settings and the device type, whose kernels differ in the last bits.

Decoders put a huge-norm "attention sink" on their first token (measured on SmolLM2 layer 28: norm ~22,600 vs ~500
for other tokens), so a decoder segment starts with the tokenizer's BOS (added by :mod:`.tokenize`) and pooling skips
position 0; encoders mean-pool every valid token, as sentence-transformers do (:mod:`.pooling`). The states are
computed by :mod:`.batch_encoding` and cached here, keyed by everything that changes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch.nn import functional as F

from ..cache import cache_root, load_tensors, save_tensors, source_digest, stable_hash
from .backbone import LayerStack
from .batch_encoding import encode_all, rank_and_world
from .fingerprint import plm_fingerprint
from .loading import load_plm
from .pooling import chunk_pool, masked_mean, pool_mask
from .tokenize import TokenizedTexts, tokenize_phrases, tokenize_texts

__all__ = [
    "ALL_TOKENS",
    "QUANTIZE_MODES",
    "SegmentEncoder",
    "TextSegments",
    "PhraseTable",
]

logger = logging.getLogger(__name__)

ALL_TOKENS = "all"
"""``segment_tokens: all``: every token state of a segment enters the upper layers, none is pooled."""

QUANTIZE_MODES = ("none", "int8")
"""``quantize``: none = float layers; int8 = torch's dynamic int8 quantisation of the frozen layers' linears."""


# -------------------------------------------------------------------------------------------------- the states
@dataclass
class TextSegments:
    """Id-aligned texts as the upper layers read them: their tokens and, while the lower layers are frozen, their
    cached lower-layer states. ``width`` is the number of segment slots per text."""

    encoder: SegmentEncoder
    tokens: TokenizedTexts
    width: int
    states: torch.Tensor | None = None  # [N S d]
    mask: torch.Tensor | None = None  # [N S] bool, at least one True per row

    def __len__(self) -> int:
        return len(self.tokens)

    def lookup(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment states ``[*ids S d]`` and mask ``[*ids S]``: cached, or through the lower layers (with gradients
        if the caller enables them) when nothing is cached."""
        if self.states is not None:
            if self.states.device != ids.device:  # the model moved since the states were computed
                self.states, self.mask = self.states.to(ids.device), self.mask.to(ids.device)
            return self.states[ids], self.mask[ids]
        unique, inverse = ids.reshape(-1).unique(return_inverse=True)
        rows = unique.cpu()
        length = int(self.tokens.lengths[rows].max())
        input_ids = self.tokens.input_ids[rows, :length].to(ids.device)
        attention = self.tokens.attention_mask[rows, :length].to(ids.device)
        states, mask = self.encoder.fit(*self.encoder.forward_tokens(input_ids, attention), self.width)
        return states[inverse].reshape(*ids.shape, *states.shape[1:]), mask[inverse].reshape(*ids.shape, -1)


class PhraseTable:
    """``[P d]`` one mean-pooled lower-layer vector per phrase: computed once while the lower layers are frozen,
    with gradients on every call while they train (``full`` tuning)."""

    def __init__(self, encoder: SegmentEncoder, phrases: Sequence[str], frozen: bool):
        self.encoder, self.phrases, self.frozen = encoder, tuple(phrases), frozen
        self._states: torch.Tensor | None = None

    def __call__(self, device: torch.device) -> torch.Tensor:
        if self._states is None or not self.frozen:
            with torch.set_grad_enabled(not self.frozen and torch.is_grad_enabled()):
                table = self.encoder.phrase_vectors(self.phrases)
            if not self.frozen:
                return table
            self._states = table.detach()
        if self._states.device != device:  # the model moved since the table was built
            self._states = self._states.to(device)
        return self._states


class SegmentEncoder:
    """Tokenise texts, run the lower layers, pool, cache. Holds no parameters: ``stack`` belongs to the model.

    ``n_lower_layers`` is where the online (upper) layers start; segments are encoded by the first ``item_layers`` of
    them (all of them by default; fewer = early exit, the rest skipped). ``quantize`` names how those layers were
    quantised (:meth:`load` does it), for the cache key."""

    def __init__(
        self,
        stack: LayerStack,
        tokenizer,
        *,
        n_lower_layers: int,
        segment_tokens: int | str,
        max_tokens: int,
        plm_id: str,
        cache_dir: Path | None,
        batch_size: int = 64,
        item_layers: int | None = None,
        quantize: str = "none",
    ):
        self.stack = stack
        self.tokenizer = tokenizer
        self.n_lower_layers = n_lower_layers
        self.item_layers = n_lower_layers if item_layers is None else item_layers
        self.quantize = quantize
        self.segment_tokens = segment_tokens  # a positive int or ALL_TOKENS (validated by the model's settings)
        self.max_tokens = max_tokens
        self.plm_id = plm_id
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.is_decoder = stack.family.name == "llama"
        self.bos_id = getattr(tokenizer, "bos_token_id", None) if self.is_decoder else None
        self.cache_hits = 0
        self.cache_misses = 0

    @classmethod
    def load(
        cls,
        plm_name_or_path: str,
        *,
        upper_layers: int,
        segment_tokens: int | str,
        max_tokens: int,
        cache_dir: str | None,
        batch_size: int,
        item_layers: int | None = None,
        quantize: str = "none",
    ) -> SegmentEncoder:
        """Load a language model and split it: all but its last ``upper_layers`` layers encode segments, or only the
        first ``item_layers`` of them (early exit). ``quantize: int8`` quantises those layers (:mod:`.quantize`,
        imported only then). ``cache_dir`` ~ = ``cache_root()/"text"``."""
        plm_id = plm_fingerprint(plm_name_or_path)
        tokenizer, hf_model = load_plm(plm_name_or_path)
        stack = LayerStack(hf_model)
        if upper_layers > stack.num_layers:
            raise ValueError(
                f"late_interaction_layers must be between 1 and {stack.num_layers}, the number of layers of "
                f"'{plm_name_or_path}' (got {upper_layers})"
            )
        n_lower = stack.num_layers - upper_layers
        if item_layers is not None and not 1 <= item_layers <= n_lower:
            raise ValueError(
                f"item_encoder_layers must be between 1 and {n_lower}, the lower layers of '{plm_name_or_path}' "
                f"({stack.num_layers} layers minus late_interaction_layers={upper_layers}), or ~ for all of them "
                f"(got {item_layers})"
            )
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)} (got {quantize!r})")
        if quantize == "int8":
            from .quantize import quantize_layers

            quantize_layers(stack, range(n_lower if item_layers is None else item_layers))
        return cls(
            stack,
            tokenizer,
            n_lower_layers=n_lower,
            segment_tokens=segment_tokens,
            max_tokens=max_tokens,
            plm_id=plm_id,
            cache_dir=cache_dir or cache_root() / "text",
            batch_size=batch_size,
            item_layers=item_layers,
            quantize=quantize,
        )

    @property
    def device(self) -> torch.device:
        """Where the language model is, so where segments are encoded."""
        return self.stack.word_embeddings.weight.device

    # ------------------------------------------------------------------------------------------------ tokens
    def tokenize(self, texts: Sequence[str]) -> TokenizedTexts:
        """Id-aligned texts (row 0 = padding) -> tokens, through the token cache."""
        tokens_dir = self.cache_dir / "tokens" if self.cache_dir is not None else None
        return tokenize_texts(
            texts, self.tokenizer, self.max_tokens, bos_id=self.bos_id, cache_dir=tokens_dir, tokenizer_id=self.plm_id
        )

    def phrases(self, texts: Sequence[str]) -> TokenizedTexts:
        """Texts that are not items (recency phrases, the prompt text, option words) -> tokens."""
        return tokenize_phrases(texts, self.tokenizer, self.max_tokens, bos_id=self.bos_id)

    # ------------------------------------------------------------------------------------------------ states
    def lower_layers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B L]`` tokens -> ``[B L d]`` token states after the first ``item_layers`` lower layers, each row on its
        own. Every segment the online layers read (items, profiles, phrases, the prompt's start) comes through here,
        so with early exit they all enter the online layers at the same depth."""
        return self.stack.encode_segments(input_ids, attention_mask, self.item_layers)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B L d]`` token states -> ``[B S d]`` segment states and ``[B S]`` mask."""
        keep = pool_mask(attention_mask, self.is_decoder)
        if self.segment_tokens == ALL_TOKENS:
            return hidden, keep
        return chunk_pool(hidden, keep, self.segment_tokens)

    def forward_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower layers + pooling for a batch, with gradients if the caller enables them (``full`` tuning)."""
        return self.pool(self.lower_layers(input_ids, attention_mask), attention_mask)

    def width(self, tokens: TokenizedTexts) -> int:
        """Segment slots per text: ``segment_tokens``, or every token position of ``tokens`` with ``all``."""
        return tokens.input_ids.shape[1] if self.segment_tokens == ALL_TOKENS else self.segment_tokens

    @staticmethod
    def fit(states: torch.Tensor, mask: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad ``[B S d]`` / ``[B S]`` to ``width`` slots (only ``all`` has fewer: a batch's longest text)."""
        pad = width - states.shape[1]
        return F.pad(states, (0, 0, 0, pad)), F.pad(mask, (0, pad))

    def phrase_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """``[P d]`` one mean-pooled lower-layer vector per phrase, on the model's device."""
        tokens = self.phrases(texts)
        ids, attention = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        return masked_mean(self.lower_layers(ids, attention), pool_mask(attention, self.is_decoder))

    def encode(self, texts: Sequence[str], description: str, frozen: bool = True) -> TextSegments:
        """Id-aligned texts -> :class:`TextSegments`. With ``frozen`` (the lower layers do not train) the states are
        computed once, or read from the disk cache when present and intact; otherwise they are computed per batch."""
        tokens = self.tokenize(texts)
        segments = TextSegments(self, tokens, self.width(tokens))
        if frozen:
            segments.states, segments.mask = self._cached_states(tokens, description)
        return segments

    def cache_key(self, tokens: TokenizedTexts) -> str:
        """The segment cache's key for ``tokens``: everything that changes the numbers. The model, the split, the
        tokens, the batches (a text padded to another width comes out different by up to ~1e-4 on SmolLM2), the code
        that computes the states, torch's kernels and the device type they run on (a GPU's differ from a CPU's in the
        last bits), the layers that run (early exit) and how (quantised)."""
        return stable_hash(
            [
                self.plm_id,
                self.n_lower_layers,
                self.item_layers,
                self.quantize,
                self.device.type,
                str(self.segment_tokens),
                self.is_decoder,
                tokens.input_ids.tolist(),
                tokens.attention_mask.tolist(),
                self.batch_size,
                source_digest(Path(__file__).parent),
                str(torch.__version__),
                transformers.__version__,
            ]
        )

    def _cached_states(self, tokens: TokenizedTexts, description: str) -> tuple[torch.Tensor, torch.Tensor]:
        key = self.cache_key(tokens)
        path = self.cache_dir / "segments" / f"{description}-{key[:16]}.pt" if self.cache_dir is not None else None
        if path is not None and path.exists():
            loaded, reason = load_tensors(
                path, key, ("states", "mask"), lambda tensors: self._state_problem(tensors, len(tokens))
            )
            if loaded is not None:
                logger.info("segment cache hit: %s", path)
                self.cache_hits += 1
                return loaded["states"], loaded["mask"]
            logger.warning("segment cache file %s is unusable (%s); rebuilding it", path, reason)
        states, mask = encode_all(self, tokens, description)
        self.cache_misses += 1
        if path is not None and rank_and_world()[0] == 0:  # one writer; the others hold the same states
            settings = {
                "plm": self.plm_id,
                "lower_layers": self.n_lower_layers,
                "item_layers": self.item_layers,
                "quantize": self.quantize,
                "device_type": self.device.type,
                "segment_tokens": str(self.segment_tokens),
                "max_tokens": self.max_tokens,
                "n_texts": len(tokens),
                "batch_size": self.batch_size,
                "code": source_digest(Path(__file__).parent)[:16],
                "torch": str(torch.__version__),
                "transformers": transformers.__version__,
            }
            save_tensors(path, key, {"states": states, "mask": mask}, settings)
        return states, mask

    def _state_problem(self, tensors: dict[str, torch.Tensor], n_rows: int) -> str | None:
        """Why cached segment states cannot be what :meth:`_compute` returns, or None."""
        states, mask = tensors["states"], tensors["mask"]
        if (
            states.dim() != 3
            or states.shape[0] != n_rows
            or states.shape[2] != self.stack.hidden_size
            or tuple(mask.shape) != tuple(states.shape[:2])
            or mask.dtype != torch.bool
        ):
            return f"wrong shapes {tuple(states.shape)} / {tuple(mask.shape)}"
        if not bool(mask.any(dim=1).all()) or not bool(torch.isfinite(states).all()):
            return "empty or non-finite rows"
        return None
