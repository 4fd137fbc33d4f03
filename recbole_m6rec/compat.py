"""What RecBole 1.2.1 needs on today's stack that a version pin cannot give (DESIGN.md §4).

Pins (numpy<2, pandas<3, scipy<1.13, setuptools<82) live in setup.cfg. Two failures need code, both scoped:

* #4 best-model reload under torch >= 2.6: :mod:`recbole_m6rec.checkpoint`.
* #9 RecBole's ``sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` at import, which makes every model
  train 2-4x slower. :func:`anomaly_detection_off` switches it off for the duration of a run and restores the
  previous state afterwards, so nothing outside the run changes.
* RecBole 1.2.1's trainers wrap the model for multi-process runs with ``DistributedDataParallel(device_ids=[rank])``
  and ``SyncBatchNorm``, both CUDA-only. :func:`with_cpu_distributed` wraps it the CPU way (no device ids; BatchNorm
  statistics stay per process, buffers are broadcast from rank 0 as DDP does by default).
* RecBole 1.2.1's ``Collector.get_data_struct`` calls ``.cpu()`` on every collected value, but ``data.num_items``
  is an int and ``data.count_items`` a Counter, so ItemCoverage, AveragePopularity, GiniIndex and TailPercentage
  crash. :class:`PlainValueCollector` moves only tensors; trainers built by ``run_pipeline`` use it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import copy

import torch
from recbole.evaluator import Collector

__all__ = ["anomaly_detection_off", "check_stack", "PlainValueCollector", "with_plain_value_collector",
           "with_cpu_distributed"]


class PlainValueCollector(Collector):
    """RecBole's collector; ``get_data_struct`` leaves non-tensor values (item count, item counter) as they are."""

    def get_data_struct(self):
        data = self.data_struct._data_dict
        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                data[key] = value.cpu()
        returned_struct = copy.deepcopy(self.data_struct)
        for key in ["rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"]:
            if key in self.data_struct:
                del self.data_struct[key]
        return returned_struct


class _PlainValueCollectorMixin:
    def __init__(self, config, model):
        super().__init__(config, model)
        self.eval_collector = PlainValueCollector(config)


def with_plain_value_collector(trainer_class):
    """A subclass of ``trainer_class`` whose evaluation uses :class:`PlainValueCollector`."""
    return type(f"{trainer_class.__name__}PlainValues", (_PlainValueCollectorMixin, trainer_class), {})


@contextlib.contextmanager
def anomaly_detection_off() -> Iterator[None]:
    previous = torch.is_anomaly_enabled()
    previous_nan = torch.is_anomaly_check_nan_enabled()
    torch.autograd.set_detect_anomaly(False)
    try:
        yield
    finally:
        torch.autograd.set_detect_anomaly(previous, check_nan=previous_nan)


def check_stack() -> None:
    """Fail early, with the fix, on versions RecBole 1.2.1 is known to break with (DESIGN.md §4)."""
    import numpy
    import pandas

    problems = []
    if int(numpy.__version__.split(".")[0]) >= 2:
        problems.append(f"numpy {numpy.__version__} (RecBole 1.2.1 needs numpy<2: np.float_ in Config)")
    if int(pandas.__version__.split(".")[0]) >= 3:
        problems.append(f"pandas {pandas.__version__} (RecBole 1.2.1 needs pandas<3: token_seq loading breaks)")
    if problems:
        raise RuntimeError(
            "unsupported package versions for RecBole 1.2.1: " + "; ".join(problems)
            + ". Install the tested stack with: pip install -e . (see README)"
        )


class _CpuDistributedMixin:
    def __init__(self, config, model):
        cpu_ddp = not config["single_spec"] and config["device"].type == "cpu"
        if cpu_ddp:
            config["single_spec"] = True  # skip AbstractTrainer's CUDA-only wrapping; done below instead
        try:
            super().__init__(config, model)
        finally:
            if cpu_ddp:
                config["single_spec"] = False
        if cpu_ddp:
            from torch.nn.parallel import DistributedDataParallel

            self.distributed_model = DistributedDataParallel(self.model)


def with_cpu_distributed(trainer_class):
    """A subclass of ``trainer_class`` that can train in a multi-process CPU (gloo) run."""
    return type(f"{trainer_class.__name__}CpuDistributed", (_CpuDistributedMixin, trainer_class), {})


class _ModuleFreeOtherParameterMixin:
    """DIN and DIEN list their ``embedding_layer`` (an ``nn.Module`` holding the whole dataset) in
    ``other_parameter``, so RecBole pickles the dataset into every checkpoint, and no narrow allow-list can load it
    back. A submodule's weights are already in ``state_dict``; this leaves module values out of ``other_parameter``
    while the checkpoint is written (on this model instance only), so the checkpoint stays loadable."""

    def _save_checkpoint(self, epoch, *args, **kwargs):
        model = self.model
        everything = model.other_parameter()
        if not any(isinstance(value, torch.nn.Module) for value in everything.values()):
            return super()._save_checkpoint(epoch, *args, **kwargs)
        model.other_parameter = lambda: {k: v for k, v in everything.items() if not isinstance(v, torch.nn.Module)}
        try:
            return super()._save_checkpoint(epoch, *args, **kwargs)
        finally:
            del model.other_parameter  # the class's method again


def with_module_free_other_parameter(trainer_class):
    """A subclass of ``trainer_class`` whose checkpoints leave submodules out of ``other_parameter``."""
    return type(f"{trainer_class.__name__}ModuleFree", (_ModuleFreeOtherParameterMixin, trainer_class), {})
