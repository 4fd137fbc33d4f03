# Two commands for a fresh machine with Python 3.11 and pip (see README.md):
#   make demo   set up .venv, train and evaluate M6Rec next to baselines on ml-100k, print the table
#   make test   set up .venv, run the test suite
VENV ?= .venv
BIN = $(VENV)/bin
# Benchmarks preload jemalloc when it is installed (Debian: libjemalloc2): a third off a SASRec epoch on a 2-core
# CPU, same numbers (docs/recbole-stack.md). Results record it (provenance `runtime`). JEMALLOC= turns it off.
JEMALLOC ?= $(firstword $(wildcard /usr/lib/*-linux-gnu/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2))
RUN = $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC)) $(BIN)/python

.PHONY: setup test lint format demo status bench bench-levers bench-ablations bench-cold bench-ctr bench-anomaly bench-gpu clean

setup:
	bash .ci/setup-venv

# one test process per usable core (`nproc`), at most 4 (each holds its own models); a test file stays in one
# process, so its module fixtures are built once. --no-loadscope-reorder: files are handed out in the order
# tests/conftest.py gives them, the slowest first (xdist would otherwise start the files with the most tests first,
# and the one-test end-to-end file, the longest, last)
TEST_PROCESSES ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ "$$n" -gt 4 ] && n=4; echo $$n)
test: setup lint
	$(BIN)/python -m pytest -q --durations=10 -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# trains and evaluates here, into runs/ (untracked, emptied first); the committed reports/demo_ml-100k is shown
# next to it as the reference. `make demo RESUME=1` continues an interrupted demo instead.
demo: setup
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/demo_ml-100k.yaml \
		--report=runs/demo_ml-100k --reference=reports/demo_ml-100k $(if $(RESUME),--resume,--fresh)

# the campaigns behind the committed reports: tuned, converged, 3 seeds (days on 2 cores; see each plan's header).
# --resume: an interrupted campaign continues where it stopped, rerunning only results whose settings, code, data
# or libraries changed. TIME_LIMIT=2h30m (bench, bench-levers, bench-ablations) starts only the runs expected to
# finish within that time.
LIMIT = $(if $(TIME_LIMIT),--time_limit=$(TIME_LIMIT))
bench: setup
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml --report=reports/ml-100k --resume $(LIMIT)

# the lever plan: what each M6Rec accuracy lever adds; its rows explored M6Rec before the winner became the defaults,
# so they are kept although the code moved on (--keep_finished; its report lists what changed since each ran)
bench-levers: setup
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/levers_ml-100k.yaml --report=reports/ml-100k-levers --resume --keep_finished $(LIMIT)

# where each campaign stands: per row its tuning trials and per seed done / reruns and why / continues / to run,
# read from the report folders by the rules --resume applies; runs nothing
STATUS = $(BIN)/python -m recbole_m6rec.benchmarks.leaderboard --status
status: setup
	$(STATUS) --config_files=configs/bench_ml-100k.yaml --report=reports/ml-100k
	$(STATUS) --config_files=configs/levers_ml-100k.yaml --report=reports/ml-100k-levers --keep_finished
	$(STATUS) --config_files=configs/ctr_ml-100k.yaml --report=reports/ctr_ml-100k
	$(STATUS) --config_files=configs/cold_ml-100k.yaml --report=reports/cold_ml-100k

bench-ablations: setup
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/ablations_ml-100k.yaml --report=reports/ml-100k-ablations --resume $(LIMIT)

bench-cold: setup
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/cold_ml-100k.yaml --report=reports/cold_ml-100k --resume
	$(RUN) -m recbole_m6rec.benchmarks.cold_groups --config_files=configs/cold_ml-100k.yaml --report=reports/cold_ml-100k
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/cold_ml-100k.yaml --report=reports/cold_ml-100k --report_only
	$(RUN) -m recbole_m6rec.benchmarks.cold_vs_full --cold_plan=configs/cold_ml-100k.yaml --cold_report=reports/cold_ml-100k \
		--full_plan=configs/bench_ml-100k.yaml --full_report=reports/ml-100k --report=reports/cold_ml-100k/cold_vs_full
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/cold_ablations_ml-100k.yaml --report=reports/cold_ml-100k-ablations --resume
	$(RUN) -m recbole_m6rec.benchmarks.cold_groups --config_files=configs/cold_ablations_ml-100k.yaml --report=reports/cold_ml-100k-ablations
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/cold_ablations_ml-100k.yaml --report=reports/cold_ml-100k-ablations --report_only

bench-ctr: setup
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/ctr_ml-100k.yaml --report=reports/ctr_ml-100k --resume
	$(RUN) -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/ctr_ablations_ml-100k.yaml --report=reports/ctr_ml-100k-ablations --resume
	$(RUN) -m recbole_m6rec.benchmarks.ctr_latency --report=reports/ctr_ml-100k

# the results 2 CPU cores cannot produce (ml-1m, the joined CTR model, zero-shot full ranking), on one CUDA GPU within
# BUDGET_S seconds (default 480; docs/benchmarks.md, recbole_m6rec/benchmarks/gpu_campaign.py). No setup step: on a GPU machine, name its Python
# with PYTHON=...; a second try continues (--resume). `make bench-gpu TINY=1` is the CPU check (~1-4 min).
bench-gpu: PYTHON ?= $(BIN)/python
bench-gpu:
	$(PYTHON) -m recbole_m6rec.benchmarks.gpu_campaign --out=$(or $(OUT),$(if $(TINY),runs/gpu-tiny,reports/gpu)) \
		--budget_s=$(or $(BUDGET_S),480) $(if $(TINY),--tiny --fresh,--resume)

bench-anomaly: setup
	$(RUN) -m recbole_m6rec.benchmarks.anomaly

clean:
	rm -rf $(VENV) log log_tensorboard saved runs
