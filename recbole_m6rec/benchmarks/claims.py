"""One process at a time runs a job: a claim file beside the job's checkpoints names the process that runs it.

Two leaderboard processes can share a plan's work (e.g. one tunes in order, the other runs later trials with
``--trials``); when one reaches a job the other is running, it waits for it and then reuses its result instead of
running it a second time. A claim names its process by boot, pid and start time (``/proc``), so a claim left by a
process that died (a machine that went away) is stale and taken over, even when the pid has been reused since.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from recbole_m6rec.benchmarks.job import partial_parent

__all__ = ["claim", "claim_path", "holder", "release"]

POLL_SECONDS = 30.0  # how often a process waiting for another's job looks again


def claim_path(out: Path) -> Path:
    """The claim on the job that writes ``out``: beside its checkpoints (:func:`~.job.partial_parent`), out of the
    results folder."""
    return partial_parent(Path(out).parent) / f"{Path(out).stem}.running"


def _identity(pid: int) -> str | None:
    """Boot, pid and start time of process ``pid``; None when it does not exist."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if Path("/proc/self/stat").exists():
            return None  # /proc works, the process is gone
        try:  # no /proc (not Linux): the pid alone
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return f"pid {pid}"
    start = stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after the command name
    return f"{boot}:{pid}:{start}"


def holder(out: Path) -> dict | None:
    """The live process that has claimed ``out``'s job, or None (no claim, or a stale one)."""
    try:
        recorded = json.loads(claim_path(out).read_text(encoding="utf-8"))
        pid, identity = int(recorded["pid"]), recorded["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recorded if _identity(pid) == identity else None


def claim(out: Path) -> bool:
    """Claim ``out``'s job for this process: False while another live process holds it."""
    path = claim_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f"{path.name}.{os.getpid()}")
    draft.write_text(json.dumps({"pid": os.getpid(), "identity": _identity(os.getpid())}), encoding="utf-8")
    try:
        for _ in range(2):
            try:
                os.link(draft, path)  # appears whole, and only if no claim is there
                return True
            except FileExistsError:
                if holder(out) is not None:
                    return False
                path.unlink(missing_ok=True)  # stale: its process is gone
        return False
    finally:
        draft.unlink(missing_ok=True)


def release(out: Path) -> None:
    """Drop this process's claim on ``out``'s job."""
    path = claim_path(out)
    try:
        if int(json.loads(path.read_text(encoding="utf-8"))["pid"]) == os.getpid():
            path.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass
