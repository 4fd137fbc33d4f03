"""Checkpoints: the plugin's plain-data format, random states for resuming, and a safe loader for RecBole's own.

**Plain checkpoints.** Plugin models' best-model checkpoints and every run's resume points hold tensors, numbers, strings, lists and dicts only, so
``torch.load(weights_only=True)`` reads them with no trust needed. The config is kept as the user's own settings
(``external_config_dict``: files, dict and command line), from which ``PluginConfig`` rebuilds the same
configuration. Resume points also hold every random state the next epoch draws from (torch, numpy, Python, and the
training loader's own generator), so a resumed run continues exactly where the interrupted one left off.

**RecBole's checkpoints.** RecBole 1.2.1 pickles its whole ``Config`` (with the model class, enums and a yaml loader
class) into every checkpoint, with pickle protocol 4. torch >= 2.6 loads with ``weights_only=True`` by default, whose
unpickler rejects both the classes and protocol 4's FRAME opcode, so RecBole's best-model reload after training
fails; ``torch.serialization.safe_globals`` cannot help because of the opcode. :func:`load_recbole_checkpoint` passes
a narrow unpickler to this one ``torch.load`` call. Like torch's weights-only unpickler, it

* resolves only torch's own safe globals plus the few RecBole classes its checkpoints contain;
* restores state (``BUILD``) only into a fresh instance of a class the file named, never into a class, a function or
  an enum member (``Config`` with a ``BUILD`` would otherwise set a class attribute for the whole process);
* fills only plain containers (``SETITEM(S)`` into dicts, ``APPEND(S)`` into lists, ``ADDITEMS`` into sets).

Anything else is refused with an error naming it. Nothing process-wide changes: other ``torch.load`` calls keep
torch's defaults.
"""

from __future__ import annotations

import enum
import importlib
import os
import pickle
import random
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbole_m6rec.cache import atomic_torch_save

__all__ = [
    "FORMAT",
    "plain_settings",
    "capture_rng",
    "restore_rng",
    "training_state",
    "is_checkpoint_writer",
    "save_plain_checkpoint",
    "load_plain_checkpoint",
    "is_plain_checkpoint",
    "load_recbole_checkpoint",
    "RecBoleCheckpointUnpickler",
    "UnsafeCheckpointError",
]

# --- plain checkpoints ---------------------------------------------------------------------------------------------
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
    raise TypeError(
        f"setting '{where}' holds a {type(value).__name__} ({value!r}); plugin checkpoints keep only "
        "strings, numbers, booleans, lists and dicts"
    )


def plain_settings(config) -> dict:
    """The settings the user gave (config files, config dict, command line), as plain values."""
    return {key: _plain(value, key) for key, value in config.external_config_dict.items()}


def capture_rng(loader_generator: torch.Generator | None = None) -> dict:
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "gauss": float(numpy_state[4]),
        },
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


def training_state(trainer, epoch: int) -> dict:
    """What a checkpoint of ``trainer`` after ``epoch`` holds: model, settings, early-stopping state and optimizer.
    Submodules in ``other_parameter`` are left out (DIN and DIEN list a module holding the whole dataset there;
    their weights are in ``state_dict`` anyway)."""
    best_result = trainer.best_valid_result
    others = trainer.model.other_parameter() or {}
    return {
        "model": trainer.config["model"],
        "dataset": trainer.config["dataset"],
        "settings": plain_settings(trainer.config),
        "epoch": epoch,
        "cur_step": trainer.cur_step,
        "best_valid_score": float(trainer.best_valid_score),
        "best_valid_result": None if best_result is None else {k: float(v) for k, v in best_result.items()},
        "state_dict": trainer.model.state_dict(),
        "other_parameter": {k: v for k, v in others.items() if not isinstance(v, torch.nn.Module)},
        "optimizer": None if trainer.optimizer is None else trainer.optimizer.state_dict(),
    }


def is_checkpoint_writer(config) -> bool:
    """One process writes checkpoints: the only one, or rank 0 of a multi-process run."""
    return config["single_spec"] or config["local_rank"] == 0


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
        raise ValueError(
            f"'{path}' is not a plain recbole_m6rec checkpoint (truncated, corrupt, or written by "
            f"RecBole's own trainer): {error}"
        ) from error
    if not is_plain_checkpoint(checkpoint):
        raise ValueError(f"'{path}' is not a recbole_m6rec checkpoint (format {FORMAT} expected)")
    return checkpoint


# --- RecBole's own checkpoints -------------------------------------------------------------------------------------
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
    """The checkpoint asks for a global outside the allow-list, or to change something it did not create."""


def _torch_weights_only_globals() -> dict[str, Any]:
    from torch import _weights_only_unpickler

    return _weights_only_unpickler._get_allowed_globals()


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    return f"a {type(value).__module__}.{type(value).__qualname__}"


class RecBoleCheckpointUnpickler(pickle._Unpickler):
    """A ``pickle.Unpickler`` that resolves only allow-listed globals and changes only objects it built itself.

    It is the pure-Python unpickler (the C one's opcodes cannot be overridden); checkpoints keep their tensors out
    of the pickle stream, so the stream is small.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._named_classes: set[type] = set()  # classes this file resolved: BUILD may fill their new instances

    def find_class(self, module: str, name: str) -> Any:
        obj = self._resolve(module, name)
        if isinstance(obj, type):
            self._named_classes.add(obj)
        return obj

    def _resolve(self, module: str, name: str) -> Any:
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

    # --- opcodes that change an existing object (torch's weights-only unpickler has the same rules) ----------------
    def _refuse(self, opcode: str, target: Any, allowed: str) -> None:
        raise UnsafeCheckpointError(
            f"refusing {opcode} on {_describe(target)} in a RecBole checkpoint: {allowed}. A checkpoint that changes "
            "a class or another shared object would change it for the whole process. If you trust this file, load "
            "it yourself with torch.load(path, weights_only=False)."
        )

    def load_build(self):
        target = self.stack[-2]  # the state to set is on top
        shared = isinstance(target, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType, enum.Enum))
        if shared or not isinstance(target, (torch.Tensor, *self._named_classes)):
            self._refuse("BUILD", target, "state goes only into a new instance of a class the file names")
        super().load_build()

    def _check_container(self, opcode: str, target: Any, container: type) -> None:
        kind = type(target)
        if not (kind is container or (kind in self._named_classes and issubclass(kind, container))):
            self._refuse(opcode, target, f"{opcode} fills only a {container.__name__}")

    def load_setitem(self):
        self._check_container("SETITEM", self.stack[-3], dict)  # target, key, value
        super().load_setitem()

    def load_append(self):
        self._check_container("APPEND", self.stack[-2], list)  # target, item
        super().load_append()

    # the items since the last MARK are on self.stack; the target is on top of the stack saved at the MARK
    def load_setitems(self):
        self._check_container("SETITEMS", self.metastack[-1][-1], dict)
        super().load_setitems()

    def load_appends(self):
        self._check_container("APPENDS", self.metastack[-1][-1], list)
        super().load_appends()

    def load_additems(self):
        self._check_container("ADDITEMS", self.metastack[-1][-1], set)
        super().load_additems()

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.ADDITEMS[0]] = load_additems


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
    # the pure-Python unpickler reports an unknown opcode as a KeyError
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError) as error:
        raise ValueError(f"'{path}' is not a readable RecBole checkpoint (truncated or corrupt?): {error}") from error
