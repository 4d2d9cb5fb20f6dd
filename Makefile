# hpcgan: two commands do everything on a fresh Linux machine (Python >= 3.10, a C/C++ compiler,
# make). `make demo` trains the built-in digits on 2 MPI ranks; `make test` runs the test suite.
# Use a cluster MPI instead of the PyPI Open MPI wheel:  make HPCGAN_MPI=system demo

VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
DEMO_NP   ?= 2
DEMO_DIR  ?= runs/demo
DEMO_ARGS ?=

export HPCGAN_VENV := $(abspath $(VENV))
export PYTHON
# Open MPI refuses to run as root without these (containers, CI); harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
# Waiting ranks yield the core instead of busy-polling: large win when ranks fill the node.
export OMPI_MCA_mpi_yield_when_idle := 1
export HDF5_USE_FILE_LOCKING := FALSE

.PHONY: venv demo test lint clean slurm

# Idempotent: checks in about a second when everything is installed.
venv:
	tools/setup_env.sh

demo: venv
	@start=$$(date +%s); \
	$(VENV)/bin/mpirun --oversubscribe -np $(DEMO_NP) $(PY) -m hpcgan.train \
	    run.dir=$(DEMO_DIR) $(DEMO_ARGS) || exit $$?; \
	echo; echo "demo finished in $$(( $$(date +%s) - start )) s"; \
	echo "  sample grid: $$(ls $(DEMO_DIR)/samples/*.png | tail -n 1)"; \
	echo "  checkpoint:  $(DEMO_DIR)/checkpoints/$$(cat $(DEMO_DIR)/checkpoints/latest)"; \
	echo "  metrics:     $(DEMO_DIR)/metrics.jsonl   log: $(DEMO_DIR)/log.txt"

# Slurm + munge for tests/test_slurm.py, installed only as root with apt-get (CI, containers);
# elsewhere install.sh says why and those tests skip with the reason (pytest -ra shows it);
# as root with apt-get a Slurm that is missing or does not start fails them (tests/prereqs.py).
slurm:
	tools/slurm/install.sh || echo "make: no Slurm (see above): tests/test_slurm.py will skip, or fail as root with apt-get"

test: venv slurm
	$(PY) -m pytest -ra --durations=30 $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check hpcgan data_prep tests
	$(VENV)/bin/ruff format --check hpcgan data_prep tests

clean:
	rm -rf $(VENV) runs data .pytest_cache
