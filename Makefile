# Two commands do everything on a fresh machine (Debian/Ubuntu with Python 3.11):
#   make demo   - set up, generate built-in sample data, run the Spark job (local Spark, local Delta), render dashboards
#   make test   - set up (incl. Chromium for the browser tests) and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= out/demo
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup system-deps java chromium weights demo test test-fast bench train evaluate clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Exact versions from requirements.lock keep pip's resolver fast and installs reproducible.
$(VENV)/.installed: $(BIN)/python setup.py requirements.lock
	$(BIN)/pip install -q -c requirements.lock -e ".[test]"
	$(BIN)/pip install -q --no-deps "fer==25.10.3"  # peer baseline for bench/ (its own pins clash; needs setuptools<81)
	touch $@

setup: $(VENV)/.installed

# Java for Spark (demo and tests); Chromium for the dashboard browser tests. Installed with apt when
# missing (needs root); otherwise install them yourself and these are no-ops.
java:
	@command -v java >/dev/null || { echo "installing Java 17 for Spark"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; }
	@java -version 2>&1 | head -1

chromium:
	@command -v chromium >/dev/null || { echo "installing Chromium for the browser tests"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

system-deps: java chromium

# Fetch and sha256-verify the detector and baseline weights once into $$FER_CORE_HOME (~/.cache/fer_core).
weights: setup
	$(BIN)/python -m fer_core models --fetch

# Spark's console at WARN: log4j reads its file when the JVM starts (jobs/score_campaign.py --verbose: all logs)
SPARK_QUIET := --driver-java-options "-Dlog4j2.configurationFile=$(abspath conf/log4j2.properties)"

demo: setup java weights
	$(BIN)/python jobs/make_sample_dump.py --out $(DEMO_DIR)
	$(BIN)/spark-submit --master "local[2]" $(SPARK_QUIET) jobs/score_campaign.py --input $(DEMO_DIR)/dump --output $(DEMO_DIR)/lake
	@echo ""
	@echo "Dashboards: file://$(abspath $(DEMO_DIR))/lake/dashboards/index.html"

test: setup system-deps weights
	$(BIN)/python -m pytest -p no:cacheprovider

test-fast: setup
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow"

bench: setup
	$(BIN)/python bench/bench_inference.py
	$(BIN)/python bench/bench_job.py

train: setup
	$(BIN)/python -m fer_core.train --config conf/train_default.yaml

evaluate: setup
	$(BIN)/python -m fer_core.evaluate --model default --data ../shared/data/fer2013/fer2013.csv.gz --out out/eval --compare fer-mini-xception

clean:
	rm -rf out artifacts .pytest_cache
