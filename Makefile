# padim-course: `make course` sets everything up and runs the course's main job; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The exact, tested set (Python 3.11, Linux x86_64): pyproject.toml's ranges resolved once, committed.
LOCK := requirements/lock.txt

.PHONY: course test lab lock links clean

# The locked set first, then the package itself (editable, its dependencies already there).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r $(LOCK)
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

# Data home for the notebooks (JupyterLab starts kernels in notebooks/): the repository's data/ unless set.
export PADIM_DATA ?= $(CURDIR)/data

# Execute every course chapter headless (embedded data, or real MVTec AD under $PADIM_DATA/mvtec_ad)
# and render them into build/index.html.
course: $(STAMP)
	$(PY) -m padim_utils.cli course --out build

# The whole test suite (CI runs exactly this).
test: $(STAMP)
	$(PY) -m pytest

# JupyterLab on the course notebooks. As root (e.g. in Docker) JupyterLab needs --allow-root to start.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Re-resolve the lock from pyproject.toml's ranges (after changing a range), with pip-tools in a venv of
# its own; torch stays at requirements/lock-torch.txt's build. Then `make test`.
lock:
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q pip-tools)
	.venv-lock/bin/pip-compile -q --extra dev --strip-extras --allow-unsafe --no-emit-index-url \
	    --no-emit-find-links --no-emit-trusted-host -c requirements/lock-torch.txt -o $(LOCK) pyproject.toml
	sed -i '/^padim-utils @ /d' $(LOCK)  # the extras' references to the package itself

# Write the repository's address (pyproject.toml's [project.urls] Repository) into every notebook's
# install cell and every launch link.
links: $(STAMP)
	$(PY) -m padim_utils.course.launch

clean:
	rm -rf build
