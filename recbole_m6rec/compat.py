"""What RecBole 1.2.1 needs on today's stack that a version pin cannot give (DESIGN.md §4).

Pins (numpy<2, pandas<3, scipy<1.13, setuptools<82) live in setup.cfg. Two failures need code, both scoped:

* #4 best-model reload under torch >= 2.6: :mod:`recbole_m6rec.checkpoint`.
* #9 RecBole's ``sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` at import, which makes every model
  train 2-4x slower. :func:`anomaly_detection_off` switches it off for the duration of a run and restores the
  previous state afterwards, so nothing outside the run changes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["anomaly_detection_off", "check_stack"]


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
