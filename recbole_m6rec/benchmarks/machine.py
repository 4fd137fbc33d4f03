"""What else ran on this machine during a measurement: a benchmark's times are its own only when it ran alone.

* :func:`machine_load` is a snapshot: the load average and the busiest other processes (``ps``).
* :func:`cpu_model` and :func:`has_bfloat16` name the CPU, and whether it computes in bfloat16 natively;
  :func:`bfloat16_is_emulated` says whether torch's CPU autocast (RecBole's ``enable_amp``) would emulate it: about
  70 times slower than float32 for a matrix product on a 2-core AMD EPYC with AVX2 only, against about half
  float32's time on a CPU with those instructions.
* :class:`CpuBeside` measures a whole interval: the CPU time every process on the machine used (``/proc/stat``)
  minus this process's own (and its children's), divided by the wall time, is how many cores other processes kept
  busy on average. A snapshot misses a job that started and ended in between; this does not.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time

__all__ = ["machine_load", "CpuBeside", "cpu_model", "has_bfloat16", "bfloat16_is_emulated"]

# /proc/cpuinfo flags of native bfloat16 arithmetic: x86 (AVX512-BF16, AMX) and Arm (the BF16 extension)
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (``None`` where it does not say)."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "cpu model") and value.strip():
            return value.strip()
    return None


def bfloat16_is_emulated() -> bool:
    """Whether torch's CPU autocast would emulate bfloat16 here: no bfloat16 instructions in ``/proc/cpuinfo``, and
    oneDNN reports no bfloat16 path of its own (it has one on AVX-512 CPUs, which this does not refuse: the 70x was
    measured on AVX2). Unknown counts as not emulated: nothing is refused on a guess."""
    if has_bfloat16() is not False:
        return False
    import torch

    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a torch build without the check
        return False


def has_bfloat16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU has bfloat16 instructions (``flags`` on x86, ``Features`` on Arm); ``None`` where
    ``/proc/cpuinfo`` lists neither."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return any(flag in value.split() for flag in BFLOAT16_FLAGS)
    return None


def machine_load(limit: int = 5) -> dict:
    """``{load_average: [1, 5, 15 min], busiest_other_processes: ["pid %cpu command", ...]}`` now; only processes
    using at least 1% CPU are listed, at most ``limit``."""
    try:
        lines = subprocess.run(
            ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        lines = []
    own = str(os.getpid())
    busiest = []
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[0] != own and float(fields[1]) >= 1.0:
            busiest.append(" ".join(fields)[:90])
    return {"load_average": [round(x, 2) for x in os.getloadavg()], "busiest_other_processes": busiest[:limit]}


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes on this machine have used since boot (``/proc/stat``: user, nice, system, irq,
    softirq; not idle, iowait, or steal, which is other virtual machines' time); ``None`` where it cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        if len(fields) < 8 or fields[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def _own_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuBeside:
    """Cores other processes kept busy, on average, between :meth:`start` (or construction) and :meth:`stop`."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self._wall, self._busy, self._own = time.perf_counter(), _machine_busy_seconds(), _own_seconds()
        self._load_start = [round(x, 2) for x in os.getloadavg()]

    def stop(self) -> dict:
        """``{cpus, other_cores, load_average_start, load_average_end}``; ``other_cores`` is ``None`` where the
        machine's CPU time cannot be read, and never below 0 (clock ticks round)."""
        wall = time.perf_counter() - self._wall
        busy = _machine_busy_seconds()
        other = None
        if busy is not None and self._busy is not None and wall > 0:
            other = round(max(0.0, (busy - self._busy) - (_own_seconds() - self._own)) / wall, 2)
        return {
            "cpus": os.cpu_count(),
            "other_cores": other,
            "load_average_start": self._load_start,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        }
