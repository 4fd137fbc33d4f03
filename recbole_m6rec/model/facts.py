"""What M6Rec tells about itself besides its metrics: what trains (logged once the model is built) and the facts a
benchmark report shows (how long the item texts took to encode, and whether they came from the cache)."""

from __future__ import annotations

import logging

from torch import nn

__all__ = ["trainable_parameters", "log_trainable", "report_facts"]

logger = logging.getLogger(__name__)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def log_trainable(model: nn.Module, backbone: nn.Module, tuning: str, n_lower: int, n_upper: int) -> float:
    """Log what trains; return the trainable parameters' share of the backbone's own (its adapters left out)."""
    size = sum(p.numel() for name, p in backbone.named_parameters() if ".adapter." not in name)
    trainable = trainable_parameters(model)
    share = trainable / size
    logger.info(
        "%s: tuning=%s, %d lower + %d upper layers, trainable parameters %s (%.2f%% of the backbone's %s)",
        type(model).__name__,
        tuning,
        n_lower,
        n_upper,
        f"{trainable:,}",
        100 * share,
        f"{size:,}",
    )
    return share


def report_facts(model: nn.Module, encoding_seconds: float, encoding_from_cache: bool, trainable_share: float) -> dict:
    """The facts a benchmark report shows about ``model`` besides its metrics."""
    return {
        "item_encoding_seconds": round(encoding_seconds, 2),
        "encoding_from_cache": encoding_from_cache,
        "trainable_parameters": trainable_parameters(model),
        "trainable_share": trainable_share,
    }
