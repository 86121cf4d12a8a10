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

# Data home for the notebooks (JupyterLab starts kernels in notebooks/): the repository's data/ unless set.
export PADIM_DATA ?= $(CURDIR)/data

# Execute every course notebook headless (embedded data, or real MVTec AD under $PADIM_DATA/mvtec_ad)
# and render them into build/index.html.
course: $(STAMP)
	$(PY) -m padim_utils.cli course --notebooks notebooks --out build

# The whole test suite (CI runs exactly this).
test: $(STAMP)
	$(PY) -m pytest

# JupyterLab on the course notebooks. As root (e.g. in Docker) JupyterLab needs --allow-root to start.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf build
