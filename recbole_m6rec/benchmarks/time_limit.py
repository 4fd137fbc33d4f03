"""A wall-clock limit for a leaderboard command: a run that would not finish before it is not started.

    python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml --resume \\
        --time_limit=2h30m

For a machine held for a fixed time (a batch job's wall-clock limit, a machine lent for a few hours). A run cut off
by the end of that time loses its work since its last evaluated epoch, and all of it when its checkpoints go away
with the machine; hours of a campaign can go that way. Before each run that would start (a tuning trial or a seed;
a reused result costs nothing), its expected time is compared with the time left: the median time of the row's
finished runs of its current settings in the report folder, the figure ``--status`` shows. A run that would not
fit is not started and the command goes on to the next, which may be a shorter row's. A row whose tuning stops
there runs none of its seeds: they wait for its chosen settings. A row with no finished run to go by starts
(nothing to estimate from), and a run that has started is never stopped: the limit chooses what to start, it does
not cut. When anything was left, the command writes no report (it would leave rows out) and lists what is left for
a later ``--resume``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

__all__ = ["NoNewRuns", "TimeLimit", "TimeLimitReached", "parse_duration"]

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


class TimeLimitReached(Exception):
    """A run was not started: it would not finish before the time limit. The message says why."""


def parse_duration(text: str) -> float:
    """``"2h30m"``, ``"90m"``, ``"45s"``, ``"1.5h"`` or a number of seconds -> seconds (> 0)."""
    value = str(text).strip().lower()
    match = _DURATION.fullmatch(value)
    if value and match and any(match.groups()):
        hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
        total = 3600 * hours + 60 * minutes + seconds
    else:
        try:
            total = float(value)
        except ValueError:
            total = float("nan")
    if not total > 0 or total == float("inf"):
        raise ValueError(
            f"time limit {text!r} is not a positive duration: give hours, minutes and seconds such as 2h30m, 90m, "
            "45s, 1.5h, or a number of seconds"
        )
    return total


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


_now = time.monotonic


class TimeLimit:
    """``seconds`` from now (``clock``'s now, the monotonic clock by default); ``expected(row)`` is one more run of
    ``row``'s expected seconds, or None when nothing says."""

    def __init__(
        self,
        seconds: float,
        expected: Callable[[str], float | None],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.seconds = float(seconds)
        self.expected = expected
        self.clock = clock if clock is not None else _now
        self.started = self.clock()

    def left(self) -> float:
        """Seconds left before the limit (negative once past it)."""
        return self.seconds - (self.clock() - self.started)

    def check(self, row: str) -> None:
        """Raise :class:`TimeLimitReached` when a run of ``row`` started now would end after the limit."""
        left = self.left()
        expected = self.expected(row)
        if left <= 0:
            raise TimeLimitReached(f"the time limit ({_duration(self.seconds)}) has passed")
        if expected is not None and expected > left:
            raise TimeLimitReached(
                f"a run of {row} takes about {_duration(expected)} (the median of its finished runs), "
                f"{_duration(left)} are left of the time limit"
            )


class NoNewRuns(TimeLimit):
    """``--report_only``: no run starts; the finished ones are reused as ever."""

    def __init__(self) -> None:
        super().__init__(0.0, lambda row: None)

    def check(self, row: str) -> None:
        raise TimeLimitReached("--report_only starts no run")
