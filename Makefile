# The two commands a new user runs: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.armor-installed
# recbole carries the real MovieLens-100K files; only its data is used, so it is installed without
# its (heavy, unneeded) dependencies.
NO_DEPS_ASSETS := recbole==1.2.1

export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo benchmark test lint venv bench bench-scale clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(STAMP)  ## create or update .venv (fast when nothing changed)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(NO_DEPS_ASSETS)
	@touch $(STAMP)

demo: $(STAMP)  ## run the main job end to end on the embedded MovieLens-100K (~14 min); writes runs/demo/
	$(PY) -m pipelines demo --workspace runs/demo

# The full benchmark: the demo's stages with equal budgets of BENCH_TRIALS validation trials per
# trainable model (the median stopping rule ends the clearly worse ones early), three training seeds,
# higher epoch caps, ARMoR-Graph's ablations and two models training at once.
BENCH_TRIALS ?= 4
benchmark: $(STAMP)  ## every model with equal tuning budgets and 3 seeds, both protocols and the cold start (~45 min); writes runs/benchmark/
	$(PY) -m pipelines demo --workspace runs/benchmark --trials $(BENCH_TRIALS) --seeds 0 1 2 --no-sweep \
	  --parallel 2 --content-epochs 40 --bpr-iterations 1000 --ablations --title "ARMoR benchmark"

test: lint  ## lint, then run the whole test suite (slow tests included)
	$(PY) -m pytest -q --durations=25

lint: $(STAMP)  ## ruff over the library, pipelines, tests and benchmarks
	$(VENV)/bin/ruff check armor pipelines tests benchmarks

bench: $(STAMP)  ## run every benchmark but the scale ladder (each prints its ratio against an in-run baseline)
	@for b in benchmarks/bench_*.py; do [ $$b = benchmarks/bench_scale.py ] && continue; echo "== $$b"; \
	  $(PY) $$b || exit 1; done

bench-scale: $(STAMP)  ## the scale ladder: ML-1M, ML-10M and ML-32M shapes (~30-40 min; generated files cached)
	$(PY) benchmarks/bench_scale.py

clean:  ## remove generated runs (keeps .venv)
	rm -rf runs .pytest_cache
