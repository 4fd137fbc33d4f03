"""What RecBole 1.2.1 needs on today's stack that a version pin cannot give.

RecBole 1.2.1 (its latest release) does not import on today's packages. Version pins avoid most failures (numpy<2,
pandas<3, scipy<1.13, setuptools<82, in setup.cfg); these need code, each scoped to the plugin's own runs:

* Under torch >= 2.6 RecBole's best-model reload fails (``torch.load`` now defaults to ``weights_only=True`` and
  RecBole's checkpoints pickle its ``Config``): :func:`recbole_m6rec.checkpoint.load_recbole_checkpoint`.
* RecBole's ``sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` at import, which makes every model train
  2-4x slower once any sequential model is imported. :func:`anomaly_detection_off` switches it off for the duration
  of a run and restores the previous state afterwards, so nothing outside the run changes.
* RecBole 1.2.1's ``Collector.get_data_struct`` calls ``.cpu()`` on every collected value, but ``data.num_items``
  is an int and ``data.count_items`` a Counter, so ItemCoverage, AveragePopularity, GiniIndex and TailPercentage
  crash. :class:`PlainValueCollector` moves only tensors; every run's trainer uses it
  (:class:`recbole_m6rec.trainer.RunHooks`, which also holds the CPU multi-process fix).
* :func:`check_stack` fails early, naming the fix, on the package versions RecBole 1.2.1 is known to break with.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from recbole.evaluator import Collector

__all__ = ["anomaly_detection_off", "check_stack", "PlainValueCollector"]


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
    """Fail early, with the fix, on versions RecBole 1.2.1 is known to break with."""
    import numpy
    import pandas

    problems = []
    if int(numpy.__version__.split(".")[0]) >= 2:
        problems.append(f"numpy {numpy.__version__} (RecBole 1.2.1 needs numpy<2: np.float_ in Config)")
    if int(pandas.__version__.split(".")[0]) >= 3:
        problems.append(f"pandas {pandas.__version__} (RecBole 1.2.1 needs pandas<3: token_seq loading breaks)")
    if problems:
        raise RuntimeError(
            "unsupported package versions for RecBole 1.2.1: "
            + "; ".join(problems)
            + ". Install the tested stack with: pip install -e . (see README)"
        )
