"""Lower-layer segment states: each item (or user profile) text runs through the language model's first layers on
its own, once, under ``no_grad``; the result is pooled to ``segment_tokens`` vectors and cached in memory and on disk.

Decoders put a huge-norm "attention sink" on their first token (measured on SmolLM2 layer 28: norm ~22,600 vs ~500
for other tokens), so a decoder segment gets the tokenizer's BOS prepended and pooling skips position 0; encoders
mean-pool every valid token, as sentence-transformers do.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from ..cache import atomic_torch_save, stable_hash, tensor_checksum
from ..text.tokenize import TokenizedTexts, tokenize_texts
from .backbone import LayerStack

__all__ = ["SegmentStates", "SegmentEncoder", "parse_segment_tokens"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the payload carries a content checksum and its settings
ALL_TOKENS = "all"


def parse_segment_tokens(value) -> int | str:
    """``segment_tokens`` is a positive int (pooled vectors per segment) or ``"all"`` (every token survives)."""
    if isinstance(value, str) and value.strip().lower() == ALL_TOKENS:
        return ALL_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"segment_tokens must be a positive integer or 'all' (got {value!r})")
    return value


@dataclass
class SegmentStates:
    states: torch.Tensor  # [N S d]
    mask: torch.Tensor  # [N S] bool, at least one True per row

    def __len__(self) -> int:
        return self.states.shape[0]


def _chunk_pool(hidden: torch.Tensor, keep: torch.Tensor, n_chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split each row's kept tokens into ``n_chunks`` contiguous chunks and mean-pool each. ``[B L d] -> [B n d]``."""
    counts = keep.sum(dim=1, keepdim=True).clamp(min=1)  # [B 1]
    rank = keep.long().cumsum(dim=1) - 1  # index of a kept token among kept tokens
    chunk = torch.where(keep, rank * n_chunks // counts, torch.full_like(rank, n_chunks))  # [B L]; n_chunks = drop
    one_hot = torch.nn.functional.one_hot(chunk, n_chunks + 1)[..., :n_chunks].to(hidden.dtype)  # [B L n]
    sums = torch.einsum("bln,bld->bnd", one_hot, hidden)
    sizes = one_hot.sum(dim=1)  # [B n]
    pooled = sums / sizes.clamp(min=1).unsqueeze(-1)
    return pooled, sizes > 0


class SegmentEncoder:
    """Tokenise texts, run the lower layers, pool, cache. Holds no parameters of its own."""

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
    ):
        self.stack = stack
        self.tokenizer = tokenizer
        self.n_lower_layers = n_lower_layers
        self.segment_tokens = parse_segment_tokens(segment_tokens)
        self.max_tokens = max_tokens
        self.plm_id = plm_id
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.is_decoder = stack.family.name == "llama"
        self.bos_id = getattr(tokenizer, "bos_token_id", None) if self.is_decoder else None
        self.cache_hits = 0
        self.cache_misses = 0

    # ------------------------------------------------------------------------------------------------ tokens
    def tokenize(self, texts: Sequence[str]) -> TokenizedTexts:
        tokens = tokenize_texts(
            texts, self.tokenizer, self.max_tokens, cache_dir=self._subdir("tokens"), tokenizer_id=self.plm_id
        )
        if self.bos_id is None or bool((tokens.input_ids[:, 0] == self.bos_id).all()):
            return tokens
        bos = torch.full((len(tokens), 1), self.bos_id, dtype=tokens.input_ids.dtype)
        return TokenizedTexts(
            torch.cat([bos, tokens.input_ids], dim=1),
            torch.cat([torch.ones_like(bos), tokens.attention_mask], dim=1),
        )

    def pool_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Tokens that enter pooling: valid ones, minus a decoder's sink at position 0 when anything else is left."""
        keep = attention_mask.bool().clone()
        if self.is_decoder:
            rest = keep.clone()
            rest[:, 0] = False
            has_rest = rest.any(dim=1, keepdim=True)
            keep = torch.where(has_rest, rest, keep)
        return keep

    def reduce(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B L d]`` token states -> ``[B S d]`` segment states and ``[B S]`` mask."""
        keep = self.pool_mask(attention_mask)
        if self.segment_tokens == ALL_TOKENS:
            return hidden, keep
        return _chunk_pool(hidden, keep, self.segment_tokens)

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower layers + pooling for a batch, with gradients if the caller enables them (``full`` tuning)."""
        hidden = self.stack.encode_segments(input_ids, attention_mask, self.n_lower_layers)
        return self.reduce(hidden, attention_mask)

    # ------------------------------------------------------------------------------------------------ states
    def encode(self, texts: Sequence[str], description: str = "segments",
               tokens: TokenizedTexts | None = None) -> SegmentStates:
        """Segment states for ``texts``: from the disk cache when present and intact, else computed and saved.
        Pass ``tokens`` when the caller has already run :meth:`tokenize` on the same texts."""
        tokens = self.tokenize(texts) if tokens is None else tokens
        key = stable_hash([
            FORMAT_VERSION, self.plm_id, self.n_lower_layers, str(self.segment_tokens), self.is_decoder,
            tokens.input_ids.tolist(), tokens.attention_mask.tolist(),
        ])
        path = self._subdir("segments") / f"{description}-{key[:16]}.pt" if self.cache_dir is not None else None
        if path is not None and path.exists():
            loaded, reason = self._load(path, key, len(texts))
            if loaded is not None:
                logger.info("segment cache hit: %s", path)
                self.cache_hits += 1
                return loaded
            logger.warning("segment cache file %s is unusable (%s); rebuilding it", path, reason)
        result = self._compute(tokens, description)
        self.cache_misses += 1
        if path is not None and _rank_and_world()[0] == 0:  # one writer; the others hold the same states
            settings = {"plm": self.plm_id, "lower_layers": self.n_lower_layers,
                        "segment_tokens": str(self.segment_tokens), "max_tokens": self.max_tokens, "n_texts": len(texts)}
            atomic_torch_save(path, {"format": FORMAT_VERSION, "key": key, "settings": settings,
                                     "states": result.states, "mask": result.mask,
                                     "checksum": tensor_checksum(result.states, result.mask)})
        return result

    @torch.no_grad()
    def _compute(self, tokens: TokenizedTexts, description: str) -> SegmentStates:
        """Encode every row; in a multi-process run each rank encodes every ``world``-th row (of the length-sorted
        order, so shares cost the same) and the shares are gathered, so every rank ends with all rows."""
        started = time.perf_counter()
        rank, world = _rank_and_world()
        # Sort by length so each batch pads little; restore the order afterwards.
        order = torch.argsort(tokens.lengths, descending=True, stable=True)
        states, mask = self._encode_rows(tokens, order[rank::world], description, show=rank == 0)
        if world > 1:
            states, mask = _gather_shares(states, mask, order, world)
            order = torch.cat([order[r::world] for r in range(world)])
        inverse = torch.argsort(order)
        result = SegmentStates(states[inverse].contiguous(), mask[inverse].contiguous())
        logger.info("encoded %d %s through %d layers in %.1f s%s", len(tokens), description, self.n_lower_layers,
                    time.perf_counter() - started, f" ({world} processes)" if world > 1 else "")
        return result

    def _encode_rows(self, tokens: TokenizedTexts, rows: torch.Tensor, description: str,
                     show: bool) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = self.stack.training
        self.stack.eval()
        states, masks = [], []
        n = len(rows)
        bar = tqdm(range(0, n, self.batch_size), desc=f"Encoding {description} ({n})", unit="batch",
                   disable=not show or n <= self.batch_size)
        for start in bar:
            index = rows[start:start + self.batch_size]
            length = int(tokens.lengths[index].max())
            ids = tokens.input_ids[index, :length]
            att = tokens.attention_mask[index, :length]
            pooled, mask = self.forward_tokens(ids, att)
            if self.segment_tokens == ALL_TOKENS:  # pad token states to the global length
                pad = tokens.input_ids.shape[1] - length
                pooled = torch.nn.functional.pad(pooled, (0, 0, 0, pad))
                mask = torch.nn.functional.pad(mask, (0, pad))
            states.append(pooled)
            masks.append(mask)
        self.stack.train(was_training)
        if not states:  # more processes than rows: this rank's share is empty
            width = tokens.input_ids.shape[1] if self.segment_tokens == ALL_TOKENS else self.segment_tokens
            return torch.zeros(0, width, self.stack.hidden_size), torch.zeros(0, width, dtype=torch.bool)
        return torch.cat(states), torch.cat(masks)

    def _load(self, path: Path, key: str, n_rows: int) -> tuple[SegmentStates | None, str]:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or garbage file
            return None, f"unreadable: {type(error).__name__}"
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or data.get("key") != key:
            return None, "written by other settings or another format"
        states, mask = data.get("states"), data.get("mask")
        if not (isinstance(states, torch.Tensor) and isinstance(mask, torch.Tensor)):
            return None, "missing tensors"
        if states.dim() != 3 or states.shape[0] != n_rows or states.shape[2] != self.stack.hidden_size \
                or tuple(mask.shape) != tuple(states.shape[:2]) or mask.dtype != torch.bool:
            return None, f"wrong shapes {tuple(states.shape)} / {tuple(mask.shape)}"
        if data.get("checksum") != tensor_checksum(states, mask):
            return None, "content checksum does not match (the file was altered or damaged after it was written)"
        if not bool(mask.any(dim=1).all()) or not bool(torch.isfinite(states).all()):
            return None, "empty or non-finite rows"
        return SegmentStates(states, mask), ""

    def _subdir(self, name: str) -> Path | None:
        return self.cache_dir / name if self.cache_dir is not None else None


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather_shares(states: torch.Tensor, mask: torch.Tensor, order: torch.Tensor,
                   world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' shares, concatenated in rank order (rank r holds ``order[r::world]``)."""
    size = len(order[0::world])  # rank 0 has the largest share
    pad = size - states.shape[0]
    states = torch.nn.functional.pad(states, (0, 0, 0, 0, 0, pad))
    mask = torch.nn.functional.pad(mask.to(torch.uint8), (0, 0, 0, pad))  # gloo gathers no bool tensors
    all_states = [torch.empty_like(states) for _ in range(world)]
    all_masks = [torch.empty_like(mask) for _ in range(world)]
    torch.distributed.all_gather(all_states, states.contiguous())
    torch.distributed.all_gather(all_masks, mask.contiguous())
    counts = [len(order[r::world]) for r in range(world)]
    return (torch.cat([s[:c] for s, c in zip(all_states, counts)]),
            torch.cat([m[:c] for m, c in zip(all_masks, counts)]).bool())
