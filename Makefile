# Thin wrappers; the real entry points are `i2tt-server`, `i2tt`, pytest and scripts/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build available here; a GPU host may set e.g. TORCH="torch==2.5.1".
TORCH ?= torch==2.13.0
# Weights root to serve; WEIGHTS=test serves the tiny offline test weights.
WEIGHTS ?=
TEST_WEIGHTS := build/test-weights
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
PYTEST_ARGS ?=

.PHONY: venv serve test test-weights bench load soak clean

venv: $(VENV)/.installed

$(VENV)/.installed: server/pyproject.toml client/pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so nothing pulls a different (CUDA) build as a dependency
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e server -e client -r requirements-dev.txt
	touch $@

test-weights: $(TEST_WEIGHTS)/t5-tags/config.json

# rebuilt whenever the builder changes, so tests never run on stale weights
$(TEST_WEIGHTS)/t5-tags/config.json: server/i2tt_server/weights/synthetic.py | venv
	rm -rf $(TEST_WEIGHTS)
	$(BIN)/i2tt-server make-test-weights $(TEST_WEIGHTS)

ifeq ($(WEIGHTS),test)
serve: venv test-weights
	$(BIN)/i2tt-server serve --weights $(TEST_WEIGHTS) --no-fetch \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)
else
serve: venv
	$(BIN)/i2tt-server serve $(if $(WEIGHTS),--weights $(WEIGHTS)) \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)
endif

test: venv test-weights
	I2TT_TEST_WEIGHTS=$(TEST_WEIGHTS) $(BIN)/python -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf build

# Benchmarks: see scripts/bench.py --help (BENCH_ARGS="--quick" for a short run).
BENCH_ARGS ?=
bench: venv
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# Locust load test: see scripts/load.py --help.
LOAD_ARGS ?=
load: venv test-weights
	$(BIN)/python scripts/load.py $(LOAD_ARGS)

# Soak test (not part of `make test`): the mixed load for SOAK_SECONDS against an own
# tiny-weights server; reports failures and the server processes' memory growth.
SOAK_SECONDS ?= 600
SOAK_ARGS ?=
soak: venv test-weights
	$(BIN)/python scripts/soak.py --duration $(SOAK_SECONDS) $(SOAK_ARGS)
