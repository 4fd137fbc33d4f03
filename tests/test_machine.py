"""What ran beside a measurement: the cores other processes kept busy (not this one's own work), and the report's
line that says which runs had the machine to themselves."""

import os
import resource
import subprocess
import sys
import time

import torch

from recbole_m6rec.benchmarks.leaderboard import emulated_autocast_rows
from recbole_m6rec.benchmarks.machine import CpuBeside, cpu_model, has_bfloat16, machine_load
from recbole_m6rec.benchmarks.report_sections import provenance_lines

SPIN = "import time\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end: pass\n"
# spins until it has used this much CPU time, however long that takes on a loaded machine
SPIN_CPU = "import time\nwhile time.process_time() < {seconds}: pass\n"


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_this_process_own_work_is_not_counted_as_other_processes():
    """Whatever else runs, the machine cannot have been busier than its CPUs: other processes' cores plus this
    process's own cannot exceed them. Counting the own work as others' breaks that as soon as this process works."""
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # this process alone could fill the machine
    try:
        a = torch.randn(512, 512)
        beside, own_before, started = CpuBeside(), _own_cpu_seconds(), time.perf_counter()
        # a fixed amount of work, not of wall time: on a loaded machine a second of wall time may be little CPU
        while _own_cpu_seconds() - own_before < 1.0 and time.perf_counter() - started < 120:
            a = torch.tanh(a @ a)
        measured = beside.stop()
        own_seconds = _own_cpu_seconds() - own_before
        own_cores = own_seconds / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    assert own_seconds >= 1.0  # this process did work
    assert measured["other_cores"] + own_cores <= measured["cpus"] + 0.15, (measured, own_cores)


def test_a_busy_neighbour_counts_as_what_it_used():
    """Other processes kept at least the neighbour's own CPU time busy, however loaded the machine is."""
    beside, children_before, started = CpuBeside(), _children_cpu_seconds(), time.perf_counter()
    spinner = subprocess.Popen([sys.executable, "-c", SPIN_CPU.format(seconds=1.0)])
    os.waitid(os.P_PID, spinner.pid, os.WEXITED | os.WNOWAIT)  # it has ended, but is not reaped yet: reaped
    measured = beside.stop()  # children count as the run's own (a job's worker processes are its own work)
    wall = time.perf_counter() - started
    spinner.wait()
    neighbour_seconds = _children_cpu_seconds() - children_before
    assert neighbour_seconds >= 1.0
    neighbour_cores = neighbour_seconds / wall
    assert measured["other_cores"] >= neighbour_cores - 0.05, (measured, neighbour_cores)
    assert measured["cpus"] >= 1 and len(measured["load_average_start"]) == 3


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


AMD_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
XEON_AMX = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"


def test_the_cpu_and_its_bfloat16_instructions_are_read_from_cpuinfo():
    assert (cpu_model(AMD_AVX2), has_bfloat16(AMD_AVX2)) == ("AMD EPYC", False)
    assert (cpu_model(XEON_AMX), has_bfloat16(XEON_AMX)) == ("Intel(R) Xeon(R) Platinum 8480+", True)
    assert (cpu_model(ARM_BF16), has_bfloat16(ARM_BF16)) == (None, True)
    assert has_bfloat16("") is None  # unknown is not "no": nothing is refused on it


def test_autocast_rows_are_refused_on_a_cpu_that_would_emulate_bfloat16():
    plan = {
        "dataset": "ml-100k",
        "common": {"epochs": 1},
        "rows": {
            "SASRec": {"model": "SASRec"},
            "M6Rec": {"model": "M6Rec", "enable_amp": True},
            "BPR": {"model": "BPR", "search": {"enable_amp": ["choice", False, True]}},
        },
    }
    assert emulated_autocast_rows(plan, emulated=True, cuda=False) == ["M6Rec", "BPR"]
    assert emulated_autocast_rows(plan, emulated=False, cuda=False) == []
    assert emulated_autocast_rows(plan, emulated=True, cuda=True) == []  # RecBole trains them on the GPU
    plan["common"]["gpu_id"] = ""  # as RecBole decides: no GPU id, the CPU
    assert emulated_autocast_rows(plan, emulated=True, cuda=True) == ["M6Rec", "BPR"]


def test_the_report_says_which_rows_ran_on_which_cpu():
    def on(row, cpu, bf16):
        record = _run(row, 1, 0.0)
        record["provenance"] = {"runtime": {"torch_threads": 1, "cpu": cpu, "cpu_bfloat16": bf16}}
        return record

    one = provenance_lines([on("BPR", "AMD EPYC", False), on("SASRec", "AMD EPYC", False)])
    assert "- CPU: AMD EPYC, no bfloat16 instructions." in one
    two = provenance_lines([on("BPR", "AMD EPYC", False), on("SASRec", "Xeon", True), _run("GRU4Rec", 1, 0.0)])
    assert "- **Rows ran on different CPUs, or may have** (compare times only within one):" in two
    assert "  - Xeon, bfloat16 instructions: SASRec/seed1" in two
    assert "  - not recorded (older results): GRU4Rec/seed1" in two
    kernels = on("BPR", "AMD EPYC", True)
    kernels["provenance"]["runtime"]["cpu_capability"] = "AVX2"
    assert "  - AMD EPYC, bfloat16 instructions, torch's AVX2 kernels: BPR/seed1" in provenance_lines(
        [kernels, on("SASRec", "AMD EPYC", True)]
    )


def test_the_report_names_runs_continued_under_another_kernel_set():
    def parts(row, *kernels):
        record = _run(row, 1, 0.0)
        runtimes = [{"cpu": "AMD EPYC", "cpu_capability": k} if k else None for k in kernels]
        record["provenance"] = {"runtime": runtimes[-1], "part_runtimes": runtimes}
        return record

    lines = provenance_lines(
        [parts("SASRec", "AVX2", "AVX512"), parts("BPR", None, "AVX512"), parts("GRU4Rec", "AVX2")]
    )
    assert (
        "- **Continued under another torch CPU kernel set** (not reproducible bit for bit; can move by as much as "
        "another seed): SASRec/seed1 (AVX2 then AVX512)" in lines
    )  # an earlier part that did not record its set is not a finding


def test_the_run_records_the_cpu_kernel_set_torch_used():
    # ATEN_CPU_CAPABILITY lowers it (read once, when torch loads): the record is the set that ran, not the CPU's best
    code = "from recbole_m6rec.benchmarks.provenance import runtime; print(runtime()['cpu_capability'])"
    lowered = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    ran = subprocess.run([sys.executable, "-c", code], env=lowered, capture_output=True, text=True, check=True)
    assert ran.stdout.split()[-1] == "DEFAULT"
