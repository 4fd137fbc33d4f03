"""One process at a time runs a job: a lock on a claim file beside the job's checkpoints.

Two leaderboard processes can share a plan's work (e.g. one tunes in order, the other runs later trials with
``--trials``); when one reaches a job the other is running, it waits for it and then takes its result instead of
running it a second time. The claim is an exclusive ``flock`` on ``<checkpoints>/<job>.running``, held by the
leaderboard process and handed to the job process it starts, so the kernel drops it when both are gone (a machine
that went away, a killed process): no claim outlives its process. Where ``fcntl`` is missing (Windows) jobs are not
claimed, and two processes must not share a report folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from recbole_m6rec.benchmarks.job import partial_parent

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

__all__ = ["claim", "claim_path", "held", "release"]

POLL_SECONDS = 30.0  # how often a process waiting for another's job looks again


def claim_path(out: Path) -> Path:
    """The claim on the job that writes ``out``: beside its checkpoints (:func:`~.job.partial_parent`), out of the
    results folder."""
    return partial_parent(Path(out).parent) / f"{Path(out).stem}.running"


def claim(out: Path) -> int | None:
    """Claim ``out``'s job: an open file descriptor holding the lock (-1 where locks are not available), or None
    while another process holds it."""
    if fcntl is None:
        return -1
    path = claim_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release(fd: int) -> None:
    """Drop a claim from :func:`claim` (the file stays: removing it would race with a process about to lock it)."""
    if fd >= 0:
        os.close(fd)  # closing the last descriptor of the lock releases it


def held(out: Path) -> bool:
    """Whether a process holds the claim on ``out``'s job now: its run is going on, not interrupted (``--status``).
    It tests the lock without waiting; a process that claims that job in the same instant waits one poll for it.
    False where locks are not available."""
    if fcntl is None:
        return False
    try:
        fd = os.open(claim_path(out), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the shared lock just taken
    return False
