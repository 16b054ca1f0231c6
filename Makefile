# Each target sets up .venv itself; a second run only checks a stamp.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch build this machine has on disk; override on others, e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DB ?= .demo-collection

.PHONY: setup demo test lint layers bench bench-full bench-quick bench-gpu clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vtsearch --db $(DEMO_DB) index data/samples
	$(VENV)/bin/vtsearch --db $(DEMO_DB) query "a cat"
	$(VENV)/bin/vtsearch --db $(DEMO_DB) query "a rocket on the launch pad" -n 3

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The layer rules of ../shared/DESIGN.md (import-linter contracts in pyproject.toml). Its graph
# builder walks the package's folder on disk, which the editable install's folder mapping hides:
# check a plain install in a scratch folder, run from there so the repository does not shadow it.
LAYERS := .cache/layers
layers: $(STAMP)
	rm -rf $(LAYERS) build
	$(PY) -m pip install -q --no-deps --no-build-isolation --target $(LAYERS) . 2>/dev/null
	rm -rf build
	cd $(LAYERS) && $(CURDIR)/$(VENV)/bin/lint-imports --no-cache $(CURDIR)/pyproject.toml

test: lint layers
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# CPU benches (under 30 minutes on 2 cores; the first run also makes 1,000 camera-size JPEGs).
# Each prints its own table; bench/summary.py prints the headline figures as one table.
BENCH_RESULTS := .cache/bench/results
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	rm -rf $(BENCH_RESULTS)
	$(PY) bench/eval_retrieval.py --split test
	$(PY) bench/indexing.py
	$(PY) bench/vector_index.py
	$(PY) bench/query_latency.py
	$(PY) bench/rerank_latency.py
	$(PY) bench/dupes.py
	$(PY) bench/summary.py

# The same with all 8,091 Flickr8k photos and the 1M-vector run (about an hour and 12 GB of RAM).
bench-full: $(BENCH_STAMP)
	rm -rf $(BENCH_RESULTS)
	$(PY) bench/indexing.py --limit 0
	$(PY) bench/vector_index.py --full
	$(PY) bench/query_latency.py
	$(PY) bench/rerank_latency.py
	$(PY) bench/summary.py

# Every bench at smoke size: checks they run, figures mean little.
bench-quick: $(BENCH_STAMP)
	rm -rf $(BENCH_RESULTS)
	$(PY) bench/indexing.py --quick
	$(PY) bench/vector_index.py --quick
	$(PY) bench/query_latency.py --quick
	$(PY) bench/rerank_latency.py --limit 100 --queries 20
	$(PY) bench/gpu_pipeline.py --dry
	$(PY) bench/summary.py

# On a machine with one GPU.
bench-gpu: $(BENCH_STAMP)
	bench/gpu.sh

clean:
	rm -rf $(DEMO_DB) .pytest_cache .ruff_cache
