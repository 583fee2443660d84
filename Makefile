# Palisade: the two commands are `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test build build-pgo deps-build deps-test fmt lint check-config clean

## run: build, make a development certificate, start the demo backend and the gateway
run: deps-build
	$(CARGO) build --release --bin palisade --example demo_backend
	scripts/run-demo.sh

## test: every test (unit and integration, through the real binary)
test: deps-test
	$(CARGO) test --locked

build: deps-build
	$(CARGO) build --release --bin palisade

## build-pgo: the build to deploy where CPU matters: a profile-guided release build, trained on
## loopback traffic, then laid out by BOLT from a second training run (bench/pgo.sh; needs what
## `make bench` needs and installs it). Prints the binary's path: target/pgo/bolt/palisade
build-pgo: deps-build
	bench/pgo.sh

deps-build:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## check-config: validate gateway.toml like `nginx -t`
check-config:
	$(CARGO) run --quiet --bin palisade -- check gateway.toml

clean:
	$(CARGO) clean

## bench: Palisade (full policy and passthrough) against nginx on loopback: wrk, h2load, TLS
## handshakes, memory with 10,000 idle connections; prints and writes target/bench/results.md.
## Quick smoke run: make bench BENCH_SECONDS=2 BENCH_ROUNDS=1 BENCH_WARMUP=1 BENCH_IDLE_CONNS=1000
.PHONY: bench
bench: deps-build
	bench/run.sh
