# One command to set up and run the tests, one to set up and run the demo.
# Both create (or reuse) a virtual environment in $(VENV): the demo trains, so
# it installs the package with its training extra ('.[train]': TensorFlow,
# TFDS, clu, orbax, ...); the tests install '.[test]' (training + test tools).
# Scoring alone needs neither: `pip install .` (no TensorFlow).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/synthetic

.PHONY: setup setup-test test demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: setup.py | $(PY)
	$(PY) -m pip install -q -e '.[train]'
	touch $@

$(VENV)/.installed-test: setup.py | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

# pytest exits 5 when it collects no test; say so instead of failing obscurely.
test: setup-test
	$(PY) -m pytest -n 2 --durations=25 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

demo: setup
	$(PY) -m musiq_jax.main --config=configs/synthetic.py --workdir=$(WORKDIR)
