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

.PHONY: setup system-deps java chromium weights demo test test-fast bench train train-resume train-export evaluate clean pack

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Exact versions from requirements.lock keep pip's resolver fast and installs reproducible.
$(VENV)/.installed: $(BIN)/python setup.py requirements.lock
	$(BIN)/pip install -qq -c requirements.lock -e ".[test,pack]"
	$(BIN)/pip install -qq --no-deps "fer==25.10.3"  # peer baseline for bench/ (its own pins clash; needs setuptools<81)
	touch $@

setup: $(VENV)/.installed

# Java for Spark (demo and tests); Chromium for the dashboard browser tests. Installed with apt when
# missing (needs root); otherwise install them yourself and these are no-ops.
# apt's and dpkg's hundreds of progress lines go to build/apt.log; its last lines are shown if it fails.
APT_LOG := build/apt.log
apt_install = mkdir -p $(dir $(APT_LOG)) && echo "installing $(2) with apt (log: $(APT_LOG))" && \
	{ { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); } > $(APT_LOG) 2>&1 || \
	  { tail -n 20 $(APT_LOG); echo "apt-get install $(1) failed (it needs root and Debian's archive): install $(1) yourself, then rerun"; exit 1; }; }

java:
	@command -v java >/dev/null || { $(call apt_install,openjdk-17-jre-headless,Java 17 for Spark); }
	@java -version 2>&1 | head -1

chromium:
	@command -v chromium >/dev/null || { $(call apt_install,chromium,Chromium for the browser tests); }

system-deps: java chromium

# Fetch and sha256-verify the detector and baseline weights once into $$FER_CORE_HOME (~/.cache/fer_core).
weights: setup
	$(BIN)/python -m fer_core models --fetch

# Spark's console at WARN: log4j reads its file when the JVM starts (jobs/score_campaign.py --verbose: all logs)
SPARK_QUIET := --driver-java-options "-Dlog4j2.configurationFile=$(abspath conf/log4j2.properties)"

# The job's Python environment packed for cluster nodes that lack the project (README, "On a cluster"):
# spark-submit --archives $(PACK)#environment --conf spark.pyspark.python=./environment/bin/python ...
# A venv with the project and its runtime dependencies only (no test extras; reused by the next pack, which
# reinstalls the project: `make clean` starts afresh), the verified weights
# (and the converted RetinaFace) under share/fer_core, packed by venv-pack. Nodes need $(PYTHON)'s
# interpreter at the same path (venv-pack does not copy it).
PACK ?= build/campaign-emotion-env.tar.gz
PACK_VENV ?= build/pack-venv
FER_CORE_HOME ?= $(HOME)/.cache/fer_core

pack: setup weights
	test -x $(PACK_VENV)/bin/python || $(PYTHON) -m venv $(PACK_VENV)
	$(PACK_VENV)/bin/pip install -q -c requirements.lock .
	rm -rf $(PACK) $(PACK_VENV)/share/fer_core $(PACK_VENV)/share/campaign-emotion
	mkdir -p $(PACK_VENV)/share/fer_core $(PACK_VENV)/share/campaign-emotion
	cp -R $(FER_CORE_HOME)/. $(PACK_VENV)/share/fer_core/
	cp -R conf $(PACK_VENV)/share/campaign-emotion/
	cd / && FER_CORE_HOME=$(abspath $(PACK_VENV))/share/fer_core $(abspath $(PACK_VENV))/bin/python -c \
	    "import sys; from fer_core.cli import main; from fer_core.detectors import create_detector; \
	     rc = main(['models', '--fetch']); create_detector('retinaface', engine='tflite'); sys.exit(rc)"
	mkdir -p $(dir $(PACK))
	$(BIN)/venv-pack -p $(PACK_VENV) -o $(PACK) --compress-level 1
	@echo "packed $(PACK): spark-submit --archives $(PACK)#environment --conf spark.pyspark.python=./environment/bin/python ..."

demo: setup java weights
	$(BIN)/python jobs/make_sample_dump.py --out $(DEMO_DIR)
	$(BIN)/spark-submit --master "local[2]" $(SPARK_QUIET) jobs/score_campaign.py --input $(DEMO_DIR)/dump --output $(DEMO_DIR)/lake
	@echo ""
	@echo "Dashboards: file://$(abspath $(DEMO_DIR))/lake/dashboards/index.html"

# The local page on the same FacePipeline: http://127.0.0.1:8501/ (make serve SERVE_ARGS="--port 9000 --config conf/inference.yaml")
.PHONY: serve
serve: setup weights
	$(BIN)/python -m fer_core serve $(SERVE_ARGS)

test: setup system-deps weights
	$(BIN)/python -m pytest -p no:cacheprovider

test-fast: setup
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow"

bench: setup
	$(BIN)/python bench/bench_inference.py
	$(BIN)/python bench/bench_job.py

train: setup
	$(BIN)/python -m fer_core.train --config conf/experiments/train_default.yaml

# A long run in slices across machines (issue 25): train-resume continues from the run's output_dir, or, on a
# fresh clone where that is empty, from the committed portable_checkpoint file; train-export (safe while it
# trains) refreshes that file from the latest epoch, to be committed at the end of a slice.
# v6 and v7 ended by their rules (README "Long runs across machines"); the run under way is v8, in bfloat16.
LONG_RUN ?= conf/experiments/train_fer_vgg_v8.yaml
FER2013 ?= ../shared/data/fer2013/fer2013.csv.gz
train-resume: setup
	$(BIN)/python -m fer_core.train --config $(LONG_RUN) --data $(FER2013)

train-export:
	$(BIN)/python -m fer_core.train --config $(LONG_RUN) --export-checkpoint

evaluate: setup
	$(BIN)/python -m fer_core.evaluate --model default --data ../shared/data/fer2013/fer2013.csv.gz --out out/eval --compare fer-mini-xception

clean:
	rm -rf out artifacts .pytest_cache build
