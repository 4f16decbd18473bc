# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/python -m pip
PIPOPTS = --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test test-all bench check baseline leaderboards install clean

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

# Regression gate on retrieval quality: the fixed CI suite vs the committed baseline.
CI_RESULTS ?= .ci-results
check: $(VENV)/.installed
	rm -rf $(CI_RESULTS) .ci-cache
	$(VENV)/bin/cxrbench suite configs/suites/ci.yaml --out $(CI_RESULTS) --cache-dir .ci-cache --strict -q
	$(VENV)/bin/cxrbench check --baseline leaderboards/baseline.json --results $(CI_RESULTS)

# Rewrite the baseline from fresh runs of the CI suite (commit it with a reason).
baseline: $(VENV)/.installed
	rm -rf results/ci
	$(VENV)/bin/cxrbench suite configs/suites/ci.yaml --out results/ci --cache-dir results/ci-cache --strict -q
	$(VENV)/bin/cxrbench baseline results/ci --out leaderboards/baseline.json --force

# Regenerate the published tables in leaderboards/ from real runs of the shipped suites.
leaderboards: $(VENV)/.installed
	$(VENV)/bin/cxrbench suite configs/suites/published.yaml --out results/published --cache-dir results/published-cache
	$(VENV)/bin/cxrbench leaderboard results/published --out leaderboards --clean
