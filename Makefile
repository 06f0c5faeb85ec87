# streamrec — `make help` lists the targets. The README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export OPENBLAS_NUM_THREADS ?= 1

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

setup: ## set up a bare machine: virtualenv, install, Java/Maven/Redis check, Kafka jars
	@bash scripts/bootstrap.sh

demo: setup ## run the whole system locally (stack, model, worker, API, storefront, traffic); Ctrl-C stops
	$(BIN)/streamrec demo

test: setup ## run every test: unit, integration on real Kafka and Redis (local stack), then test-cluster
	$(BIN)/streamrec stack up
	mkdir -p test-results
	$(BIN)/pytest -m "not reliability" --junitxml=test-results/junit.xml --timeout=600
	$(MAKE) --no-print-directory test-cluster

test-cluster: setup ## the integration tests again, on the local Redis Cluster (3 masters, 1 replica each)
	$(BIN)/streamrec stack up --redis-cluster
	mkdir -p test-results
	STREAMREC_TEST_REDIS_CLUSTER=1 $(BIN)/pytest tests/integration -m "not reliability and not single_redis" \
		--junitxml=test-results/junit-cluster.xml --timeout=600

test-unit: setup ## unit tests only (no services)
	$(BIN)/pytest tests/unit -q

RELIABILITY_TESTS := tests/reliability tests/unit/streamrec/test_events_properties.py \
	tests/unit/streamrec/test_events.py tests/unit/online_api/test_api_contract_strings.py \
	tests/integration/test_poison_events.py tests/integration/test_worker_isolation.py \
	tests/unit/online_api/test_api_http_details.py tests/integration/test_api_http_details.py \
	tests/unit/online_api/test_api_key_strength.py tests/unit/batch/test_batch_cli.py tests/unit/test_compose.py \
	tests/integration/test_dead_letters_cli.py \
	tests/integration/test_hostile_input.py tests/integration/test_api_schemathesis.py tests/integration/test_rebuild.py \
	tests/reliability/test_redis_cluster_failover.py

reliability: setup ## faults, load, hostile input, 10-min soak (~15 min; STREAMREC_SOAK_S shortens); writes docs/reliability.md
	$(BIN)/streamrec stack up
	mkdir -p test-results
	rm -f test-results/reliability.json
	$(BIN)/python -m pytest -p tests.reliability.plugin $(RELIABILITY_TESTS) -v --timeout=3600 \
		--junitxml=test-results/junit-reliability.xml
	$(BIN)/python -m tests.reliability.report

lint: setup ## ruff, mypy and import-linter (the layers of docs/architecture.md)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

stack-up: setup ## start the local Kafka and Redis
	$(BIN)/streamrec stack up

stack-down: ## stop the local Kafka and Redis
	$(BIN)/streamrec stack down

stack-status: ## health of the local Kafka and Redis
	$(BIN)/streamrec stack status

bench: setup ## benchmarks (fold-in, refit, publish, stream, api); prints figures
	$(BIN)/streamrec stack up
	$(BIN)/streamrec bench foldin --json
	$(BIN)/streamrec bench refit --json
	$(BIN)/streamrec bench publish --json
	$(BIN)/streamrec bench stream --json
	$(BIN)/streamrec bench api --json

clean: ## stop the stack and remove its data (keeps the Kafka jar cache)
	-$(BIN)/streamrec stack down
	rm -rf .stack/kafka .stack/redis .stack/batch test-results

.PHONY: help setup demo test test-unit reliability lint stack-up stack-down stack-status bench clean
