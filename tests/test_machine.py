"""What ran beside a measurement: the cores other processes kept busy (not this one's own work), and the report's
line that says which runs had the machine to themselves."""

import subprocess
import sys
import time

from recbole_m6rec.benchmarks.machine import CpuBeside, machine_load
from recbole_m6rec.benchmarks.report_sections import provenance_lines

SPIN = "import time\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end: pass\n"


def _spin_here(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_busy_neighbour_counts_and_this_process_own_work_does_not():
    own = CpuBeside()
    _spin_here(1.5)
    own_work = own.stop()

    neighbour = CpuBeside()
    spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=1.5)])
    time.sleep(1.6)
    with_neighbour = neighbour.stop()  # before wait(): a waited-for child would count as this process's own
    spinner.wait()

    # whatever else runs on this machine runs in both intervals; only the neighbour differs
    assert with_neighbour["other_cores"] - own_work["other_cores"] >= 0.3, (own_work, with_neighbour)
    assert with_neighbour["cpus"] >= 1 and len(with_neighbour["load_average_start"]) == 3


def test_machine_load_lists_other_busy_processes_not_this_one():
    spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=3)])
    try:
        time.sleep(1.5)
        load = machine_load(limit=50)
    finally:
        spinner.wait()
    assert len(load["load_average"]) == 3
    assert any(line.split()[0] == str(spinner.pid) for line in load["busiest_other_processes"])


def _run(row, seed, other_cores):
    return {"row": row, "seed": seed, "status": "ok", "machine": {"cpus": 2, "other_cores": other_cores}}


def test_the_report_names_the_runs_that_did_not_run_alone():
    lines = provenance_lines(
        [_run("BPR", 1, 0.02), _run("M6Rec", 1, 1.3), {"row": "SASRec", "seed": 1, "status": "ok"}]
    )
    line = next(line for line in lines if "Other processes beside each run" in line)
    assert "1 of 2 runs ran alone" in line and "M6Rec/seed1 (1.3)" in line and "BPR/seed1" not in line
    assert "Not recorded for 1 older runs" in line
    alone = provenance_lines([_run("BPR", 1, 0.02)])
    assert any("none: all 1 runs ran alone" in line for line in alone)
