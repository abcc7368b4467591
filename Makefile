# Sluice: `make run` (demo gateway) and `make test` (everything).
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
WASM := target/wasm32-wasip1/wasm/sluice_filter.wasm
MOCK := target/release/sluice-mock-provider
WASM_RUNNER := node --no-warnings $(CURDIR)/scripts/wasm-test-runner.mjs

.PHONY: fuzz fuzz-smoke wasm-lite bench-profile deps build wasm mock control-plane replay seed-baseline run test lint unit wasm-unit e2e istio istio-validate oci bench bench-micro clean

deps:
	@scripts/ensure-deps.sh

wasm: deps
	$(CARGO) build --profile wasm --target wasm32-wasip1 -p sluice-filter

## The filter without the tokenizer (~6 MB less memory per VM; token counts
## estimated, max_input_tokens refused) and the bench's no-op filter.
wasm-lite: deps
	$(CARGO) build --profile wasm --target wasm32-wasip1 -p sluice-filter --no-default-features --target-dir target/lite
	cp target/lite/wasm32-wasip1/wasm/sluice_filter.wasm target/wasm32-wasip1/wasm/sluice_filter_lite.wasm
	$(CARGO) build --profile wasm --target wasm32-wasip1 -p sluice-bench-noop

mock:
	$(CARGO) build --release -p sluice-mock-provider

control-plane:
	$(CARGO) build --release -p sluice-control-plane

replay:
	$(CARGO) build --release -p sluice-replay

build: wasm mock control-plane replay

## Control plane + Envoy + Sluice + mock provider on 127.0.0.1:$${SLUICE_PORT:-10000}.
run: build
	$(PYTHON) envoy/launch.py run

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p sluice-filter --target wasm32-wasip1 -- -D warnings
	$(CARGO) clippy -p sluice-core --no-default-features --all-targets -- -D warnings

## The store's tests run on sqlite and, through a throwaway cluster, Postgres;
## then the control plane's whole suite again with Postgres as its store.
unit: deps
	$(PYTHON) scripts/with-postgres.py sh -c '$(CARGO) test --workspace && \
	  CARGO=$(CARGO) $(PYTHON) scripts/cp-tests-on-postgres.py'
	$(CARGO) test -p sluice-core --no-default-features --lib

## The host-independent crates' unit tests, compiled to wasm32-wasip1 and run on V8.
wasm-unit: deps
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(WASM_RUNNER)" \
	  $(CARGO) test --target wasm32-wasip1 -p sluice-config -p sluice-core

e2e: build
	$(PYTHON) -m pytest -q tests/e2e

## Istio/Kubernetes manifests: rendered, schema-checked, the Envoy config their
## EnvoyFilters produce validated and run (no cluster needed).
istio: build
	$(PYTHON) -m pytest -q tests/istio

istio-validate: deps
	$(PYTHON) envoy/istio/tools/validate.py

## The filter as a Wasm OCI image (no Docker daemon): target/oci/.
oci: wasm
	$(PYTHON) scripts/wasm-oci.py

## Every cargo-fuzz target for FUZZ_SECONDS each (nightly and cargo-fuzz are
## installed when missing); executions and results in docs/reliability.md.
FUZZ_SECONDS ?= 60
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

## A short run of each target: part of `make test`.
fuzz-smoke:
	scripts/fuzz.sh 5

test: deps lint unit wasm-unit e2e istio fuzz-smoke

bench: deps build wasm-lite bench-micro
	@scripts/ensure-deps.sh bench
	$(PYTHON) tests/bench/loadbench.py

## Deterministic cost profile: instructions per request (valgrind callgrind)
## for plain Envoy, a no-op wasm filter and Sluice (a few minutes).
bench-profile: deps build wasm-lite
	@scripts/ensure-deps.sh bench
	$(PYTHON) tests/bench/instructions.py

## Rebuild the committed seed baseline by capturing traffic through a managed stack.
seed-baseline: build
	$(PYTHON) replay-baseline/seed/make_seed.py

clean:
	$(CARGO) clean
	rm -rf .run

## Criterion micro-benchmarks of the hot paths (native).
bench-micro:
	$(CARGO) bench -p sluice-core --bench hot_paths -- --warm-up-time 1 --measurement-time 3
