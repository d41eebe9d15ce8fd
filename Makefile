PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test bench lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ssum demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/run.py --trust off --suffix _trust_off
	$(BIN)/python bench/run.py --trust off --max-batch 8 --latency-tiles 40 --suffix _trust_off_batch8
	$(BIN)/python bench/bench_int8.py
	$(BIN)/python bench/bench_int8.py --batch 4 --out bench/results/int8_cpu_batch4.json
	$(BIN)/python bench/bench_tiling.py
	$(BIN)/python bench/bench_swap.py
	$(BIN)/python bench/bench_trust.py
	$(BIN)/python bench/bench_inspection.py

typecheck: $(STAMP)
	$(BIN)/mypy edge calibration trainer ssum
	bash tools/trt_typecheck.sh

lint: $(STAMP)
	$(BIN)/ruff check edge trainer calibration ssum tests bench

clean:
	rm -rf $(VENV) .pytest_cache
