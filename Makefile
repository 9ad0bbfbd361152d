# One command to set up and run the tests, one to set up and run the demo.
# Both create (or reuse) a virtual environment in $(VENV).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/synthetic

.PHONY: setup test demo

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# pytest exits 5 when it collects no test; say so instead of failing obscurely.
test: setup
	$(PY) -m pytest -n 2 --durations=15 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

demo: setup
	$(PY) -m musiq_jax.main --config=configs/synthetic.py --workdir=$(WORKDIR)
