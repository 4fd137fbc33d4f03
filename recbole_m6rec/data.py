"""RecBole's ``create_dataset``, with one fact kept that RecBole throws away (the raw range of the time field) and
one more split (leave-last-k-out, :mod:`recbole_m6rec.split`).

RecBole's ``normalize_all: True`` (its default for ml-100k) or a ``normalize_field`` that names ``TIME_FIELD``
min-max scales the timestamps to [0, 1] before any model sees them. Every model keeps seeing exactly that (context
models read the timestamp as a feature, and the float32 ties it creates decide RecBole's leave-one-out order), but a
model that reads time *gaps* (M6Rec's ``recency_words``) needs seconds. The scaling is affine, so
``raw gap = normalised gap * (max - min)`` over the data RecBole normalised; :func:`create_dataset` builds the
dataset class RecBole would pick, subclassed once so that ``_normalize`` records that range first, as a plain
attribute, ``raw_time_range``, which every copy (``build()``, the split) and a pickled dataset keep. The same
subclass takes ``eval_args: {split: {LS: [k_valid, k_test]}}`` (:class:`recbole_m6rec.split.LeaveLastOut`).
"""

from __future__ import annotations

import importlib
import os
import pickle
from logging import getLogger

from recbole.utils import FeatureType, ModelType, set_color
from recbole.utils.argument_list import dataset_arguments

from recbole_m6rec.split import LeaveLastOut

__all__ = ["create_dataset", "dataset_class", "time_field_is_normalised", "RawTimeRange"]

_RECBOLE_CLASS_OF_TYPE = {
    ModelType.GENERAL: "Dataset",
    ModelType.SEQUENTIAL: "SequentialDataset",
    ModelType.CONTEXT: "Dataset",
    ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
    ModelType.TRADITIONAL: "Dataset",
    ModelType.DECISIONTREE: "Dataset",
}


def time_field_is_normalised(config, field2type: dict) -> bool:
    """Whether RecBole's ``Dataset._normalize`` min-max scales ``TIME_FIELD`` under ``config`` (its own rule: a
    FLOAT field named in ``normalize_field``, or, without that list, any FLOAT field under ``normalize_all``)."""
    field = config["TIME_FIELD"]
    if not field or field2type.get(field) not in (FeatureType.FLOAT, FeatureType.FLOAT_SEQ):
        return False
    if config["normalize_field"]:
        return field in config["normalize_field"]
    return bool(config["normalize_all"])


class RawTimeRange:
    """Dataset mixin: ``raw_time_range`` is ``(min, max)`` of the raw ``TIME_FIELD`` values that RecBole's
    ``_normalize`` scaled to [0, 1], or ``None`` when it left the time field as loaded."""

    raw_time_range: tuple[float, float] | None

    def _normalize(self):
        self.raw_time_range = None
        field = self.time_field
        if (
            time_field_is_normalised(self.config, self.field2type)
            and self.inter_feat is not None
            and field in self.inter_feat
        ):
            values = self.inter_feat[field].values
            self.raw_time_range = (float(min(values)), float(max(values)))  # as RecBole's norm() takes them
        super()._normalize()


_CLASSES: dict[type, type] = {}


def dataset_class(config) -> type:
    """The class RecBole's ``create_dataset`` would build for ``config``, with :class:`RawTimeRange` and
    :class:`~recbole_m6rec.split.LeaveLastOut` mixed in.

    The subclass keeps RecBole's class name (so saved-dataset file names and logs are RecBole's) and is created once
    per RecBole class, as a module attribute, so a pickled dataset loads again."""
    module = importlib.import_module("recbole.data.dataset")
    base = getattr(module, config["model"] + "Dataset", None) or getattr(
        module, _RECBOLE_CLASS_OF_TYPE[config["MODEL_TYPE"]]
    )
    return _with_raw_time_range(base)


def _with_raw_time_range(base: type) -> type:
    if base not in _CLASSES:
        qualname = f"{_PREFIX}{base.__name__}"
        cls = type(
            base.__name__, (RawTimeRange, LeaveLastOut, base), {"__module__": __name__, "__qualname__": qualname}
        )
        globals()[qualname] = cls
        _CLASSES[base] = cls
    return _CLASSES[base]


_PREFIX = "RawTimeRange"


def __getattr__(name: str):
    """``RawTimeRange<RecBole class>`` on demand: what ``pickle`` looks up when it loads a saved dataset."""
    base = (
        getattr(importlib.import_module("recbole.data.dataset"), name[len(_PREFIX) :], None)
        if name.startswith(_PREFIX) and name != _PREFIX
        else None
    )
    if not isinstance(base, type):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _with_raw_time_range(base)


def create_dataset(config):
    """``recbole.data.create_dataset(config)``, the same dataset in every respect, plus ``raw_time_range``.

    Like RecBole's, it reuses a dataset saved at ``dataset_save_path`` (or ``checkpoint_dir/<dataset>-<class>.pth``)
    when its dataset arguments, seed and ``repeatable`` match, and saves one with ``save_dataset``."""
    cls = dataset_class(config)
    default_file = os.path.join(config["checkpoint_dir"], f'{config["dataset"]}-{cls.__name__}.pth')
    file = config["dataset_save_path"] or default_file
    if os.path.exists(file):
        with open(file, "rb") as handle:
            dataset = pickle.load(handle)
        if all(config[arg] == dataset.config[arg] for arg in dataset_arguments + ["seed", "repeatable"]):
            getLogger().info(set_color("Load filtered dataset from", "pink") + f": [{file}]")
            return dataset
    dataset = cls(config)
    if config["save_dataset"]:
        dataset.save()
    return dataset
