# Each target sets up .venv itself; a second run only checks a stamp.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch build this machine has on disk; override on others, e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DB ?= .demo-collection

.PHONY: setup demo test lint bench clean

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

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/eval_retrieval.py --split test
	$(PY) bench/throughput.py
	$(PY) bench/rerank_latency.py

clean:
	rm -rf $(DEMO_DB) .pytest_cache .ruff_cache
