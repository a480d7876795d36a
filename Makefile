# Everything runs in a virtual environment this Makefile creates (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run lint test test-slow bench clean

setup: $(STAMP)

# torch is pinned here (a local CPU build); the package itself accepts a range.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,export]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mpno train

# The default run lints (ruff, pyproject.toml), then leaves out the tests marked slow; test-slow runs only those.
test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Removes the environment, the runs and Python's caches; keeps generated data (data/ and the default
# example's cache, $MPNO_CACHE or ~/.cache/mpno) and says what else git does not track.
CACHE = $${MPNO_CACHE:-$$HOME/.cache/mpno}
clean:
	rm -rf $(VENV) runs .cache .pytest_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	@echo "kept the default example's data in $(CACHE); remove it with: rm -rf $(CACHE)"
	@left="$$(git status --porcelain --ignored 2>/dev/null | sed -n 's/^[?!][?!] //p')"; \
	if [ -n "$$left" ]; then echo "kept in this checkout, not tracked by git (remove what you no longer need):"; \
	echo "$$left" | sed 's/^/  /'; else echo "nothing else is left that git does not track"; fi
