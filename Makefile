# Two commands for a fresh machine with Python 3.11 and pip (see README.md):
#   make demo   set up .venv, train and evaluate M6Rec next to baselines on ml-100k, print the table
#   make test   set up .venv, run the test suite
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup test demo bench bench-reference bench-cold bench-ctr bench-anomaly clean

setup:
	bash .ci/setup-venv

test: setup
	$(BIN)/python -m pytest -q --durations=10

demo: setup
	$(BIN)/python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/demo_ml-100k.yaml --report=reports/demo_ml-100k

bench: setup
	$(BIN)/python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml --report=reports/ml-100k-full

# the committed reference reports (README): 3 seeds and a 10-epoch budget / 1 seed and 5 epochs, for every row (~1.5 h / ~15 min here)
bench-reference: setup
	$(BIN)/python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/bench_ml-100k.yaml --rows=M6Rec,SASRec,BPR,Pop --seeds=3 --epochs=10 --stopping_step=3 --report=reports/ml-100k

bench-cold: setup
	$(BIN)/python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/cold_ml-100k.yaml --rows=M6Rec,M6Rec-all-negatives,M6Rec-prior,M6Rec-all-negatives-prior,M6Rec-all-negatives-prior-0.03,M6Rec-all-negatives-prior-0.3,M6Rec-hybrid,M6Rec-hybrid-prior,M6Rec-zero-shot,SASRec,BPR,Pop --seeds=1 --epochs=5 --stopping_step=3 --report=reports/cold_ml-100k

bench-ctr: setup
	$(BIN)/python -m recbole_m6rec.benchmarks.leaderboard --config_files=configs/ctr_ml-100k.yaml --rows=M6RecCTR,DIN,FM,DeepFM,WideDeep,DIEN,M6RecCTR-no-history-labels,M6RecCTR-L1,M6RecCTR-L3,M6RecCTR-option,M6RecCTR-prompt,M6RecCTR-upper --seeds=1 --epochs=5 --stopping_step=2 --report=reports/ctr_ml-100k
	$(BIN)/python -m recbole_m6rec.benchmarks.ctr_latency --report=reports/ctr_ml-100k

bench-anomaly: setup
	$(BIN)/python -m recbole_m6rec.benchmarks.anomaly

clean:
	rm -rf $(VENV) log log_tensorboard saved
