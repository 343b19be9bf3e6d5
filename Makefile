# sparktile — two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project (pip only, everything from PyPI) when needed;
# the install step is skipped while pyproject.toml is unchanged.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sparktile-installed
EXTRAS ?= dev

.PHONY: all venv test test-all bench demo lint clean info

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $@

venv: $(STAMP)

info: $(STAMP)
	$(VENV)/bin/sparktile info

# CI's entry point (.ci/run). Unit tier (Amaranth simulator) + system tier (cocotb+Verilator).
test: $(STAMP)
	$(PY) -m pytest -q

# Everything, long sweeps included.
test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PY) -m pytest -q -s -m bench

# The main job. Until the LLM-in-the-loop run lands (issue 5), it is an int8 GEMV that fills a
# 4x4 mesh's SRAM, checked bit-exactly, and a random-traffic stress of a 3x5 fabric.
demo: $(STAMP)
	$(VENV)/bin/sparktile info
	$(VENV)/bin/sparktile gemv --mesh 4x4 --m 256 --n 992 --seed 3
	$(VENV)/bin/sparktile stress --mesh 3x5 --wavelets 20000 --seed 7

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache
