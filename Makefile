.PHONY: run test bench fmt
# Run the whole system locally (moto + fake provider + local server on :3000).
run:
	bash infra/local-stack.sh
# Every check and test: fmt, clippy, sam validate, unit + end-to-end tests, SAM-local smoke test.
test:
	bash infra/test.sh
# Benchmarks: sizes, init time, memory, latency, AWS calls, worker figures (target/bench/results.json).
bench:
	bash infra/bench.sh
fmt:
	cargo fmt --all
