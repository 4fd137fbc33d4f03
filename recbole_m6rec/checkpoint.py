"""Loading RecBole checkpoints under torch >= 2.6 without turning unsafe loading on for anyone else.

RecBole 1.2.1 pickles its whole ``Config`` (with the model class, enums and a yaml loader class) into every
checkpoint, with pickle protocol 4. torch >= 2.6 loads with ``weights_only=True`` by default, whose unpickler
rejects both the classes and protocol 4's FRAME opcode, so the best-model reload after training fails
(DESIGN.md §4, #4). ``torch.serialization.safe_globals`` cannot help because of the opcode.

The fix here is a narrow unpickler passed to this one ``torch.load`` call: it resolves only the globals torch's own
weights-only loader accepts plus the few RecBole classes its checkpoints contain. Any other global is refused with
an error naming it. Nothing process-wide changes: other ``torch.load`` calls keep torch's defaults.
"""

from __future__ import annotations

import importlib
import os
import pickle
import types
from typing import Any

import torch

__all__ = ["load_recbole_checkpoint", "RecBoleCheckpointUnpickler", "UnsafeCheckpointError"]

# Exact (module, name) pairs RecBole 1.2.1 writes besides tensors, found by logging ``find_class`` while loading
# checkpoints of general, sequential and plugin models.
_RECBOLE_GLOBALS = {
    ("recbole.config.configurator", "Config"),
    ("recbole_m6rec.config", "PluginConfig"),
    ("recbole.utils.enum_type", "ModelType"),
    ("recbole.utils.enum_type", "InputType"),
    ("recbole.utils.enum_type", "EvaluatorType"),
    ("recbole.utils.enum_type", "FeatureType"),
    ("recbole.utils.enum_type", "FeatureSource"),
    ("yaml.loader", "FullLoader"),  # Config keeps its yaml loader *class* as an attribute
    ("torch", "device"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}
# Config also stores the model class; it is accepted only if it is a recommender defined in these packages.
_MODEL_CLASS_PACKAGES = ("recbole.model.", "recbole_m6rec.")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint asks for a global outside the allow-list."""


def _torch_weights_only_globals() -> dict[str, Any]:
    from torch import _weights_only_unpickler

    return _weights_only_unpickler._get_allowed_globals()


class RecBoleCheckpointUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only allow-listed globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _RECBOLE_GLOBALS:
            return super().find_class(module, name)
        if f"{module}.{name}" in _torch_weights_only_globals():
            return super().find_class(module, name)
        if module.startswith(_MODEL_CLASS_PACKAGES):
            obj = getattr(importlib.import_module(module), name, None)
            from recbole.model.abstract_recommender import AbstractRecommender

            if isinstance(obj, type) and issubclass(obj, AbstractRecommender):
                return obj
        raise UnsafeCheckpointError(
            f"refusing to load global '{module}.{name}' from a RecBole checkpoint: it is not in the allow-list "
            f"(tensors, RecBole's Config and enums, recommender classes from {', '.join(_MODEL_CLASS_PACKAGES)}). "
            "If you trust this file, load it yourself with torch.load(path, weights_only=False)."
        )


# torch.load wants a module-like object with ``Unpickler`` and ``load``.
_restricted_pickle = types.SimpleNamespace(
    __name__="recbole_m6rec_restricted_pickle",
    Unpickler=RecBoleCheckpointUnpickler,
    load=lambda file, **kw: RecBoleCheckpointUnpickler(file, **kw).load(),
)


def load_recbole_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict:
    """Load a checkpoint: plain data (the plugin's own format) with ``weights_only=True``; one written by RecBole's
    trainer through the allow-list above."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: '{path}'")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass  # a RecBole checkpoint (Config object, protocol 4): the allow-listed unpickler below
    except (EOFError, RuntimeError) as error:
        raise ValueError(f"'{path}' is not a readable checkpoint (truncated or corrupt?): {error}") from error
    try:
        return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_restricted_pickle)
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        raise ValueError(f"'{path}' is not a readable RecBole checkpoint (truncated or corrupt?): {error}") from error
