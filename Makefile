# make demo   set up (venv + Delta jars, cached outside the clone) and run the main job end to end
# make test       set up and run the quick tier (every test whose own cost is small, on the real stack; <= 15 min)
# make test-all   everything, the slow tier too (kill harness, end-to-end pipelines, trainings): what CI runs
# make setup  only set up; prints where the venv and jars are
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PATHS := $(shell tools/bootstrap.sh --paths)
VENV := $(patsubst VENV=%,%,$(filter VENV=%,$(PATHS)))
JARS := $(patsubst JARS=%,%,$(filter JARS=%,$(PATHS)))
PY := $(VENV)/bin/python
# lib/ first on the path: the cached venv is shared by clones, this clone's code must win.
RUN := env PATH="$(VENV)/bin:$$PATH" PYTHONPATH="$(CURDIR)/lib" CUSTOMER_VALUE_JARS="$(JARS)" \
       PYSPARK_PYTHON="$(PY)" PYSPARK_DRIVER_PYTHON="$(PY)" TF_CPP_MIN_LOG_LEVEL=3
PYTEST_ARGS ?=
BENCH_ARGS ?=
# pytest-xdist worker processes for the test targets (each its own Spark session): on this 2-core machine two use
# the fifth of the time one process leaves a core idle (docs/stack.md); 0 runs the suite in one process
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

.PHONY: setup demo smoke test test-all reliability-doc notebooks validate-bundle bench-generate bench-features bench-training bench-protocol bench-transactions bench-scoring bench-daily clean-data

setup:
	tools/bootstrap.sh >/dev/null
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . >/dev/null
	$(RUN) $(PY) -m customer_value.class_archive >/dev/null
	echo "venv: $(VENV)"; echo "jars: $(JARS)"

# The demo pseudonymises with the public demo key (generated data only; it says so loudly).
# A second run skips every stage (nothing changed) and prints the same scores.
demo: setup
	$(RUN) customer-value pipeline --generate --conf conf/local.yaml --set pseudonymisation.demo_mode=true

# the stack end to end once on a tiny table: Delta, delta-rs, Petastorm, Horovod, mapInPandas scoring
smoke: setup
	$(RUN) customer-value smoke --conf conf/local.yaml

# after make demo: every analyst notebook executed on the demo's tables, copies with outputs in reports/notebooks/
notebooks: setup
	$(RUN) $(PY) -m customer_value.notebooks --conf conf/local.yaml

# the Databricks bundle checked offline (typed models of databricks-bundles + our own checks)
validate-bundle: setup
	$(RUN) $(PY) deploy/validate_bundle.py

bench-features: setup
	$(RUN) $(PY) bench/features.py --conf conf/local.yaml

bench-training: setup
	$(RUN) $(PY) bench/training.py --conf conf/local.yaml

bench-scoring: setup
	$(RUN) $(PY) bench/scoring.py --conf conf/local.yaml $(BENCH_ARGS)

# after make demo: one new day (ingest + clean + features + score) against the full rebuild of the same stages
bench-daily: setup
	$(RUN) $(PY) bench/daily.py --conf conf/local.yaml $(BENCH_ARGS)

# after make demo: settings chosen on S - H and S - 2H, reported at the untouched S = D - 2H and at D - H (docs/evaluation.md)
bench-protocol: setup
	$(RUN) $(PY) bench/protocol.py --conf conf/local.yaml $(BENCH_ARGS)

bench-transactions: setup
	$(RUN) $(PY) bench/transactions_backtest.py

bench-generate: setup
	$(RUN) $(PY) bench/generate.py --conf conf/local.yaml

# the quick tier: unit and integration tests on local Spark, real Delta, one horovodrun -np 2 smoke run, MLflow on
# SQLite, CLI processes where a test needs one; the `slow` marker is left out
test: setup
	$(RUN) $(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

# everything: the quick tier and the slow one (kill harness, end-to-end pipelines and backtests, trainings,
# spark-submit); .ci/run runs this
test-all: setup
	$(RUN) $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# the kill-and-rerun harness, then docs/reliability.md from the table it wrote to reports/ (tests never change a
# tracked file)
reliability-doc: setup
	$(RUN) $(PY) -m pytest tests/reliability/test_kill_rerun.py $(XDIST) $(PYTEST_ARGS)
	cp reports/reliability.md docs/reliability.md
	echo "docs/reliability.md written from reports/reliability.md"

clean-data:
	rm -rf data/local
