"""Model and trainer lookup: plugin models first, then RecBole's own.

RecBole's ``get_model`` only searches ``recbole.model.*``; RecBole-GNN/-CDR ship the same kind of two-level lookup.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from functools import cache

__all__ = [
    "PLUGIN_MODELS",
    "PLUGIN_TRAINERS",
    "PLUGIN_MODEL_BASES",
    "get_model",
    "get_trainer",
    "all_model_names",
    "is_plugin_model",
    "plugin_model_lineage",
]

# name -> "module:attribute"; imported lazily so that `import recbole_m6rec` stays light.
PLUGIN_MODELS: dict[str, str] = {
    "M6Rec": "recbole_m6rec.model.m6rec:M6Rec",
    "M6RecZeroShot": "recbole_m6rec.model.zero_shot:M6RecZeroShot",
    "M6RecCTR": "recbole_m6rec.model.m6rec_ctr:M6RecCTR",
    "MostPop": "recbole_m6rec.model.most_pop:MostPop",
    "LikeRate": "recbole_m6rec.model.like_rate:LikeRate",
}
# A plugin model that extends another reads the other's yaml defaults first, then its own.
PLUGIN_MODEL_BASES: dict[str, str] = {"M6RecCTR": "M6Rec", "M6RecZeroShot": "M6Rec"}
PLUGIN_TRAINERS: dict[str, str] = {
    "M6Rec": "recbole_m6rec.m6rec_trainer:M6RecTrainer",
    "M6RecZeroShot": "recbole_m6rec.plugin_trainer:NoTrainingTrainer",
    "M6RecCTR": "recbole_m6rec.m6rec_trainer:M6RecTrainer",
    "MostPop": "recbole_m6rec.plugin_trainer:NoTrainingTrainer",
    "LikeRate": "recbole_m6rec.plugin_trainer:NoTrainingTrainer",
}

_RECBOLE_MODEL_SUBPACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def _import_attribute(target: str):
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def is_plugin_model(name: str) -> bool:
    return name in PLUGIN_MODELS


def plugin_model_lineage(name: str) -> list[str]:
    """``name`` and the plugin models it extends, base first (e.g. ``["M6Rec", "M6RecCTR"]``)."""
    lineage = [name]
    while lineage[0] in PLUGIN_MODEL_BASES:
        lineage.insert(0, PLUGIN_MODEL_BASES[lineage[0]])
    return lineage


@cache
def all_model_names() -> tuple[str, ...]:
    """Plugin model names plus RecBole's, read from module file names (RecBole names a model's module after it)."""
    names = set(PLUGIN_MODELS)
    for sub in _RECBOLE_MODEL_SUBPACKAGES:
        spec = importlib.util.find_spec(f"recbole.model.{sub}")
        if spec is None or not spec.submodule_search_locations:
            continue
        for info in pkgutil.iter_modules(spec.submodule_search_locations):
            names.add(info.name)  # lower-case module name; the class name differs only in case
    return tuple(sorted(names))


def get_model(model_name: str):
    """Return the model class for ``model_name``: plugin first, then ``recbole.utils.get_model``."""
    if model_name in PLUGIN_MODELS:
        return _import_attribute(PLUGIN_MODELS[model_name])
    from recbole.utils import get_model as recbole_get_model

    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError):
        pass
    lowered = {name.lower(): name for name in PLUGIN_MODELS}
    candidates = sorted(set(all_model_names()) | set(PLUGIN_MODELS))
    close = difflib.get_close_matches(model_name.lower(), [c.lower() for c in candidates], n=5, cutoff=0.5)
    suggestions = [lowered.get(c, _recbole_class_name(c)) for c in close]
    hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    raise ValueError(
        f"unknown model '{model_name}'.{hint} Plugin models: {', '.join(PLUGIN_MODELS)}; "
        "RecBole models: see recbole.model (model names are case-sensitive, e.g. SASRec, BPR, LightGCN)."
    )


def _recbole_class_name(module_name: str) -> str:
    """The class name RecBole defines in ``recbole.model.<sub>.<module_name>`` (e.g. sasrec -> SASRec)."""
    for sub in _RECBOLE_MODEL_SUBPACKAGES:
        path = f"recbole.model.{sub}.{module_name}"
        if importlib.util.find_spec(path) is None:
            continue
        module = importlib.import_module(path)
        for attribute in dir(module):
            if attribute.lower() == module_name:
                return attribute
    return module_name


def get_trainer(model_type, model_name: str):
    """Plugin trainer for plugin models; RecBole's ``get_trainer`` otherwise."""
    if model_name in PLUGIN_TRAINERS:
        return _import_attribute(PLUGIN_TRAINERS[model_name])
    from recbole.utils import get_trainer as recbole_get_trainer

    return recbole_get_trainer(model_type, model_name)
