# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
# The local engine's torch, pinned and installed first so pip never resolves an unpinned (CUDA) build.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# The demo's lighter install: loopwire, the openai SDK and matplotlib; no torch, no test tools.
DEMO_STAMP := $(VENV)/.installed-demo

# Real servers the tests start themselves (COMMAND=Debian package), installed by `make test` when missing.
SYSTEM_PACKAGES := redis-server=redis-server haproxy=haproxy openssl=openssl

.PHONY: system-packages setup demo test lint bench bench-agent bench-quick bench-gateway bench-local bench-redis bench-scale fuzz soak serve clean

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

demo: $(DEMO_STAMP)
	$(BIN)/python examples/run_demo.py
	$(BIN)/loopwire bench --quick --out bench/results/quick

system-packages:
	@bash scripts/system-packages.sh $(SYSTEM_PACKAGES)

test: $(STAMP) system-packages
	$(BIN)/python -m pytest

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

# Redis vs SQLite as the store: chain resolution (N = 1..200) and put + get (needs redis-server).
bench-redis: $(STAMP) system-packages
	$(BIN)/loopwire bench redis --lengths 1,10,50,200 --reps 200 --puts 1000

# Redis vs SQLite per turn, and 1/2/3 nodes behind HAProxy on one Redis (needs redis-server and haproxy).
bench-scale: $(STAMP) system-packages
	$(BIN)/loopwire bench scale --turns 50 --conversations 6 --load 16 --load-turns 60

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
	rm -rf $(VENV) .loopwire .pytest_cache .mypy_cache .ruff_cache
