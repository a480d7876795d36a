# Everything runs in a virtual environment this Makefile creates (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-slow bench clean

setup: $(STAMP)

# torch is pinned here (a local CPU build); the package itself accepts a range.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mpno train

# The default run leaves out the tests marked slow (pyproject.toml); test-slow runs only those.
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Generated data are kept: the default example's cache is $MPNO_CACHE, else ~/.cache/mpno.
clean:
	rm -rf $(VENV) runs .cache
	@echo "kept the generated data in $${MPNO_CACHE:-$$HOME/.cache/mpno}; remove it with: rm -rf $${MPNO_CACHE:-$$HOME/.cache/mpno}"
