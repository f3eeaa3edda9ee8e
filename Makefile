# Landcover: `make demo` and `make test` set up everything they need on a fresh Debian 12 machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
APT_PACKAGES := python3-venv python3-qgis qgis qgis-providers gdal-bin time
CONFIG      ?= training/configs/default.yaml
DEMO_OUT    := out/demo
DEMO_IMAGE  := demo/orthophoto.tif

# TensorFlow and QGIS must never share a process; the TF-side tests run without the pytest-qgis plugin.
export SM_FRAMEWORK := tf.keras
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export QT_QPA_PLATFORM := offscreen
export LANDCOVER_PYTHON ?= $(abspath $(PY))
export PYTHONPATH := $(abspath .)

.PHONY: help setup apt test test-fast lint bench demo train smoke package screenshot clean soak

help:
	@echo "make demo     set up, then segment the bundled demo orthophoto with the default model into $(DEMO_OUT)/"
	@echo "make test     set up, then run every test (backend, training, plugin), slow ones included"
	@echo "make test-fast  set up, then run the quick tier (pytest -m 'not slow'), for the edit-test loop"
	@echo "make setup    install Debian packages (as root), create $(VENV), install pinned Python packages"
	@echo "make lint     ruff"
	@echo "make bench    run the benchmarks (results printed and written to benchmarks/results/)"
	@echo "make train    run the training pipeline (CONFIG=$(CONFIG); DATA=/path/to/landcover.ai for the real data)"
	@echo "make smoke    run every training step end to end on tiny synthetic data"
	@echo "make package  build dist/landcover_plugin.zip for QGIS 'Install from ZIP'"
	@echo "make soak     a few hundred segmentations with random faults; fails if any result is lost or mixed"

setup: apt $(STAMP)

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing; run 'sudo make setup' or: sudo apt-get install$$missing" >&2; exit 2; fi; \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): requirements.txt $(wildcard backend/requirements/*.txt)
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r backend/requirements/tensorflow-nodeps.txt
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -p no:pytest_qgis -p no:cacheprovider tests/backend tests/training
	@if [ -d tests/plugin ]; then $(PY) -m pytest -p no:cacheprovider tests/plugin; fi

test-fast: setup
	$(PY) -m pytest -p no:pytest_qgis -p no:cacheprovider -m "not slow" tests/backend tests/training
	@if [ -d tests/plugin ]; then $(PY) -m pytest -p no:cacheprovider -m "not slow" tests/plugin; fi

lint: setup
	$(VENV)/bin/ruff check backend training landcover_plugin tests benchmarks scripts

bench: setup
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_runtimes.py
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_batch.py

demo: setup
	@mkdir -p $(DEMO_OUT)
	$(PY) -m backend segment $(DEMO_IMAGE) $(DEMO_OUT)/landcover.tif
	@cp $(DEMO_OUT)/landcover.areas.csv $(DEMO_OUT)/areas.csv
	$(PY) -m backend preview $(DEMO_IMAGE) $(DEMO_OUT)/landcover.tif $(DEMO_OUT)/preview.png
	@$(PY) demo/score.py $(DEMO_OUT)/landcover.tif demo/truth.tif
	@echo; echo "demo outputs in $(DEMO_OUT)/:"; ls -1 $(DEMO_OUT)/ | sed 's/^/  /'

train: setup
	$(PY) -m training run --config $(CONFIG) $(if $(DATA),--set data.dir=$(DATA))

soak: setup
	$(PY) scripts/soak.py --runs $${RUNS:-300}

smoke: setup
	$(PY) -m training run --config training/configs/smoke.yaml

package: setup
	$(PY) scripts/package_plugin.py dist/landcover_plugin.zip

screenshot: setup
	$(PY) scripts/render_screenshot.py

clean:
	rm -rf out dist build .pytest_cache .ruff_cache
