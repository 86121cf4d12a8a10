# padim-course: `make course` sets everything up and runs the course's main job; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: course test lab clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

# Generate the embedded dataset, fit + evaluate PaDiM on it (offline backbone), write results under build/.
course: $(STAMP)
	$(PY) -m padim_utils.cli course --out build

# The whole test suite (CI runs exactly this).
test: $(STAMP)
	$(PY) -m pytest

# JupyterLab on the course notebooks.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf build
