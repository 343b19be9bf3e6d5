# sparktile — two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project (pip only, everything from PyPI) when needed;
# the install step is skipped while pyproject.toml is unchanged.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sparktile-installed
EXTRAS ?= dev,formal,regress

.PHONY: all venv test test-all bench demo demo-matmuls formal coverage lint clean info

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@# setuptools reports every editable install as a warning ("Editable installation. Please
	@# be careful with folders ..."); it is information only, so the install stays silent.
	PYTHONWARNINGS="ignore:Editable installation" \
	  $(PY) -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $@

venv: $(STAMP)

info: $(STAMP)
	$(VENV)/bin/sparktile info

# CI's entry point (.ci/run). Unit tier (Amaranth simulator) + system tier (cocotb+Verilator).
# Tests run on every core (pytest-xdist; TEST_JOBS=1 for one process): the Verilator build
# cache is locked per entry, so two workers wanting one configuration build it once.
TEST_JOBS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS) $(PYTEST_ARGS)

# Everything, long sweeps included.
test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PY) -m pytest -q -s -m bench

# The main job: the shipped code model writes Python with the whole decoder on the RTL (the
# 8x8 mesh of programmable cores, 64 KiB a PE): token id in, greedy token out, every op on the
# fabric, every position checked against the golden int path as it goes.
demo: $(STAMP)
	$(VENV)/bin/sparktile run --prompt "def fibonacci(n):" --max-tokens 16 --temperature 0 \
		--json demo-report.json

# The first slice's job: every matmul on the 8x8 GEMV mesh (weights stationary), the host
# running the rest, each matmul checked against the golden model.
demo-matmuls: $(STAMP)
	$(VENV)/bin/sparktile run --on-fabric matmuls --prompt "def fibonacci(n):" --max-tokens 24 \
		--json demo-matmuls-report.json

# Formal proofs of the router, its FIFO and arbiters and the requantization pipeline, each
# with a mutant that must fail (SymbiYosys from PyPI; the table gives times and traces).
formal: $(STAMP)
	$(PY) -m sparktile.formal --keep build/formal

# RTL code coverage (Verilator line, branch, toggle) of a seeded regression, merged into
# build/coverage/report.md with the per-module table and the lines never hit.
coverage: $(STAMP)
	$(PY) -m sparktile.scripts.coverage_regression --out build/coverage

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache
