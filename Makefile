# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/python -m pip
PIPOPTS = --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test test-all bench check leaderboards install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# the package and its runtime dependencies, pinned by constraints.txt
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install $(PIPOPTS) -e .
	touch $@

# plus the test extras (pytest, hypothesis, open_clip, transformers, ...)
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install $(PIPOPTS) -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/cxrbench run

test: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -m "not slow" -q

test-all: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

bench: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
