"""Every text of an id-aligned list through the lower layers, once, in length-sorted batches, shared out over the
processes of a distributed run: the computation behind :meth:`.segments.SegmentEncoder.encode` when its disk cache
has nothing usable."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F
from tqdm import tqdm

from .tokenize import TokenizedTexts

if TYPE_CHECKING:
    from .segments import SegmentEncoder

__all__ = ["encode_all", "length_sorted_batches", "rank_and_world"]

logger = logging.getLogger(__name__)


def length_sorted_batches(tokens: TokenizedTexts, batch_size: int) -> list[torch.Tensor]:
    """The rows of each encoding batch: ``batch_size`` rows at a time of the longest-first order, so a batch pads
    little (the compression benchmark times the same batches)."""
    order = torch.argsort(tokens.lengths, descending=True, stable=True)
    return list(order.split(batch_size))


@torch.no_grad()
def encode_all(encoder: SegmentEncoder, tokens: TokenizedTexts, description: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every row, in batches of ``encoder.batch_size`` rows of the length-sorted order (so each batch pads
    little). In a multi-process run each rank encodes every ``world``-th of those batches and the shares are
    gathered, so every rank ends with all rows; a text meets the same batch, padded to the same width, however
    many processes encode, so the states do not depend on the number of processes."""
    started = time.perf_counter()
    rank, world = rank_and_world()
    batches = length_sorted_batches(tokens, encoder.batch_size)
    order = torch.cat(batches)
    shares = [torch.cat(batches[r::world]) if batches[r::world] else order[:0] for r in range(world)]
    states, mask = _encode_rows(encoder, tokens, shares[rank], description, show=rank == 0)
    if world > 1:
        states, mask = _gather_shares(states, mask, [len(share) for share in shares])
        order = torch.cat(shares)
    inverse = torch.argsort(order)
    logger.info(
        "encoded %d %s through %d layers (%s, %s) in %.1f s%s",
        len(tokens),
        description,
        encoder.item_layers,
        encoder.quantize,
        encoder.device.type,
        time.perf_counter() - started,
        f" ({world} processes)" if world > 1 else "",
    )
    return states[inverse].contiguous(), mask[inverse].contiguous()


def _encode_rows(
    encoder: SegmentEncoder, tokens: TokenizedTexts, rows: torch.Tensor, description: str, show: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    stack = encoder.stack
    modes = {module: module.training for module in stack.modules()}
    stack.eval()
    width = encoder.width(tokens)
    device = encoder.device
    states, masks = [], []
    n = len(rows)
    bar = tqdm(
        range(0, n, encoder.batch_size),
        desc=f"Encoding {description} ({n})",
        unit="batch",
        disable=not show or n <= encoder.batch_size,
    )
    for start in bar:
        index = rows[start : start + encoder.batch_size]
        length = int(tokens.lengths[index].max())
        input_ids = tokens.input_ids[index, :length].to(device)  # no copy on the CPU
        attention = tokens.attention_mask[index, :length].to(device)
        pooled, mask = encoder.fit(*encoder.forward_tokens(input_ids, attention), width)
        states.append(pooled.cpu())  # states are kept on the CPU; the model moves them with itself
        masks.append(mask.cpu())
    for module, mode in modes.items():  # each module as it was (a loaded model's layers stay in eval mode)
        module.training = mode
    if not states:  # more processes than rows: this rank's share is empty
        return torch.zeros(0, width, stack.hidden_size), torch.zeros(0, width, dtype=torch.bool)
    return torch.cat(states), torch.cat(masks)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside a distributed run)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather_shares(states: torch.Tensor, mask: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' shares, concatenated in rank order (rank r holds ``counts[r]`` rows)."""
    world = len(counts)
    pad = max(counts) - states.shape[0]
    states = F.pad(states, (0, 0, 0, 0, 0, pad))
    mask = F.pad(mask.to(torch.uint8), (0, 0, 0, pad))  # gloo gathers no bool tensors
    all_states = [torch.empty_like(states) for _ in range(world)]
    all_masks = [torch.empty_like(mask) for _ in range(world)]
    torch.distributed.all_gather(all_states, states.contiguous())
    torch.distributed.all_gather(all_masks, mask.contiguous())
    return (
        torch.cat([s[:c] for s, c in zip(all_states, counts)]),
        torch.cat([m[:c] for m, c in zip(all_masks, counts)]).bool(),
    )
