"""Plugin checkpoints made of plain data, loadable with ``torch.load(weights_only=True)``.

RecBole pickles its whole ``Config`` object into checkpoints, which only a trusting (or allow-listed) unpickler can
read. Plugin trainers write this format instead: tensors, numbers, strings, lists and dicts. The config is kept as
the user's own settings (``external_config_dict``: files, dict and command line), from which ``PluginConfig``
rebuilds the same configuration. Resume points also hold every random state the next epoch draws from (torch,
numpy, Python, and the training loader's own generator), so a resumed run continues exactly where the
interrupted one left off.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbole_m6rec.cache import atomic_torch_save

__all__ = ["FORMAT", "plain_settings", "capture_rng", "restore_rng", "save_plain_checkpoint", "load_plain_checkpoint",
           "is_plain_checkpoint"]

FORMAT = "recbole_m6rec.checkpoint/1"
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{k}]") for k, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"setting '{where}' holds a {type(value).__name__} ({value!r}); plugin checkpoints keep only "
                    "strings, numbers, booleans, lists and dicts")


def plain_settings(config) -> dict:
    """The settings the user gave (config files, config dict, command line), as plain values."""
    return {key: _plain(value, key) for key, value in config.external_config_dict.items()}


def capture_rng(loader_generator: torch.Generator | None = None) -> dict:
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "gauss": float(numpy_state[4])},
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def restore_rng(state: dict, loader_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def save_plain_checkpoint(path: str | os.PathLike, **fields: Any) -> Path:
    """Write ``{"format": FORMAT, **fields}`` atomically (a crash leaves the previous file, never half a file)."""
    return atomic_torch_save(path, {"format": FORMAT, **fields})


def is_plain_checkpoint(checkpoint: Any) -> bool:
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def load_plain_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict:
    """Load with ``weights_only=True``; clear errors for a missing, corrupt or foreign file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: '{path}'")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        raise ValueError(f"'{path}' is not a plain recbole_m6rec checkpoint (truncated, corrupt, or written by "
                         f"RecBole's own trainer): {error}") from error
    if not is_plain_checkpoint(checkpoint):
        raise ValueError(f"'{path}' is not a recbole_m6rec checkpoint (format {FORMAT} expected)")
    return checkpoint
