"""A trainable adapter on the cached lower-layer item states.

With ``option_adapter`` tuning only the online upper layers adapt; the states the lower layers computed for each
item text are fixed, and they are what both the history segments and the item tower start from. This adapter, in
the spirit of UniSRec's item adaptor, maps those cached states through one residual bottleneck before either
side reads them: ``h + lambda * up(gelu(down(norm(h))))``, ``up`` starting at zero so the model starts as without
it. It is shared by the history and the item tower and applied to states looked up from the cache, so nothing is
re-encoded; its cost is one small matrix product per segment vector.
"""

from __future__ import annotations

import torch
from torch import nn

from ..lm.backbone import FFNAdapter

__all__ = ["ItemStateAdapter"]


class ItemStateAdapter(nn.Module):
    """``[..., d]`` cached item states -> adapted states of the same shape (identity at initialisation)."""

    def __init__(self, hidden_size: int, rank: int):
        super().__init__()
        # the cached states' scale differs from one backbone to another; normalising first keeps the bottleneck's
        # input at unit scale whatever the backbone
        self.norm = nn.LayerNorm(hidden_size)
        self.bottleneck = FFNAdapter(hidden_size, rank)  # the online layers' adapter: up starts at zero

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return states + self.bottleneck(self.norm(states))
