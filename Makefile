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

.PHONY: venv serve test test-weights bench bench-inflight parity-inflight load soak clean image-venv test-image-env

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

# The container image's Python environment (deploy/docker), tested: Python 3.10 with
# deploy/docker/requirements.lock (torch's PyPI build, the CUDA one, runs on a CPU too), the
# server and client packages installed without dependencies as the Dockerfile installs the
# server, and tritonserver on PATH with the 3.10 backend stub in its backends folder, as in
# NVIDIA's image, taken from the nvidia-pytriton wheel (not installed as a package: the image
# has none). Rebuilt when the lock changes; the packages and test weights on every run.
PYTHON310 ?= $(shell sh scripts/python310.sh)
IMAGE_VENV ?= build/venv-image
IMAGE_BIN := $(IMAGE_VENV)/bin
IMAGE_LOCK := deploy/docker/requirements.lock
IMAGE_TRITON := $(IMAGE_VENV)/tritonserver
IMAGE_TEST_WEIGHTS := build/test-weights-image
PYTRITON ?= nvidia-pytriton==0.7.0
# test tools only, held to the lock's pins (-c) so that none moves a locked package
IMAGE_TEST_TOOLS := pytest pytest-timeout cryptography promql-parser
# The unit tests and the integration tests that serve every model through the launcher
# (parity, batching, ocr_page, the client and CLI, `serve` as users run it), so CI stays
# well under 20 minutes; IMAGE_TESTS="$(IMAGE_ALL_TESTS)" runs all (about 10 minutes on 2
# cores). Left out of both: the development scripts' tests (benchmark, soak, the line-finder
# comparison: matplotlib, psutil, OpenCV are not in the image) and the client's own install.
IMAGE_TESTS ?= tests/unit tests/integration/test_models.py tests/integration/test_ocr_page.py \
	tests/integration/test_client.py tests/integration/test_serve_cli.py \
	--ignore=tests/unit/test_bench_parts.py --ignore=tests/unit/test_soak_parts.py \
	--deselect=tests/unit/test_ocr_page_photographs.py::test_the_comparison_script_runs_its_finders
IMAGE_ALL_TESTS := tests/unit tests/integration \
	--ignore=tests/unit/test_bench_parts.py --ignore=tests/unit/test_soak_parts.py \
	--deselect=tests/unit/test_ocr_page_photographs.py::test_the_comparison_script_runs_its_finders \
	--ignore=tests/integration/test_bench.py --ignore=tests/integration/test_client_install.py

image-venv: $(IMAGE_VENV)/.installed

$(IMAGE_VENV)/.installed: $(IMAGE_LOCK)
	@test -n "$(PYTHON310)" || { echo "no usable Python 3.10 (python3.10 on PATH, pyenv's" \
		"versions/3.10.*): set PYTHON310=/path/to/python3.10" >&2; exit 1; }
	rm -rf $(IMAGE_VENV)
	$(PYTHON310) -m venv $(IMAGE_VENV)
	$(IMAGE_BIN)/pip install -q --upgrade pip
	$(IMAGE_BIN)/pip install -q -r $(IMAGE_LOCK)
	$(IMAGE_BIN)/pip install -q -c $(IMAGE_LOCK) $(IMAGE_TEST_TOOLS)
	$(IMAGE_BIN)/pip install -q --no-deps --target $(IMAGE_TRITON) "$(PYTRITON)"
	cp $(IMAGE_TRITON)/pytriton/tritonserver/python_backend_stubs/3.10/triton_python_backend_stub \
		$(IMAGE_TRITON)/pytriton/tritonserver/backends/python/
	touch $@

test-image-env: image-venv
	# the packages from a copy without build leftovers (as .dockerignore leaves them out)
	rm -rf $(IMAGE_VENV)/src && mkdir -p $(IMAGE_VENV)/src && cp -r server client $(IMAGE_VENV)/src/
	rm -rf $(IMAGE_VENV)/src/*/build $(IMAGE_VENV)/src/*/*.egg-info
	$(IMAGE_BIN)/pip install -q --no-deps --force-reinstall $(IMAGE_VENV)/src/server $(IMAGE_VENV)/src/client
	# every requirement met by the lock, but the server binary's wheel (the image has its own)
	@broken=$$($(IMAGE_BIN)/pip check | grep -v "requires nvidia-pytriton, which is not installed"); \
		if [ -n "$$broken" ]; then echo "$$broken" >&2; exit 1; fi
	# tiny weights written by this environment's transformers (random values of its own)
	rm -rf $(IMAGE_TEST_WEIGHTS)
	$(IMAGE_BIN)/i2tt-server make-test-weights $(IMAGE_TEST_WEIGHTS) >$(IMAGE_VENV)/test-weights.log 2>&1 \
		|| { cat $(IMAGE_VENV)/test-weights.log; exit 1; }
	PATH="$(abspath $(IMAGE_TRITON))/pytriton/tritonserver/bin:$$PATH" HF_HUB_OFFLINE=1 \
		TRANSFORMERS_OFFLINE=1 I2TT_TEST_WEIGHTS=$(IMAGE_TEST_WEIGHTS) \
		$(IMAGE_BIN)/python -m pytest -p no:cacheprovider $(IMAGE_TESTS) $(PYTEST_ARGS)

# Benchmarks: see scripts/bench.py --help (BENCH_ARGS="--quick" for a short run).
BENCH_ARGS ?=
bench: venv
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# In-flight against static batching, open-loop: see scripts/bench_inflight.py --help.
bench-inflight: venv
	$(BIN)/python scripts/bench_inflight.py $(BENCH_ARGS)

# In-flight against static answers over many distinct inputs per model (tiny weights):
# see scripts/parity_inflight.py --help (PARITY_ARGS="--count 100" for a short run).
PARITY_ARGS ?=
parity-inflight: venv test-weights
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python scripts/parity_inflight.py $(PARITY_ARGS)

# Locust load test: see scripts/load.py --help.
LOAD_ARGS ?=
load: venv test-weights
	$(BIN)/python scripts/load.py $(LOAD_ARGS)

# Soak test (not part of `make test`): the mixed load for SOAK_SECONDS against an own
# tiny-weights server; fails on failed requests or on memory that keeps growing after
# warm-up (MB per 10,000 requests, in total and per process).
SOAK_SECONDS ?= 1800
SOAK_ARGS ?=
soak: venv test-weights
	$(BIN)/python scripts/soak.py --duration $(SOAK_SECONDS) $(SOAK_ARGS)
