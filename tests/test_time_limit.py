"""The leaderboard's --time_limit: what a duration is (the runs it starts are tested in test_leaderboard.py)."""

import re

import pytest

from recbole_m6rec.benchmarks.time_limit import TimeLimit, TimeLimitReached, parse_duration


@pytest.mark.parametrize(
    "value, seconds", [("2h30m", 9000.0), ("90m", 5400.0), ("45s", 45.0), ("1.5h", 5400.0), ("600", 600.0)]
)
def test_time_limits_are_read_as_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "0", "-5", "2x", "h", "inf", "nan", "30m2h"])
def test_a_time_limit_that_is_not_a_positive_duration_is_refused_naming_it(value):
    with pytest.raises(ValueError, match=re.escape(repr(value)) + " is not a positive duration: give hours"):
        parse_duration(value)


def test_a_run_starts_when_it_fits_the_time_left_or_nothing_says_how_long_it_takes():
    now = [0.0]
    limit = TimeLimit(3600, {"Fast": 600.0, "Slow": 3000.0}.get, clock=lambda: now[0])
    for row in ("Fast", "Slow", "New"):  # New has no finished run to go by
        limit.check(row)
    now[0] = 1000.0
    limit.check("Fast")
    with pytest.raises(TimeLimitReached, match="a run of Slow takes about 50 min .*, 43 min are left"):
        limit.check("Slow")
    now[0] = 3600.0
    with pytest.raises(TimeLimitReached, match=r"the time limit \(1.0 h\) has passed"):
        limit.check("New")
